"""Hub dataset ids downloaded from a fake Hub: the same rows as local copies, bounded stalls,
progress, announced cache fallbacks, refused stale caches and one clear line per failure."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import log_records, raw_conditioning
from parla.errors import ParlaError, SourceError, UsageError
from parla.options import PrepareOptions
from parla.store.hub_download import HubDownloads, HubUnreachableError
from test_sources import clip_rows, write_hub_folder

CENTRAL, BALEAR = "xaviviro/cv_23_ca_central", "xaviviro/cv_23_ca_balear"
HANG_BOUND_S = 60.0  # only catches a hang: the measured time is about 4 x PARLA_HUB_TIMEOUT


def publish(hub, tmp_path: Path, repo_id: str, rows: int = 4, seconds: float = 1.5) -> str:
    """``repo_id`` on the fake Hub as a Hub-layout dataset (README + one parquet); its sha."""
    folder = write_hub_folder(tmp_path / "published" / repo_id.split("/")[1],
                              clip_rows(rows, seconds))
    (folder / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# A dialect\n")
    return hub.add_folder(repo_id, folder)


def messages(records) -> list[str]:
    return [record.getMessage() for record in records]


def fetch(repo_id: str = CENTRAL, **kwargs):
    with log_records("parla.sources", logging.INFO) as records:
        snapshot = HubDownloads(**kwargs).fetch(repo_id)
    return snapshot, messages(records)


def prepare_options(datasets: tuple[str, ...], out: Path, **kwargs) -> PrepareOptions:
    return PrepareOptions(datasets=datasets, output_dir=str(out), num_workers=1,
                          min_samples_per_speaker=1, validation_fraction=0.0,
                          conditioning=raw_conditioning(), **kwargs)


def rows_of(folder: Path) -> dict[str, list[dict]]:
    return {str(path.relative_to(folder)): pq.read_table(path).to_pylist()
            for path in sorted((folder / "data").rglob("*.parquet"))}


# --- the same rows as local copies; the card names the revisions -----------------------------

def test_prepare_from_hub_ids_gives_the_rows_of_local_copies(dataset_hub, tmp_path) -> None:
    from parla.stages.prepare import prepare

    dataset_hub.redirect, dataset_hub.page_size = True, 1  # a CDN host; one tree entry a page
    shas = {repo: publish(dataset_hub, tmp_path, repo, rows=4 + i)
            for i, repo in enumerate((CENTRAL, BALEAR))}
    local = tuple(str(tmp_path / "published" / repo.split("/")[1]) for repo in shas)
    prepare(prepare_options(local, tmp_path / "from_folders"))
    prepare(prepare_options(tuple(shas), tmp_path / "from_hub"))
    assert rows_of(tmp_path / "from_hub") == rows_of(tmp_path / "from_folders")
    assert "cdn" in dataset_hub.calls and dataset_hub.calls.count("tree") >= 6
    card = (tmp_path / "from_hub" / "README.md").read_text()
    for repo, sha in shas.items():
        assert f"| `source_revisions.{repo}` | {sha} |" in card
    assert "source_revisions" not in (tmp_path / "from_folders" / "README.md").read_text()

    dataset_hub.calls.clear()  # a second run asks for metadata only
    prepare(prepare_options(tuple(shas), tmp_path / "again"))
    assert set(dataset_hub.calls) <= {"info", "tree"}
    assert rows_of(tmp_path / "again") == rows_of(tmp_path / "from_hub")


# --- a stalled Hub is bounded ----------------------------------------------------------------

@pytest.mark.parametrize("route", ["info", "head", "stall"])
def test_a_hanging_hub_ends_within_the_bound_with_one_line(dataset_hub, tmp_path, monkeypatch,
                                                          route) -> None:
    monkeypatch.setenv("PARLA_HUB_TIMEOUT", "0.5")
    publish(dataset_hub, tmp_path, CENTRAL, rows=40)  # ~250 kB: a transfer that can stall
    dataset_hub.fail["file" if route == "stall" else route] = (
        "stall" if route == "stall" else "hang")
    started = time.monotonic()
    with log_records("parla.sources", logging.INFO) as records, \
            pytest.raises(HubUnreachableError) as raised:
        HubDownloads().fetch(CENTRAL)
    seconds = time.monotonic() - started
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{CENTRAL}: cannot load: the Hub at ")
    assert "did not answer (no reply within 0.5 s, 4 tries)" in message
    assert "PARLA_HUB_TIMEOUT" in message
    retries = [m for m in messages(records) if "trying again" in m]
    assert [m.rsplit("(", 1)[1] for m in retries] == ["1 of 3)", "2 of 3)", "3 of 3)"]
    assert seconds < HANG_BOUND_S


def test_a_hanging_hub_exits_1_naming_the_dataset(dataset_hub, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARLA_HUB_TIMEOUT", "0.5")
    dataset_hub.fail["info"] = "hang"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "parla", "prepare", "--datasets", CENTRAL,
                           "--output_dir", str(tmp_path / "out")], capture_output=True,
                          text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"},
                          timeout=HANG_BOUND_S + 60)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"parla: {CENTRAL}: cannot load: the Hub at {dataset_hub.url} "
                                "did not answer")
    assert sum("trying again" in line for line in lines) == 3
    assert not (tmp_path / "out").exists()
    assert time.monotonic() - started < HANG_BOUND_S + 60


def test_a_retry_that_succeeds_is_one_line(dataset_hub, tmp_path) -> None:
    sha = publish(dataset_hub, tmp_path, CENTRAL)
    dataset_hub.fail["info"] = ["drop"]
    dataset_hub.fail["head"] = [503]
    snapshot, said = fetch()
    assert snapshot.revision == sha and not snapshot.from_cache
    retries = [m for m in said if "trying again" in m]
    assert len(retries) == 2
    assert "the connection broke" in retries[0] and "(GET /api/datasets/" in retries[0]
    assert "the Hub answered HTTP 503 (HEAD /datasets/" in retries[1]


# --- progress --------------------------------------------------------------------------------

def test_a_slow_download_shows_progress(dataset_hub, tmp_path, monkeypatch) -> None:
    from parla.store import hub_download

    monkeypatch.setattr(hub_download, "PROGRESS_EVERY_S", 0.2)
    sha = publish(dataset_hub, tmp_path, CENTRAL, rows=40)
    dataset_hub.chunk_delay = 0.03  # about 50 chunks: 1.5 s
    snapshot, said = fetch()
    assert said[0].startswith(f"{CENTRAL}: downloading revision {sha}: 2 of its 2 files, ")
    middle = [m for m in said[1:-1] if " files, " in m and m.endswith(" downloaded")]
    assert len(middle) >= 2, said
    assert any(m.startswith(f"{CENTRAL}: 1 of 2 files, ") for m in middle)  # README came first
    assert said[-1].startswith(f"{CENTRAL}: downloaded 2 files, ")
    _, again = fetch()
    assert again == [f"{CENTRAL}: revision {sha} is in the cache (2 files, "
                     f"{said[0].split(', ')[-1]}); nothing to download"]


def test_with_bars_on_a_download_draws_a_bar(dataset_hub, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PARLA_DISABLE_PROGRESS", "0")
    publish(dataset_hub, tmp_path, CENTRAL)
    fetch()
    err = capsys.readouterr().err
    assert f"downloading {CENTRAL}" in err and "2/2 files" in err


# --- falling back to the cache ---------------------------------------------------------------

def test_a_fallback_to_the_cache_is_announced(dataset_hub, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARLA_HUB_TIMEOUT", "0.5")
    shas = {repo: publish(dataset_hub, tmp_path, repo) for repo in (CENTRAL, BALEAR)}
    for repo in shas:
        fetch(repo)
    dataset_hub.fail["info"] = "hang"
    dataset_hub.calls.clear()
    downloads = HubDownloads()
    with log_records("parla.sources", logging.WARNING) as records:
        central, balear = downloads.fetch(CENTRAL), downloads.fetch(BALEAR)
    said = [m for m in messages(records) if "trying again" not in m]
    assert said == [
        f"{CENTRAL}: the Hub at {dataset_hub.url} did not answer (no reply within 0.5 s, 4 "
        f"tries); using the cached copy of revision {shas[CENTRAL]} from 2026-11-20",
        f"{BALEAR}: the Hub at {dataset_hub.url} did not answer (no reply within 0.5 s, 4 "
        f"tries for {CENTRAL}); using the cached copy of revision {shas[BALEAR]} from "
        "2026-11-20"]
    assert dataset_hub.calls == ["info"] * 4  # the second dataset did not wait for it again
    assert central.from_cache and central.revision == shas[CENTRAL] and central.folder.is_dir()
    assert balear.from_cache and balear.revision == shas[BALEAR]


def test_an_unreachable_hub_falls_back_to_the_cache(dataset_hub, tmp_path) -> None:
    sha = publish(dataset_hub, tmp_path, CENTRAL)
    fetch()
    dataset_hub.close()  # nothing listens any more
    snapshot, said = fetch()
    assert snapshot.from_cache and snapshot.revision == sha
    assert said == [f"{CENTRAL}: the Hub at {dataset_hub.url} cannot be reached (Connection "
                    f"refused); using the cached copy of revision {sha} from 2026-11-20"]


def test_an_incomplete_cached_snapshot_is_not_used(dataset_hub, tmp_path, monkeypatch) -> None:
    publish(dataset_hub, tmp_path, CENTRAL)
    snapshot, _ = fetch()
    next(snapshot.folder.rglob("*.parquet")).unlink()
    dataset_hub.fail["info"] = 503  # every time
    with pytest.raises(HubUnreachableError, match=r"failed \(HTTP 503, 4 tries\), and no "
                                                  r"cached copy exists; the problem is on"):
        fetch()


def test_a_404_with_a_cache_is_refused_unless_allowed(dataset_hub, tmp_path) -> None:
    sha = publish(dataset_hub, tmp_path, CENTRAL)
    fetch()
    del dataset_hub.repos[CENTRAL]  # deleted, or made private
    with pytest.raises(SourceError) as raised:
        fetch()
    assert str(raised.value) == (
        f"{CENTRAL}: the Hub at {dataset_hub.url} has no dataset {CENTRAL} (HTTP 404); check "
        "the id (owner/name); a private dataset needs a token that can read it (HF_TOKEN or "
        f"`hf auth login`); a cached copy of revision {sha} from 2026-11-20 exists: "
        "--allow_stale_cache uses it")
    snapshot, said = fetch(allow_stale_cache=True)
    assert snapshot.from_cache and snapshot.revision == sha
    assert said == [f"{CENTRAL}: the Hub at {dataset_hub.url} has no dataset {CENTRAL} (HTTP "
                    f"404); using the cached copy of revision {sha} from 2026-11-20, as "
                    "--allow_stale_cache allows"]


def test_allow_stale_cache_is_an_option_a_flag_and_a_config_key(tmp_path) -> None:
    from parla.cli import build_parser, prepare_options_from_args
    from parla.stages.run import build_run_options, load_config, run_option_types

    args = build_parser().parse_args(["prepare", "--datasets", CENTRAL, "--output_dir", "o",
                                      "--allow-stale-cache"])
    assert prepare_options_from_args(args).allow_stale_cache is True
    assert PrepareOptions(datasets=(CENTRAL,), output_dir="o").allow_stale_cache is False
    assert run_option_types()["allow_stale_cache"] == "bool"
    (tmp_path / "run.toml").write_text("output_dir = 'o'\nallow_stale_cache = true\n")
    prepare, _, _ = build_run_options(load_config(tmp_path / "run.toml"))
    assert prepare.allow_stale_cache is True and len(prepare.datasets) == 7


# --- each failure its own line ---------------------------------------------------------------

def test_a_typo_id_gets_a_not_found_line_with_the_close_match(dataset_hub, tmp_path) -> None:
    publish(dataset_hub, tmp_path, CENTRAL)
    with pytest.raises(SourceError) as raised:
        fetch("xaviviro/cv_23_ca_centrl")
    assert str(raised.value) == (
        f"xaviviro/cv_23_ca_centrl: the Hub at {dataset_hub.url} has no dataset "
        f"xaviviro/cv_23_ca_centrl (HTTP 404); did you mean {CENTRAL}?")
    with pytest.raises(SourceError, match=r"\(HTTP 404\); check the id \(owner/name\); a "
                                          r"private dataset needs a token"):
        fetch("somebody/something_else")


@pytest.mark.parametrize(("answer", "kind", "words"), [
    ((200, {"Content-Type": "text/html"}, b"<html>Sign in to the Wi-Fi</html>"), ParlaError,
     "sent a reply parla cannot read (JSONDecodeError: "),
    ((200, {}, b'{"id": "x"}'), ParlaError, "sent a reply parla cannot read (the dataset's "
                                            "info names no commit (sha=None))"),
    ((401, {"X-Error-Message": "Invalid credentials in Authorization header"}, b"{}"),
     UsageError, "refused access to xaviviro/cv_23_ca_central (HTTP 401); it is private or "
                 "gated: set HF_TOKEN"),
    ((403, {"X-Error-Code": "GatedRepo"}, b"{}"), UsageError, "(the dataset is gated: HTTP 403)"),
])
def test_each_failure_says_what_happened(dataset_hub, tmp_path, answer, kind, words) -> None:
    publish(dataset_hub, tmp_path, CENTRAL)
    dataset_hub.fail["info"] = answer
    with pytest.raises(kind) as raised:
        fetch()
    message = str(raised.value)
    assert message.startswith(f"{CENTRAL}: ") and words in message and "\n" not in message
    if kind is ParlaError:
        assert isinstance(raised.value, HubUnreachableError)
        assert "is HF_ENDPOINT a Hugging Face Hub?" in message


def test_a_file_without_the_hub_headers_is_a_malformed_reply(dataset_hub, tmp_path) -> None:
    publish(dataset_hub, tmp_path, CENTRAL)
    dataset_hub.fail["head"] = (200, {"Content-Length": "3"}, b"")  # no X-Repo-Commit, no ETag
    with pytest.raises(HubUnreachableError, match="sent a reply parla cannot read "
                                                  r"\(FileMetadataError: .*X-Repo-Commit"):
        fetch()


def test_a_connection_refused_is_unreachable(tmp_path, monkeypatch, dataset_hub) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(HubUnreachableError, match=rf"^{CENTRAL}: cannot load: the Hub at "
                                                  rf"http://127.0.0.1:{port} cannot be reached "
                                                  r"\(Connection refused\), and no cached copy "
                                                  r"exists; check the network"):
        fetch()
