"""Where a path lives (store/urls.py), the storage options, and how a URL is named in public."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from parla.card.names import public_location
from parla.errors import UsageError
from parla.options import PrepareOptions, parse_storage_options
from parla.store.urls import (
    as_path,
    current_storage_options,
    is_remote,
    map_io,
    require_filesystem,
    scheme,
    use_storage_options,
)


@pytest.mark.parametrize("path, expected", [
    ("s3://bucket/out", "s3"), ("GS://b/x", "gs"), ("abfs://c/x", "abfs"),
    ("memory://x", "memory"), ("file:///tmp/x", "file"), ("/tmp/x", ""), ("out", ""),
    ("central=/data/cv", ""), ("owner/name", ""), ("C:/x", "")])
def test_the_scheme_of_a_path(path, expected):
    assert scheme(path) == expected
    assert is_remote(path) == (expected not in ("", "file"))


def test_a_local_path_stays_a_path_and_a_url_becomes_a_store_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert as_path("~/out") == tmp_path / "out"
    assert as_path(f"file://{tmp_path}/out") == tmp_path / "out"
    assert isinstance(as_path("out"), Path)
    store = as_path("memory://corpus/out/")
    assert str(store) == "memory://corpus/out" and is_remote(store)
    assert str(store / "data" / "central") == "memory://corpus/out/data/central"


def test_storage_options_reach_every_later_store_path():
    use_storage_options({"skip_instance_cache": True})
    assert current_storage_options() == {"skip_instance_cache": True}
    assert as_path("memory://x").storage_options == {"skip_instance_cache": True}
    use_storage_options(None)
    assert current_storage_options() == {}


def test_a_url_whose_filesystem_is_missing_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gcsfs" else real(name, *a))
    with pytest.raises(UsageError, match=r"gs://b/x needs gcsfs: pip install 'parla\[gcs\]'"):
        require_filesystem("gs://b/x")
    with pytest.raises(UsageError, match="not ftp://"):
        require_filesystem("ftp://host/x")
    require_filesystem("/local/x")  # nothing needed


def test_storage_options_are_json_objects_and_bad_ones_do_not_echo_the_value():
    assert parse_storage_options('{"endpoint_url": "http://x"}') == {"endpoint_url": "http://x"}
    assert parse_storage_options({"anon": True}) == {"anon": True}
    assert parse_storage_options(None) is None
    with pytest.raises(UsageError, match="not valid JSON") as error:
        parse_storage_options('{"secret": "hunter2"')
    assert "hunter2" not in str(error.value)
    with pytest.raises(UsageError, match="must be a JSON object"):
        parse_storage_options('["a"]')
    with pytest.raises(UsageError, match="JSON object or a table"):
        parse_storage_options(5)
    options = PrepareOptions(datasets=("x",), output_dir="s3://b/o",
                             storage_options='{"anon": true}')
    assert options.storage_options == {"anon": True}


def test_a_card_names_a_bucket_url_without_its_bucket():
    assert public_location("s3://private-bucket/cv-corpus-23.0/ca") == "cv-corpus-23.0/ca"
    assert public_location("gs://private-bucket/corpus/") == "corpus"
    assert public_location("xaviviro/cv_23_ca_central") == "xaviviro/cv_23_ca_central"
    assert public_location("s3://private-bucket") == "dataset"  # the root names only the bucket
    assert public_location("s3://private-bucket/") == "dataset"


def test_map_io_keeps_the_order_and_runs_calls_at_once_only_on_a_store():
    import threading

    meeting = threading.Barrier(2, timeout=5)  # passes only when two calls are in flight at once
    assert map_io(lambda n: (meeting.wait(), n * 10)[1], [1, 2], concurrent=True) == [10, 20]
    threads = set()
    assert map_io(lambda n: threads.add(threading.get_ident()) or n, range(5),
                  concurrent=False) == list(range(5))
    assert threads == {threading.get_ident()}


def test_map_io_raises_the_first_error_as_the_loop_would():
    def fails_on_two(n: int) -> int:
        if n == 2:
            raise OSError("the store said no")
        return n

    with pytest.raises(OSError, match="said no"):
        map_io(fails_on_two, [1, 2, 3], concurrent=True)


def test_an_error_about_an_endpoint_does_not_echo_its_credentials():
    from parla.store.urls import _without_userinfo

    text = "Invalid endpoint: http://me:s3cret@minio.local:9000/x and https://k@h"
    assert _without_userinfo(text) == "Invalid endpoint: http://***@minio.local:9000/x and https://***@h"
