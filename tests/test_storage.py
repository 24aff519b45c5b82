"""Every stage on an object store: moto's S3 server on this machine (no Docker, no network).

The same corpus is prepared and tokenized once on the local disk and once from and to S3 URLs;
the bytes must be the same. Interrupted runs, concurrent runs, stale locks, missing buckets,
bad credentials and a store that stops answering each end in one clear line, with nothing
half-written, and a rerun that finishes.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import local_files, store_files, upload_folder
from parla import cli
from parla.store.lock import LOCK_FILE, RemoteLock
from parla.store.urls import as_path, use_storage_options

pytestmark = pytest.mark.slow

SELECTION = ["--samples_per_dialect", "4", "--max_samples_per_speaker", "2",
             "--rows_per_shard", "2", "--num_workers", "2"]


def options_flag(s3) -> list[str]:
    return ["--storage_options", json.dumps(s3.storage_options)]


@pytest.fixture
def demo_on_s3(s3, demo_corpus) -> str:
    return upload_folder(s3, demo_corpus, "cv/cv_ca_demo")


def test_prepare_and_tokenize_on_s3_write_the_bytes_of_a_local_run(
        s3, demo_on_s3, tmp_path, snac_dir, text_tokenizer_file, one_torch_thread, monkeypatch):
    """The same source (a shard's record names its source, so both runs read the bucket's), one
    run writing to this disk and one to the bucket: the same bytes, file for file."""
    models = ["--snac_model", str(snac_dir), "--text_tokenizer", str(text_tokenizer_file),
              "--device", "cpu", "--no_dedupe_frames", "--pack_length", "256",
              "--configs", "central", "valencia"]  # two configs: SNAC on a CPU is slow
    local = tmp_path / "local"
    assert cli.main(["prepare", "--datasets", demo_on_s3, "--output_dir",
                     str(local / "prepared"), *SELECTION, *options_flag(s3)]) == 0
    assert cli.main(["tokenize", "--input_dir", str(local / "prepared"), "--output_dir",
                     str(local / "tokenized"), *models]) == 0

    assert cli.main(["prepare", "--datasets", demo_on_s3, "--output_dir",
                     f"{s3.url}/prepared", *SELECTION, *options_flag(s3)]) == 0
    assert cli.main(["tokenize", "--input_dir", f"{s3.url}/prepared", "--output_dir",
                     f"{s3.url}/tokenized", *models, *options_flag(s3)]) == 0

    for stage in ("prepared", "tokenized"):
        expected = local_files(local / stage)
        assert any(name.endswith(".parquet") for name in expected)
        assert store_files(s3, stage) == expected, stage
    assert not any(key.endswith(LOCK_FILE) for key in s3.keys())  # released

    import datasets

    # datasets' offline switch refuses every URL, s3:// too; the builder is packaged and the
    # files are on moto, so nothing reaches the Hub
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    from_s3 = datasets.load_dataset("parquet", data_files=f"{s3.url}/tokenized/data/central/*",
                                    storage_options=s3.storage_options,
                                    cache_dir=str(tmp_path / "cache-s3"), split="train")
    from_disk = datasets.load_dataset(
        "parquet", data_files=str(local / "tokenized" / "data" / "central" / "*"),
        cache_dir=str(tmp_path / "cache-local"), split="train")
    assert from_s3.to_list() == from_disk.to_list()
    assert len(from_s3) > 0


def test_a_second_run_into_the_same_url_is_refused_and_a_stale_lock_taken_over(
        s3, demo_on_s3, capsys):
    use_storage_options(s3.storage_options)
    out = f"{s3.url}/out"
    live = RemoteLock(as_path(out), lease_seconds=600)
    assert live.create()  # another run, alive
    command = ["prepare", "--datasets", demo_on_s3, "--output_dir", out, *SELECTION,
               *options_flag(s3)]
    assert cli.main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "in use by another parla run" in error[0]
    assert not [k for k in s3.keys("out/") if not k.endswith(LOCK_FILE)]  # nothing written

    stale = RemoteLock(as_path(out), lease_seconds=0.1)
    live.release()
    assert stale.create()  # a run that crashed: its lease runs out
    time.sleep(0.2)
    assert cli.main(command) == 0
    assert [k for k in s3.keys("out/data/") if k.endswith(".parquet")]


def test_publish_from_s3_uploads_the_folder_to_the_hub(s3, demo_on_s3, fake_hub):
    out = f"{s3.url}/prepared"
    assert cli.main(["prepare", "--datasets", demo_on_s3, "--output_dir", out, *SELECTION,
                     *options_flag(s3)]) == 0
    assert cli.main(["publish", out, "--repo_id", "tester/demo", *options_flag(s3)]) == 0
    uploaded = fake_hub.repos["tester/demo"]
    on_store = store_files(s3, "prepared")
    shards = [name for name in on_store if name.endswith(".parquet")]
    assert shards and all(uploaded[name] == on_store[name] for name in shards)
    assert "README.md" in uploaded and "s3://" not in uploaded["README.md"].decode()


def _expired_lock(s3, key: str) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=json.dumps(
        {"owner": "pid 1 on gone", "token": "dead", "expires": time.time() - 1}).encode())


def test_of_two_runs_taking_over_one_expired_lock_on_s3_only_one_wins(s3):
    """Both read the crashed run's lock, then both replace it: If-Match on the version read
    lets the first through and refuses the second (a delete-then-create let both win)."""
    folder = as_path(f"{s3.url}/out")
    _expired_lock(s3, f"out/{LOCK_FILE}")
    first, second = RemoteLock(folder, 120), RemoteLock(folder, 120)
    (_, seen_by_first), (_, seen_by_second) = first.read(), second.read()
    assert seen_by_first == seen_by_second is not None
    assert first.replace(seen_by_first) is True
    assert second.replace(seen_by_second) is False
    assert json.loads(s3.read(f"out/{LOCK_FILE}"))["token"] == first.token
    assert first.honours_create()  # moto keeps If-None-Match: a second create is refused


def test_a_renewal_after_a_takeover_does_not_overwrite_the_new_holder(s3):
    folder = as_path(f"{s3.url}/out")
    old, new = RemoteLock(folder, 120), RemoteLock(folder, 120)
    assert old.create()
    assert new.replace(new.read()[1])  # --break_lock
    assert old.renew() is False
    assert json.loads(s3.read(f"out/{LOCK_FILE}"))["token"] == new.token
    old.release()  # not its lock any more: left alone
    assert json.loads(s3.read(f"out/{LOCK_FILE}"))["token"] == new.token
    assert new.renew() is True
    new.release()
    assert f"out/{LOCK_FILE}" not in s3.keys("out/")
