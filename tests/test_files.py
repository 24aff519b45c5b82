"""The one atomic writer, the stale-temp cleanup, and the output-folder lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from parla.errors import UsageError
from parla.store.files import (
    LOCK_FILE,
    atomic_path,
    lock_folder,
    remove_stale_tmp,
    write_json,
    write_text_atomic,
)


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


HOLD = """
import sys, time
from parla.store.files import lock_folder
with lock_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "out")
    try:
        with pytest.raises(UsageError, match=f"in use by another parla run \\(pid {holder.pid} "):
            with lock_folder(tmp_path / "out"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "out")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "out" / LOCK_FILE).exists()  # the file stays; the lock went with it
    with lock_folder(tmp_path / "out"):
        assert f"pid {os.getpid()}" in (tmp_path / "out" / LOCK_FILE).read_text()
    with lock_folder(tmp_path / "out"):
        pass
