"""Dataset card (parses, matches the data, every config loads); publishing to a fake Hub."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from huggingface_hub import DatasetCard

from parla import cli, endpoint
from parla.card import folder as card_folder
from parla.card import render as card_render
from parla.hub import client as hub
from parla.hub import transport
from parla.hub.client import HubAccessError, HubError
from parla.options import PublishOptions
from parla.store.shards import find_shards, shard_path, write_table_atomic

REPO = "tester/cv_ca"
FAKE_TOKEN = "hf_fakeTokenForParlaTests0123456789"  # what the fake_hub fixture sets as HF_TOKEN


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under a folder with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def card_table(text: str) -> dict[tuple[str, str], list[str]]:
    """(config, split) -> [rows, speakers, hours, mean duration] cells of the card's table."""
    cells = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) == 7 and parts[3].isdigit():
            cells[(parts[0], parts[2])] = parts[3:]
    return cells


def load(folder: Path, config: str, cache: Path) -> datasets.DatasetDict:
    # a fresh cache_dir per call: datasets caches a local folder by its name
    loaded = datasets.load_dataset(str(folder), config, cache_dir=str(cache))
    return loaded.cast_column("audio", datasets.Audio(decode=False))  # no torchcodec needed


# --- the card --------------------------------------------------------------------------------

def test_card_metadata_parses_and_names_every_config_and_split(prepared_folder):
    folder = prepared_folder({"central": 2, "balear": 1, "valencia": 1})
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc0-1.0"
    assert data["language"] == ["ca"]
    assert data["task_categories"] == ["text-to-speech"]
    assert data["size_categories"] == ["n<1K"]
    assert data["pretty_name"]
    configs = {c["config_name"]: c for c in data["configs"]}
    shards = find_shards(folder)
    assert set(configs) == set(shards) | {"all"} == {"all", "central", "balear", "valencia"}
    for name, config in configs.items():
        if name != "all":
            assert {f["split"]: f["path"] for f in config["data_files"]} == {
                split: f"data/{name}/{split}-*" for split in shards[name]}
    # `all` stores nothing itself: it lists the dialects' files, each clip stored once
    assert {f["split"]: f["path"] for f in configs["all"]["data_files"]} == {
        "train": ["data/balear/train-*", "data/central/train-*", "data/valencia/train-*"],
        "validation": ["data/central/validation-*"]}
    assert configs["all"].get("default") is True
    assert not any(c.get("default") for name, c in configs.items() if name != "all")
    assert [f["split"] for f in configs["all"]["data_files"]] == ["train", "validation"]


def test_every_config_loads_and_the_card_numbers_match_the_data(prepared_folder, tmp_path):
    folder = prepared_folder({"central": 3, "balear": 2}, clips_per_speaker=3)
    table = card_table((folder / "README.md").read_text(encoding="utf-8"))
    assert set(table) == {("all", "train"), ("all", "validation"), ("central", "train"),
                          ("central", "validation"), ("balear", "train")}
    for config in ("all", "central", "balear"):
        loaded = load(folder, config, tmp_path / f"cache-{config}")
        for split, rows in loaded.items():
            count, speakers, hours, mean = table[(config, split)]
            durations = np.array(rows["duration"], dtype=np.float64)
            assert int(count) == len(rows) > 0
            assert int(speakers) == len(set(rows["speaker_id"]))
            assert float(hours) == pytest.approx(durations.sum() / 3600, abs=0.0005)
            assert float(mean) == pytest.approx(durations.mean(), abs=0.005)
            first = rows[0]["audio"]
            samples, rate = sf.read(io.BytesIO(first["bytes"]))
            assert rate == 24000 and samples.size / rate == pytest.approx(rows[0]["duration"])
    default = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache-default"))
    assert set(default) == {"train", "validation"}  # `all` is the default config


def test_card_is_regenerated_from_the_shards_and_keeps_its_parameters(prepared_folder):
    folder = prepared_folder({"central": 2, "balear": 1})
    parameters = {"seed": 7, "datasets": ["a/b", "c--d -->"], "conditioning": {"vad": "energy"},
                  "note": "«col·legi» | pipes"}
    card_folder.write_dataset_card(folder, kind="prepared", parameters=parameters)
    # the folder changes: central loses its shard rows but one
    central = shard_path(folder, "central", "train", 0, 1)
    write_table_atomic(central, pq.read_table(central).slice(0, 1))
    assert card_folder.refresh_dataset_card(folder, REPO) == folder / "README.md"
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert card_table(text)[("central", "train")][:2] == ["1", "1"]
    assert card_render.read_card_state(text) == ("prepared", parameters)
    assert f'load_dataset("{REPO}", "central")' in text
    assert "| `conditioning.vad` | energy |" in text
    comment = text.strip().splitlines()[-1]
    assert comment.startswith("<!-- parla-card {") and comment.count("-->") == 1
    DatasetCard(text)  # still parses


def test_card_rendering_is_deterministic(prepared_folder):
    folder = prepared_folder()
    first = (folder / "README.md").read_bytes()
    card_folder.write_dataset_card(folder, kind="prepared",
                           parameters={"target_sample_rate": 24000, "seed": 42})
    assert (folder / "README.md").read_bytes() == first
    configs, stats = card_folder.folder_statistics(folder)
    once = card_render.render_card(configs, stats, {"seed": 1}, "prepared")
    assert once == card_render.render_card(configs, stats, {"seed": 1}, "prepared")


def test_tokenized_card_names_codec_tokenizer_and_layout(tmp_path):
    folder = tmp_path / "tokenized"
    table = pa.table({"input_ids": [[1, 2, 3], [4, 5]], "text": ["central: a", "central: b"],
                      "dialect": ["central", "central"]})
    write_table_atomic(shard_path(folder, "central", "train", 0, 1), table)
    write_table_atomic(shard_path(folder, "all", "train", 0, 1), table)
    card_folder.write_dataset_card(folder, kind="tokenized", parameters={
        "snac_model": "hubertsiuzdak/snac_24khz", "text_tokenizer": "some/tokenizer",
        "format": "orpheus"})
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "`hubertsiuzdak/snac_24khz`" in text and "`some/tokenizer`" in text
    assert "start-of-speech" in text
    assert card_table(text)[("central", "train")] == ["2", "—", "—", "—"]
    assert "orpheus" in DatasetCard(text).data.to_dict()["tags"]


def test_refresh_leaves_a_card_parla_did_not_write(prepared_folder):
    folder = prepared_folder()
    (folder / "README.md").write_text("# my own card\n", encoding="utf-8")
    assert card_folder.refresh_dataset_card(folder, REPO) is None
    assert (folder / "README.md").read_text(encoding="utf-8") == "# my own card\n"
    (folder / "README.md").unlink()
    # a missing card is written, kind from the columns
    card_folder.refresh_dataset_card(folder, REPO)
    assert card_render.read_card_state((folder / "README.md").read_text()) == ("prepared", {})


def test_card_of_a_folder_without_shards_is_a_usage_error(tmp_path):
    with pytest.raises(hub.UsageError, match="no shards"):
        card_folder.write_dataset_card(tmp_path, kind="prepared", parameters={})
    with pytest.raises(hub.UsageError, match="unknown card kind"):
        card_render.render_card({}, [], {}, "audio")


@pytest.mark.parametrize(("rows", "category"), [
    (0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (54_321, "10K<n<100K"),
    (100_000, "100K<n<1M"), (2_000_000, "1M<n<10M")])
def test_size_category(rows, category):
    assert card_render.size_category(rows) == category


# --- publishing ------------------------------------------------------------------------------

def test_publish_uploads_the_folder_and_the_hub_copy_loads(fake_hub, prepared_folder, tmp_path):
    folder = prepared_folder({"central": 2, "balear": 1})
    stale = folder / "data" / "central" / ".train-00000-of-00001.parquet.99.tmp"
    stale.write_bytes(b"half a shard")
    url = hub.upload_folder(PublishOptions(folder=str(folder), repo_id=REPO))
    assert url == f"{fake_hub.url}/datasets/{REPO}"
    uploaded = fake_hub.repos[REPO]
    local = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
             if p.is_file() and p != stale}
    assert uploaded == local  # everything but the half-written shard, byte for byte
    assert f'load_dataset("{REPO}", "central")' in uploaded["README.md"].decode()
    assert set(fake_hub.authorization_headers) == {f"Bearer {FAKE_TOKEN}"}
    assert not any(FAKE_TOKEN.encode() in data for data in uploaded.values())
    copy = tmp_path / "from-hub"
    for name, data in uploaded.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    for config in ("all", "central", "balear"):
        assert load(copy, config, tmp_path / f"c-{config}")["train"].num_rows > 0


def test_no_uploaded_file_names_a_path_of_this_machine(fake_hub, tmp_path):
    """Prepared from absolute paths (a release, a NAME=folder): the card names the sources by
    their names, and no file publish sends holds a path of the machine; the report still finds
    the release's clips."""
    from conftest import RAW_CONDITIONING_FLAGS, write_cv_release
    from parla.report import __main__ as report_main

    root = (tmp_path / "machine-specific-root").absolute()
    release = write_cv_release(root / "cv-corpus-23.0" / "ca", {"ana": ("Central", 3),
                                                                "eva": ("Balear", 3)})
    out = root / "out"
    assert cli.main(["prepare", "--datasets", str(release), "--output_dir", str(out), "-q",
                     "--num_workers", "1", "--min_samples_per_speaker", "1",
                     *RAW_CONDITIONING_FLAGS]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| `datasets` | cv-corpus-23.0/ca |" in card
    assert report_main._local_sources(out) == [str(release)]  # kept locally, not in the card
    assert cli.main(["publish", str(out), "--repo_id", REPO, "-q"]) == 0
    uploaded = fake_hub.repos[REPO]
    assert "README.md" in uploaded and not any(name.startswith(".") for name in uploaded)
    for needle in (str(root), str(tmp_path), os.path.expanduser("~")):
        leaking = [name for name, data in uploaded.items() if needle.encode() in data]
        assert leaking == [], f"{needle} in {leaking}"


@pytest.mark.parametrize(("given", "shown"), [
    ("xaviviro/cv_23_ca_central", "xaviviro/cv_23_ca_central"),  # a Hub id: as it is
    ("central={folder}", "central=my_central"),
    ("{folder}", "my_central"),
    ("{cache}", "xaviviro/cv_23_ca_central"),  # a Hub cache snapshot: its Hub id
])
def test_a_local_source_is_named_by_its_own_name(tmp_path, given, shown):
    from parla.card.names import public_source

    folder = tmp_path / "data" / "my_central"
    folder.mkdir(parents=True)
    cache = tmp_path / "hub" / "datasets--xaviviro--cv_23_ca_central" / "snapshots" / "abc123"
    cache.mkdir(parents=True)
    assert public_source(given.format(folder=folder, cache=cache)) == shown


def test_a_large_upload_shows_the_bytes_sent(fake_hub, prepared_folder, capsys, monkeypatch):
    monkeypatch.delenv("PARLA_DISABLE_PROGRESS")
    folder = prepared_folder()
    (folder / "noise.bin").write_bytes(os.urandom(6 << 20))
    assert cli.main(["publish", str(folder), "--repo_id", REPO]) == 0
    err = capsys.readouterr().err
    assert re.search(r"uploading .* \(\d+ files, 6\.\d MB; files already on the Hub are "
                     r"skipped\)", err), err
    assert re.search(r"sending to the Hub \(committing the upload\): +\d+%.* [\d.]+k?B of "
                     r"8\.\d+MB", err), err


def test_publish_to_a_branch_creates_it_first(fake_hub, prepared_folder):
    folder = prepared_folder()
    assert cli.main(["publish", str(folder), "--repo_id", REPO, "--revision", "v2",
                     "--commit_message", "second version"]) == 0
    assert fake_hub.calls.index("create_branch") < fake_hub.calls.index("commit")
    assert f"/api/datasets/{REPO}/commit/v2" in fake_hub.paths
    assert set(fake_hub.repos[REPO]) == set(snapshot(folder))


def test_publish_creates_missing_repo_in_an_organisation(fake_hub, prepared_folder):
    fake_hub.orgs = ("catalan-org",)
    hub.upload_folder(PublishOptions(folder=str(prepared_folder()), repo_id="catalan-org/cv"))
    assert "README.md" in fake_hub.repos["catalan-org/cv"]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed on return: connecting to it is refused


def _publish_error(folder: Path, repo_id: str = REPO) -> BaseException:
    with pytest.raises((HubAccessError, HubError)) as caught:
        hub.upload_folder(PublishOptions(folder=str(folder), repo_id=repo_id))
    message = str(caught.value)
    assert FAKE_TOKEN not in message and "\n" not in message
    return caught.value


@pytest.mark.parametrize(("setup", "error", "message"), [
    ("no_token", HubAccessError, r"not logged in .* set HF_TOKEN or run `hf auth login`"),
    ("bad_token", HubAccessError, r"rejected the Hugging Face token \(HTTP 401\)"),
    ("read_token", HubAccessError, r"token of tester is read-only"),
    ("forbidden", HubAccessError, r"refused write access to dataset tester/cv_ca \(HTTP 403\)"),
    ("other_namespace", HubAccessError, r"cannot create datasets under 'someone-else'"),
    ("server_error", HubError, r"server error \(HTTP 503\) while checking the login"),
    ("refused", HubError, r"no answer from the Hub at http://127\.0\.0\.1:\d+ while checking"),
])
def test_access_is_checked_before_anything_is_uploaded(fake_hub, prepared_folder, monkeypatch,
                                                        setup, error, message):
    from huggingface_hub import constants

    folder = prepared_folder()
    repo_id = REPO
    if setup == "no_token":
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(folder.parent / "no-token-here"))
    elif setup == "bad_token":
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    elif setup == "read_token":
        fake_hub.role = "read"
    elif setup == "forbidden":
        fake_hub.repos[REPO] = {}
        fake_hub.fail["auth_check"] = 403
    elif setup == "other_namespace":
        repo_id = "someone-else/cv_ca"
    elif setup == "server_error":
        fake_hub.fail["whoami"] = 503
    elif setup == "refused":
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{unused_port()}")
    before = snapshot(folder)
    caught = _publish_error(folder, repo_id)
    assert type(caught) is error
    assert re.search(message, str(caught)), str(caught)
    assert snapshot(folder) == before
    assert not any(fake_hub.repos.values())
    assert "commit" not in fake_hub.calls and "create_repo" not in fake_hub.calls


@pytest.mark.parametrize(("route", "status", "message"), [
    ("create_repo", 500, r"server error \(HTTP 500\) while creating the repo tester/cv_ca, "
                         r"retried 5 times over 31 s;"),
    ("commit", 502, r"server error \(HTTP 502\) while uploading"),
    ("commit", "drop", r"the connection to the Hub at .* dropped \(.*\) while uploading .*; not "
                       r"sent again, as the Hub may have acted on it"),
    ("preupload", 403, r"refused write access .* \(HTTP 403\) while uploading"),
])
def test_failed_upload_keeps_the_folder_and_publishing_again_finishes_it(
        fake_hub, prepared_folder, route, status, message):
    folder = prepared_folder()
    card_folder.write_dataset_card(folder, kind="prepared", parameters={"seed": 42}, repo_id=REPO)
    before = snapshot(folder)
    fake_hub.fail[route] = status
    caught = _publish_error(folder)
    assert re.search(message, str(caught)), str(caught)
    assert f"run `parla publish {folder} --repo_id {REPO}` again to finish" in str(caught)
    assert snapshot(folder) == before
    del fake_hub.fail[route]
    hub.upload_folder(PublishOptions(folder=str(folder), repo_id=REPO))
    assert {name: hashlib.sha256(data).hexdigest()
            for name, data in fake_hub.repos[REPO].items()} == before
    assert snapshot(folder) == before


def test_publishing_a_folder_without_shards_is_a_usage_error(fake_hub, tmp_path):
    with pytest.raises(hub.UsageError, match="nothing to publish"):
        hub.upload_folder(PublishOptions(folder=str(tmp_path), repo_id=REPO))
    with pytest.raises(hub.UsageError, match="is not a folder"):
        hub.upload_folder(PublishOptions(folder=str(tmp_path / "missing"), repo_id=REPO))
    assert fake_hub.calls == []


def test_offline_mode_is_reported_before_any_request(prepared_folder, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubAccessError, match="HF_HUB_OFFLINE is set"):
        hub.check_write_access(REPO)


# --- command line ----------------------------------------------------------------------------

def test_cli_publish_reports_one_line_and_keeps_the_folder(fake_hub, prepared_folder, capsys):
    folder = prepared_folder()
    before = snapshot(folder)
    fake_hub.fail["whoami"] = 401
    assert cli.main(["publish", str(folder), "--repo_id", REPO]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("parla: error: the Hub rejected the Hugging Face token (HTTP 401)")
    assert len(err.splitlines()) == 1 and FAKE_TOKEN not in err
    assert snapshot(folder) == before


def test_cli_publish_interrupted(fake_hub, prepared_folder, capsys, monkeypatch):
    folder = prepared_folder()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, "_upload", interrupt)
    assert cli.main(["publish", str(folder), "--repo-id", REPO]) == 130
    assert f"run `parla publish {folder} --repo_id {REPO}` again" in capsys.readouterr().err


def test_cli_publish_in_a_subprocess_reads_the_endpoint_and_token_from_the_environment(
        fake_hub, prepared_folder):
    folder = prepared_folder()
    done = subprocess.run([sys.executable, "-m", "parla", "publish", str(folder), "--repo_id",
                           REPO, "--private", "--commit_message", "first upload"],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{fake_hub.url}/datasets/{REPO}"
    assert FAKE_TOKEN not in done.stdout + done.stderr
    assert set(fake_hub.repos[REPO]) == set(snapshot(folder))


# --- timeouts, retries, reachability ---------------------------------------------------------

def test_hub_unreachable_is_one_quick_connection(fake_hub, monkeypatch):
    assert endpoint.hub_unreachable() is None  # the fake Hub listens
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{unused_port()}")
    assert endpoint.hub_unreachable() == "Connection refused"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert endpoint.hub_unreachable() is None  # behind a proxy only the proxy can tell


@pytest.mark.parametrize(("status", "headers", "retries", "wait"), [
    (429, {"Retry-After": "30"}, 0, 30.0), (429, {"Retry-After": "9999"}, 0, 9999.0),
    (503, {}, 0, 1.0), (503, {}, 2, 4.0), (503, {}, 9, transport.MAX_WAIT_S),
    (502, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1, 2.0), (None, None, 3, 8.0),
])
def test_retry_waits(status, headers, retries, wait):
    assert transport.retry_wait(status, headers, retries) == wait


class _Inner:
    """A transport answering each request with the next outcome (a status, or an error to
    raise); the last outcome repeats."""

    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), 0

    def handle_request(self, request):
        self.calls += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return self.httpx.Response(outcome, request=request)


def _send(httpx, method, path, *outcomes):
    request = httpx.Request(method, f"http://hub.test{path}", content=b"{}", extensions={
        "timeout": {"connect": 3.0, "read": 5.0, "write": 5.0, "pool": 5.0}})
    inner = _Inner(*outcomes)
    inner.httpx = httpx
    try:
        return transport.send(inner, request, httpx), inner.calls
    except (transport.HubStalled, transport.HubGaveUp) as error:
        return error, inner.calls


@pytest.mark.parametrize(("error", "says"), [
    ("ConnectTimeout", "took no connection (none within 3 s)"),
    ("WriteTimeout", "stopped reading what parla sent (nothing taken for 5 s"),
    ("ReadTimeout", "stopped answering (no reply within 5 s"),
    ("PoolTimeout", "left no connection free (none within 5 s"),
])
def test_every_stall_ends_at_once_and_is_not_sent_again(error, says, monkeypatch):
    httpx = pytest.importorskip("httpx2")
    monkeypatch.setattr(transport, "_sleep", lambda seconds: pytest.fail("retried a stall"))
    transport.reset_retries()
    for method, path in (("GET", "/api/whoami-v2"), ("POST", "/api/datasets/a/b/commit/main")):
        stalled, calls = _send(httpx, method, path, getattr(httpx, error)("stalled"))
        assert isinstance(stalled, transport.HubStalled) and calls == 1
        assert says in str(stalled)


def test_a_commit_the_hub_may_have_taken_is_not_sent_again(monkeypatch):
    httpx = pytest.importorskip("httpx2")
    waits = []
    monkeypatch.setattr(transport, "_sleep", waits.append)
    transport.reset_retries()
    commit, preupload = "/api/datasets/a/b/commit/main", "/api/datasets/a/b/preupload/main"
    dropped = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    for outcome in (502, 500, 504, dropped):
        failed, calls = _send(httpx, "POST", commit, outcome, 200)
        assert calls == 1 and "not sent again, as the Hub may have acted on it" in str(failed)
    assert waits == []
    # what says the request was not taken (or never left) is sent again; so is a question
    for path, outcome in ((commit, 503), (commit, 429), (commit, httpx.ConnectError("refused")),
                          (preupload, 502), (preupload, dropped)):
        response, calls = _send(httpx, "POST", path, outcome, 200)
        assert response.status_code == 200 and calls == 2
    assert waits == [1.0] * 5


def test_a_bad_timeout_setting_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("PARLA_HUB_TIMEOUT", "soon")
    with pytest.raises(hub.UsageError, match="PARLA_HUB_TIMEOUT='soon' is not a number"):
        endpoint.read_timeout()
    monkeypatch.setenv("PARLA_HUB_RETRY_S", "a while")
    with pytest.raises(hub.UsageError, match="PARLA_HUB_RETRY_S='a while' is not a number"):
        transport.reset_retries()


def test_the_card_reads_each_shard_once_and_all_sums_its_groups(prepared_folder, monkeypatch):
    folder = prepared_folder({"central": 3, "balear": 2})
    opened = []
    real = card_folder.parquet_file
    monkeypatch.setattr(card_folder, "parquet_file", lambda path: opened.append(path) or real(path))
    configs, stats = card_folder.folder_statistics(folder)
    assert sorted(map(str, opened)) == sorted(map(str, set(opened)))  # none read twice
    assert len(opened) == sum(1 for _ in (folder / "data").rglob("*.parquet"))
    by_split = {(s.config, s.split): s for s in stats}
    groups = [s for s in stats if s.config != "all" and s.split == "train"]
    every = by_split[("all", "train")]
    assert every.rows == sum(s.rows for s in groups) > 0
    assert every.seconds == pytest.approx(sum(s.seconds for s in groups))
