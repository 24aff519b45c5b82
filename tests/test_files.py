"""The one atomic writer (on a disk and on a store), folder removal, and the stale-temp cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest

from parla.store.files import (
    atomic_path,
    remove_stale_tmp,
    remove_tree,
    write_json,
    write_text_atomic,
)
from parla.store.urls import as_path


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_json(target, {"rows": 1})
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "disk full")
    assert target.read_text() == '{\n  "rows": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_remove_stale_tmp_finds_temporaries_anywhere(tmp_path: Path) -> None:
    (tmp_path / "data" / "central").mkdir(parents=True)
    (tmp_path / "data" / "central" / ".train-00000-of-00001.parquet.123.tmp").write_text("x")
    (tmp_path / ".README.md.9.tmp").write_text("x")
    write_text_atomic(tmp_path / "README.md", "card")
    assert remove_stale_tmp(tmp_path) == 2
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["README.md"]


def test_a_write_to_a_store_appears_whole_or_not_at_all(memory_store) -> None:
    target = as_path(f"{memory_store}/out/report.json")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "disk full")
    assert not target.exists()
    write_json(target, {"rows": 1})
    assert target.read_text() == '{\n  "rows": 1\n}\n'
    assert remove_stale_tmp(target.parent) == 0  # a store has no temporaries to clean up


def test_remove_tree_removes_a_folder_on_a_disk_and_on_a_store(tmp_path: Path,
                                                               memory_store) -> None:
    for root in (tmp_path, as_path(memory_store)):
        write_text_atomic(root / "data" / "central" / "a.parquet", "x")
        remove_tree(root / "data")
        assert not (root / "data").exists()
        remove_tree(root / "data")  # absent is fine
