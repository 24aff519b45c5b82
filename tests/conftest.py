"""Factories for the data tests make themselves, and fixtures that keep tests hermetic."""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import http.server
import io
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path_factory):
    """No Hub, no implicit token, caches in tmp, no progress bars."""
    cache = tmp_path_factory.mktemp("hf-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("PARLA_DISABLE_PROGRESS", "1")
    # both libraries read the offline switch once, at import (which may precede this fixture)
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    from parla.store.urls import use_storage_options

    use_storage_options(None)  # no test inherits another's object-store options


# --- object stores ---------------------------------------------------------------------------

@pytest.fixture
def memory_store() -> Iterator[str]:
    """A fresh fsspec memory:// root (one process only), emptied afterwards."""
    import uuid

    import fsspec

    root = f"memory://parla-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root.removeprefix("memory://")):
        fs.rm(root.removeprefix("memory://"), recursive=True)


@dataclass
class S3Server:
    """moto's S3 server on a free port of this machine: a real S3 endpoint, no network."""

    endpoint: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint}

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                        Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(_moto_server, monkeypatch) -> Iterator[S3Server]:
    """A fresh bucket on moto's S3 server; dummy credentials, so no real account is reached, and
    the endpoint in AWS_ENDPOINT_URL for what reads the environment (Ray workers, datasets)."""
    import uuid

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", _moto_server)
    server = S3Server(_moto_server, f"parla-{uuid.uuid4().hex[:10]}")
    server.client().create_bucket(Bucket=server.bucket)
    from parla.store.urls import use_storage_options

    yield server
    use_storage_options(None)


def upload_folder(s3: S3Server, folder: Path, prefix: str) -> str:
    """A local folder copied to ``s3://<bucket>/<prefix>`` (a test's input on the store)."""
    client = s3.client()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=s3.bucket, Key=f"{prefix}/{path.relative_to(folder)}",
                              Body=path.read_bytes())
    return f"{s3.url}/{prefix}"


def local_files(folder: Path) -> dict[str, bytes]:
    """Every file of a folder but the hidden ones (the lock), by relative name."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def store_files(s3: S3Server, prefix: str) -> dict[str, bytes]:
    """`local_files` of a folder on the store."""
    return {key.removeprefix(prefix + "/"): s3.read(key) for key in s3.keys(prefix + "/")
            if not key.rsplit("/", 1)[-1].startswith(".")}


class StallingProxy:
    """A TCP forwarder to ``port`` on 127.0.0.1 that stops forwarding, both ways, once
    ``stall()`` is called: a store that stops answering mid-upload, connections left open."""

    def __init__(self, port: int) -> None:
        import threading

        self.target, self.stalled = port, threading.Event()
        self.connections: list[socket.socket] = []  # held open while stalled
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall(self) -> None:
        self.stalled.set()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.stalled.is_set():
                    self.stalled.wait()
                    return  # hold the connection open, forward nothing more
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


# --- system tools ----------------------------------------------------------------------------
# espeak-ng (real speech), libFLAC and libmpg123 (prepare's ctypes fast paths), Chromium
# (rendering report.html) and a C++ compiler (torch.compile on CPU) come from the system, not
# from pip. Their tests skip without them, except where PARLA_REQUIRE_SYSTEM_TOOLS=1 (set by
# .ci/run, which installs them): there a missing tool fails the test instead, so CI cannot
# pass by silently skipping.

REQUIRE_SYSTEM_TOOLS = os.environ.get("PARLA_REQUIRE_SYSTEM_TOOLS", "") not in ("", "0")


# torch.compile's CPU backend (inductor) builds its kernels with the system's C++ compiler
HAVE_CXX = any(shutil.which(name) for name in ("g++", "c++"))
NEEDS_CXX = pytest.mark.needs_system_tool(HAVE_CXX, reason="no C++ compiler (g++) for "
                                          "torch.compile")


def missing_system_tool(reason: str) -> None:
    """Skip the running test for want of a system tool, or fail it under
    PARLA_REQUIRE_SYSTEM_TOOLS=1."""
    if REQUIRE_SYSTEM_TOOLS:
        pytest.fail(f"{reason} (PARLA_REQUIRE_SYSTEM_TOOLS=1: required, not skipped)",
                    pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.needs_system_tool(available, reason=...)``: see `missing_system_tool`."""
    for mark in item.iter_markers("needs_system_tool"):
        if not mark.args[0]:
            missing_system_tool(mark.kwargs["reason"])


@pytest.fixture(autouse=True)
def _fresh_parla_logging() -> Iterator[None]:
    """A command's -q or -v (cli.main -> configure_logging) must not outlive its test."""
    import logging

    from parla import progress

    logger = logging.getLogger("parla")
    level, bars = logger.level, progress._bars_disabled
    yield
    logger.setLevel(level)  # setLevel, not the attribute: it also clears the logger's cache
    progress._bars_disabled = bars


@contextlib.contextmanager
def log_records(name: str, level: int) -> Iterator[list]:
    """The records a parla logger emits at ``level`` and above while the block runs, caught by
    a handler of its own (pytest's caplog depends on propagation, which parla's set-up turns off
    and pytest versions treat differently)."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(level)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


# --- audio -----------------------------------------------------------------------------------

HAVE_ESPEAK = shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=64)
def _espeak(text: str, voice: str, speed: int) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
                       check=True, capture_output=True)
        samples, rate = sf.read(wav, dtype="float32")
    return samples, rate


def speech(text: str = "Bon dia a tothom.", sample_rate: int = 48000, voice: str = "ca+m3",
           speed: int = 160, pad_seconds: float = 0.2, seed: int = 0) -> np.ndarray:
    """Catalan speech from espeak-ng, padded with faint noise. Without espeak-ng: a tone-burst
    stand-in, except under PARLA_REQUIRE_SYSTEM_TOOLS=1, where the calling test fails."""
    from parla.audio.decode import resample

    if not HAVE_ESPEAK and REQUIRE_SYSTEM_TOOLS:
        missing_system_tool("espeak-ng is not installed: no real speech")
    if HAVE_ESPEAK:
        samples, rate = _espeak(text, voice, speed)
        samples = resample(samples.astype(np.float32), rate, sample_rate) * 0.8
    else:
        n = int(sample_rate * max(0.06 * len(text), 0.5))
        t = np.arange(n) / sample_rate
        samples = (0.4 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0))
    rng = np.random.default_rng(seed)
    pad = int(pad_seconds * sample_rate)
    out = np.concatenate([np.zeros(pad), samples, np.zeros(pad)]).astype(np.float32)
    return out + rng.normal(0, 1e-3, out.size).astype(np.float32)


def tone(seconds: float, sample_rate: int = 48000, frequency: float = 220.0,
         amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def encode(samples: np.ndarray, sample_rate: int = 48000, fmt: str = "MP3") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def mp3_bytes() -> Callable[..., bytes]:
    """mp3_bytes(seconds=2.0, sample_rate=48000): an MP3 of a tone, with a length header."""
    def make(seconds: float = 2.0, sample_rate: int = 48000) -> bytes:
        return encode(tone(seconds, sample_rate), sample_rate)
    return make


# --- Common Voice release --------------------------------------------------------------------

CV_HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
             "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]
SENTENCES = ["Bon dia a tothom.", "L'home camina pel carrer.", "El col·legi és a prop.",
             "Plou molt aquesta tarda.", "«Vols venir?» va preguntar.", "Tinc gana i set.",
             "La platja és plena de gent.", "Demà anirem a Tortosa."]


def speaker_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def write_cv_release(folder: Path, speakers: dict[str, tuple], *, seconds: float = 1.5,
                     durations_tsv: bool = True, use_speech: bool = False,
                     extra_rows: list[dict[str, str]] | None = None,
                     sentences: list[str] | None = None, voice: str = "ca+m3",
                     locale: str = "ca") -> Path:
    """A raw Common Voice release: ``speakers = {name: (accent, clips)}`` or
    ``{name: (accent, clips, variant)}``.

    Clips are tones (fast) unless ``use_speech`` (espeak-ng's ``voice`` reading ``sentences``,
    Catalan by default); each speaker's clips get slightly different lengths so duration
    filters and statistics have something to work on.
    """
    sentences = sentences or SENTENCES
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows, durations = [], []
    number = 0
    for name, (accent, count, *variant) in speakers.items():
        for i in range(count):
            number += 1
            path = f"common_voice_{locale}_{number:06d}.mp3"
            sentence = sentences[number % len(sentences)]
            if use_speech:
                samples = speech(sentence, pad_seconds=0.2, seed=number, voice=voice)
            else:
                samples = tone(seconds + 0.1 * (i % 5), frequency=150 + 10 * (number % 7))
            (clips / path).write_bytes(encode(samples))
            rows.append({"client_id": speaker_id(name), "path": path, "sentence_id": str(number),
                         "sentence": sentence, "sentence_domain": "", "up_votes": "2",
                         "down_votes": "0", "age": "thirties", "gender": "male_masculine",
                         "accents": accent, "variant": "".join(variant), "locale": locale,
                         "segment": ""})
            durations.append((path, str(round(samples.size / 48000 * 1000))))
    for extra in extra_rows or []:
        rows.append({key: "" for key in CV_HEADER} | {"locale": locale, "up_votes": "2",
                                                     "down_votes": "0"} | extra)
    with open(folder / "validated.tsv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, CV_HEADER, delimiter="\t", quoting=csv.QUOTE_NONE,
                                escapechar=None, quotechar=None, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if durations_tsv:
        with open(folder / "clip_durations.tsv", "w", encoding="utf-8") as handle:
            handle.write("clip\tduration[ms]\n")
            handle.writelines(f"{path}\t{ms}\n" for path, ms in durations)
    return folder


def link_cv_release(original: Path, folder: Path) -> Path:
    """A copy of a release whose clips/ holds symlinks to the original's files, as git-annex,
    DVC or a hand-made subset leave it; the TSVs are copied."""
    (folder / "clips").mkdir(parents=True)
    for tsv in original.glob("*.tsv"):
        (folder / tsv.name).write_bytes(tsv.read_bytes())
    for clip in (original / "clips").iterdir():
        (folder / "clips" / clip.name).symlink_to(clip.resolve())
    return folder


@pytest.fixture
def cv_release(tmp_path) -> Callable[..., Path]:
    """cv_release(speakers, **kwargs) -> folder of a raw Common Voice release in tmp."""
    def make(speakers: dict[str, tuple[str, int]], name: str = "cv-release", **kwargs) -> Path:
        return write_cv_release(tmp_path / name, speakers, **kwargs)
    return make


@pytest.fixture
def demo_corpus() -> Path:
    from parla.demo import demo_corpus_path

    return demo_corpus_path()


# --- fake Hugging Face Hub and small prepared folders (test_hub.py, test_pipeline.py) --------
# A stdlib HTTP server on 127.0.0.1 answers the few Hub API routes that publishing uses, so the
# upload paths (success, HTTP errors, dropped connections, resume) run offline and fast.

FAKE_TOKEN = "hf_fakeTokenForParlaTests0123456789"
_FAKE_ROUTES = [
    ("whoami", "GET", r"/api/whoami-v2"),
    ("auth_check", "GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/auth-check/write"),
    ("create_repo", "POST", r"/api/repos/create"),
    ("validate_yaml", "POST", r"/api/validate-yaml"),
    ("preupload", "POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/preupload/[^/]+"),
    ("commit", "POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/commit/[^/]+"),
    ("create_branch", "POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/branch/[^/]+"),
    ("repo_info", "GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/revision/[^/]+)?"),
]


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """Stand-in for the Hub API: whoami, auth_check, create_repo, validate_yaml, preupload,
    commit, create_branch and repo_info (every file is a "regular" upload, sent inside the
    commit; branches are not kept apart).

    ``fail[route] = status`` answers that HTTP status instead, every time; ``fail[route] =
    "drop"`` closes the connection without answering; ``"hang"`` reads the request and never
    answers (until `close`); ``"no_read"`` takes the connection and never reads the body,
    ``"stall_mid"`` reads half of it and stops (both until `close`: its small receive buffer
    makes the sender block after a few MB); ``(status, headers, body)`` is sent as it is (a
    malformed reply, a 429 with Retry-After). A list of these is used one per request, then the
    route answers normally. ``repos`` holds what was committed, ``{repo_id: {path: bytes}}``;
    ``calls`` and ``paths`` list the routes and URL paths hit; ``waits`` the retry waits parla
    asked for.
    """

    def __init__(self, user: str = "tester", orgs: tuple[str, ...] = (), role: str = "write"):
        import http.server
        import threading

        self.user, self.orgs, self.role = user, orgs, role
        self.token = FAKE_TOKEN
        self.fail: dict[str, int | str] = {}
        self.repos: dict[str, dict[str, bytes]] = {}
        self.calls: list[str] = []
        self.paths: list[str] = []
        self.authorization_headers: list[str] = []
        self.waits: list[float] = []
        self.released = threading.Event()  # ends every "hang"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _fake_hub_handler(self),
                                                       bind_and_activate=False)
        # a small receive buffer, inherited by every connection: a Hub that stops reading
        # stalls the sender after a few MB, not after the kernel's 32 MB of autotuning
        self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self._server.server_bind()
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    def _route(self, method: str, path: str) -> tuple[str, re.Match] | None:
        path = path.split("?")[0]
        for name, route_method, pattern in _FAKE_ROUTES:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                return name, match
        return None

    def _next_failure(self, route: str) -> object:
        status = self.fail[route]
        if isinstance(status, list):
            status = status.pop(0)
            if not self.fail[route]:
                del self.fail[route]
        return status

    def stalls_body(self, method: str, path: str) -> str | None:
        """"no_read" or "stall_mid" when this request's body is not to be read (counted as a
        call), else None (`answer` then reads it)."""
        found = self._route(method, path)
        if found is None or found[0] not in self.fail:
            return None
        head = self.fail[found[0]]
        head = head[0] if isinstance(head, list) else head
        if head not in ("no_read", "stall_mid"):
            return None
        self.calls.append(found[0])
        self.paths.append(path.split("?")[0])
        return str(self._next_failure(found[0]))

    def _allowed(self, repo: str) -> bool:
        return repo.split("/")[0] in (self.user, *self.orgs)

    def answer(self, method: str, path: str, authorization: str, body: bytes
               ) -> tuple[int, dict[str, str], object] | None:
        """(status, headers, JSON body) for one request; None drops the connection."""
        import base64
        import json

        path = path.split("?")[0]
        found = self._route(method, path)
        if found is None:
            return 404, {}, {"error": f"no route {method} {path}"}
        route, match = found
        self.calls.append(route)
        self.paths.append(path)
        self.authorization_headers.append(authorization)
        if route in self.fail:
            status = self._next_failure(route)
            if status == "hang":
                self.released.wait()
                return None
            if isinstance(status, tuple):
                return status
            return None if status == "drop" else (int(status), {}, {"error": "injected"})
        if authorization != f"Bearer {self.token}":
            return 401, {"X-Error-Message": "Invalid credentials in Authorization header"}, {
                "error": "Invalid credentials in Authorization header"}
        repo = match.groupdict().get("repo")
        not_found = (404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"})
        if route == "whoami":
            return 200, {}, {"type": "user", "name": self.user,
                             "orgs": [{"name": org, "roleInOrg": "write"} for org in self.orgs],
                             "auth": {"type": "access_token",
                                      "accessToken": {"displayName": "tests", "role": self.role}}}
        if route == "validate_yaml":
            return 200, {}, {"errors": [], "warnings": []}
        if route == "create_repo":
            request = json.loads(body)
            repo = f"{request.get('organization') or self.user}/{request['name']}"
            if not self._allowed(repo):
                return 403, {}, {"error": "You don't have the rights to create this repo"}
            if repo in self.repos:
                return 409, {}, {"error": "You already created this dataset repo",
                                 "url": f"{self.url}/datasets/{repo}"}
            self.repos[repo] = {}
            return 200, {}, {"url": f"{self.url}/datasets/{repo}"}
        if repo not in self.repos:
            return not_found
        if not self._allowed(repo):
            return 403, {}, {"error": "no write access"}
        files = self.repos[repo]
        if route in ("auth_check", "create_branch"):
            return 200, {}, {}
        if route == "preupload":
            asked = json.loads(body)["files"]
            return 200, {}, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                 "oid": _git_blob_oid(files[f["path"]]) if f["path"] in files else None}
                for f in asked]}
        if route == "commit":
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            oid = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
            return 200, {}, {"commitUrl": f"{self.url}/datasets/{repo}/commit/{oid}",
                             "commitOid": oid, "pullRequestUrl": None}
        return 200, {}, {"id": repo, "sha": "0" * 40, "private": False,
                         "siblings": [{"rfilename": name} for name in sorted(files)]}


def _fake_hub_handler(hub: FakeHub) -> type:
    import http.server
    import json

    class Handler(http.server.BaseHTTPRequestHandler):
        def _respond(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            stall = hub.stalls_body(self.command, self.path)
            if stall is not None:
                if stall == "stall_mid":
                    self.rfile.read(length // 2)
                hub.released.wait()
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            answer = hub.answer(self.command, self.path, self.headers.get("Authorization", ""),
                                body)
            if answer is None:
                self.close_connection = True
                return
            status, headers, payload = answer
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _respond

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

    return Handler


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    """A running FakeHub that huggingface_hub talks to (also from subprocesses): HF_ENDPOINT and
    HF_TOKEN point at it, offline mode is off, and huggingface_hub's retries do not sleep."""
    import types

    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once, at import
    # http_backoff sleeps 1-8 s between its 5 retries of a 5xx; only `time.sleep` is used there
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    from parla.hub import transport

    monkeypatch.setattr(transport, "_sleep", hub.waits.append)  # parla's retries
    yield hub
    hub.close()


def write_prepared_folder(folder: Path, dialects: dict[str, int], *, clips_per_speaker: int = 2,
                          sample_rate: int = 24000, validation_dialect: str | None = None,
                          card: bool = True) -> Path:
    """A small prepared corpus in the layout prepare writes: ``dialects = {dialect: speakers}``.

    Each dialect config holds its rows in ``train``, except the last speaker of
    ``validation_dialect`` (default: the first dialect), held out in its ``validation``; the
    card defines ``all`` as their union. Clips are short tones of different lengths, so hours
    and mean durations differ per config.
    """
    from parla.dialects import DIALECTS
    from parla.store.shards import prepared_table, shard_path, write_table_atomic

    validation_dialect = validation_dialect or next(iter(dialects))
    for d_index, (dialect, speakers) in enumerate(dialects.items()):
        rows = []
        for s in range(speakers):
            for c in range(clips_per_speaker):
                seconds = 0.5 + 0.25 * c + 0.1 * s + 0.05 * d_index
                samples = tone(seconds, sample_rate, frequency=200 + 20 * s)
                voice = DIALECTS[dialect].voice_name
                rows.append({"audio": encode(samples, sample_rate, "FLAC"),
                             "audio_path": f"{dialect}_{s}_{c}.flac",
                             "text": f"{voice}: {SENTENCES[c % len(SENTENCES)]}",
                             "original_text": SENTENCES[c % len(SENTENCES)],
                             "voice_name": voice, "dialect": dialect,
                             "speaker_id": speaker_id(f"{dialect}-{s}"), "gender": "",
                             "age": "", "duration": samples.size / sample_rate,
                             "source_path": f"{dialect}_{s}_{c}.mp3"})
        held_out = speaker_id(f"{dialect}-{speakers - 1}") if dialect == validation_dialect else ""
        write_table_atomic(shard_path(folder, dialect, "train", 0, 1), prepared_table(
            [r for r in rows if r["speaker_id"] != held_out], sample_rate))
        if held_out:
            write_table_atomic(shard_path(folder, dialect, "validation", 0, 1), prepared_table(
                [r for r in rows if r["speaker_id"] == held_out], sample_rate))
    if card:
        from parla.card.folder import write_dataset_card

        write_dataset_card(folder, kind="prepared",
                           parameters={"target_sample_rate": sample_rate, "seed": 42})
    return folder


@pytest.fixture
def prepared_folder(tmp_path) -> Callable[..., Path]:
    """prepared_folder(dialects={"central": 2, "balear": 1}, **kwargs) -> a prepared corpus."""
    def make(dialects: dict[str, int] | None = None, name: str = "prepared", **kwargs) -> Path:
        return write_prepared_folder(tmp_path / name, dialects or {"central": 2, "balear": 1},
                                     **kwargs)
    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module's tests: on a busy 2-core machine OpenMP's spinning
    threads slow SNAC about tenfold (tests that use torch mark themselves with it)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- tokenize: a random SNAC of the real 24 kHz config and tiny text tokenizers --------------
# (test_codec.py, test_tokenize.py) The SNAC folder is what SNAC.from_pretrained and
# codec.load_snac reads (config.json + pytorch_model.bin); weights are random but seeded.

@pytest.fixture(scope="session")
def snac_dir(tmp_path_factory) -> Path:
    """A folder holding a randomly initialised SNAC with the config of hubertsiuzdak/snac_24khz."""
    pytest.importorskip("torch")
    pytest.importorskip("snac")
    from parla.testing import write_random_snac

    return write_random_snac(tmp_path_factory.mktemp("snac_24khz_random"))


def write_text_tokenizer(path: Path, add_bos: bool) -> Path:
    """A word-level tokenizer.json over SENTENCES and the voice names; ``add_bos`` gives it a
    post-processor that prepends <|begin_of_text|> = 128000, as Llama 3's tokenizer does."""
    from parla.testing import write_word_tokenizer

    return write_word_tokenizer(path, SENTENCES, add_bos)


@pytest.fixture(scope="session")
def text_tokenizer_file(tmp_path_factory) -> Path:
    """tokenizer.json that adds BOS itself (like Orpheus's Llama 3 tokenizer)."""
    pytest.importorskip("tokenizers")
    return write_text_tokenizer(tmp_path_factory.mktemp("tokenizer") / "tokenizer.json", True)


# --- prepare stage (test_prepare.py, test_cli.py, test_sources.py) ----------------------------
# Conditioning switched off, so the output's durations and texts are exactly the input's and
# the tests do not depend on how trimming or loudness normalisation behave.

RAW_CONDITIONING_FLAGS = ["--no_trim_silence", "--no_loudness_norm", "--no_normalize_text",
                          "--vad", "energy", "--min_snr_db", "-1000", "--min_chars_per_sec", "0",
                          "--max_chars_per_sec", "1000"]


def raw_conditioning():
    from parla.options import ConditioningOptions

    return ConditioningOptions(trim_silence=False, loudness_norm=False, min_snr_db=None,
                               min_chars_per_sec=None, max_chars_per_sec=None,
                               normalize_text=False, reject_foreign_text=False, vad="energy")


def append_cv_rows(folder: Path, rows: list[dict[str, str]],
                   durations_ms: dict[str, int] | None = None) -> None:
    """Add rows (missing fields empty) to a release's validated.tsv, and their listed lengths
    to clip_durations.tsv when the release has one."""
    with open(folder / "validated.tsv", "a", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, CV_HEADER, delimiter="\t", quoting=csv.QUOTE_NONE,
                                escapechar=None, quotechar=None, lineterminator="\n")
        writer.writerows({key: "" for key in CV_HEADER} | {"locale": "ca", "up_votes": "2",
                                                          "down_votes": "0"} | row
                         for row in rows)
    if durations_ms and (folder / "clip_durations.tsv").is_file():
        with open(folder / "clip_durations.tsv", "a", encoding="utf-8") as handle:
            handle.writelines(f"{path}\t{ms}\n" for path, ms in durations_ms.items())


def load_prepared(folder: Path, config: str, split: str, cache_dir: Path) -> list[dict]:
    """Rows of one config/split read back with `datasets.load_dataset` (a fresh ``cache_dir``),
    each with its FLAC decoded by soundfile into ``samples`` and ``sample_rate``."""
    import datasets

    dataset = datasets.load_dataset(str(folder), config, split=split, cache_dir=str(cache_dir))
    # datasets >= 4 decodes audio with torchcodec, which parla does not need: read the bytes
    dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
    rows = dataset.to_list()
    for row in rows:
        row["samples"], row["sample_rate"] = sf.read(io.BytesIO(row["audio"]["bytes"]),
                                                     dtype="float32")
    return rows


# --- a fake Hub that serves datasets for download (test_hub_download.py) ---------------------
# The download side of the Hub's API, on 127.0.0.1: repo info, the file tree (paginated), and
# resolve with the headers huggingface_hub reads, optionally redirecting to a second host.

_DOWNLOAD_ROUTES = [
    ("info", r"/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?"),
    ("tree", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)"),
    ("file", r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
    ("cdn", r"/cdn/(?P<sha256>[0-9a-f]{64})"),
]
DOWNLOAD_CHUNK = 16 * 1024


class FakeDatasetHub:
    """Serves datasets as the Hub's download API does: repo info (``/api/datasets/R`` and
    ``.../revision/REV``: id, sha, lastModified), the recursive tree (``page_size`` entries a
    page, the next page in a ``Link`` header), and ``resolve`` (HEAD and GET, with X-Repo-Commit,
    ETag or X-Linked-Etag/X-Linked-Size, Range). With ``redirect``, LFS files (``*.parquet``)
    answer 302 to a second server, the CDN, which sends the bytes.

    ``fail[route]`` (routes: info, tree, head, file, cdn) answers otherwise: an HTTP status;
    "drop" closes the connection; "hang" never answers (until `close`); "stall" sends the
    headers and half the file, then hangs; ``(status, headers, body)`` is sent as it is. A list
    is used one per request, then the route answers normally. ``chunk_delay`` seconds pass
    between the 16 kB chunks of a file. ``calls`` lists the routes hit, ``bytes_sent`` the file
    bytes sent.
    """

    def __init__(self, page_size: int = 2, redirect: bool = False) -> None:
        import threading

        self.page_size, self.redirect = page_size, redirect
        self.repos: dict[str, dict[str, bytes]] = {}
        self.dates: dict[str, str] = {}
        self.fail: dict[str, object] = {}
        self.chunk_delay = 0.0
        self.calls: list[str] = []
        self.bytes_sent = 0
        self.released = threading.Event()
        self._servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                         _dataset_hub_handler(self))
                         for _ in range(2)]  # the Hub, and the CDN it redirects to
        for server in self._servers:
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._servers[0].server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        host, port = self._servers[1].server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, files: dict[str, bytes],
            date: str = "2026-11-20T10:00:00.000Z") -> str:
        """Publish ``files`` as ``repo_id``'s main (replacing it); its commit sha."""
        self.repos[repo_id] = dict(files)
        self.dates[repo_id] = date
        return self.sha(repo_id)

    def add_folder(self, repo_id: str, folder: Path, **kwargs: str) -> str:
        return self.add(repo_id, {path.relative_to(folder).as_posix(): path.read_bytes()
                                  for path in sorted(folder.rglob("*")) if path.is_file()},
                        **kwargs)

    def sha(self, repo_id: str) -> str:
        return hashlib.sha1(repr(sorted(self.repos[repo_id].items())).encode()).hexdigest()

    def close(self) -> None:
        self.released.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def injected(self, route: str) -> object | None:
        """The failure to play for one request of ``route``, if any (used up when a list)."""
        status = self.fail.get(route)
        if isinstance(status, list):
            status = status.pop(0)
            if not self.fail[route]:
                del self.fail[route]
        return status

    def _entry(self, path: str, data: bytes) -> dict:
        entry = {"type": "file", "oid": _git_blob_oid(data), "size": len(data), "path": path}
        if path.endswith(".parquet"):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                            "pointerSize": 134}
        return entry

    def tree_page(self, repo: str, cursor: int) -> tuple[list[dict], str | None]:
        files = self.repos[repo]
        folders = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p})
        entries = ([{"type": "directory", "oid": "0" * 40, "path": f} for f in folders]
                   + [self._entry(p, files[p]) for p in sorted(files)])
        end = cursor + self.page_size
        following = (f"{self.url}/api/datasets/{repo}/tree/{self.sha(repo)}?recursive=True"
                     f"&cursor={end}" if end < len(entries) else None)
        return entries[cursor:end], following

    def file_headers(self, repo: str, path: str) -> dict[str, str] | None:
        data = self.repos[repo].get(path)
        if data is None:
            return None
        entry = self._entry(path, data)
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        return {"X-Repo-Commit": self.sha(repo), "ETag": f'"{etag}"',
                "Content-Length": str(len(data)), "Accept-Ranges": "bytes",
                **({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
                   if "lfs" in entry else {})}

    def blob(self, sha256: str) -> bytes | None:
        return next((data for files in self.repos.values() for data in files.values()
                     if hashlib.sha256(data).hexdigest() == sha256), None)


_NOT_FOUND = (404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "Repository not found"}')


class _DatasetHubHandler(http.server.BaseHTTPRequestHandler):
    """FakeDatasetHub's requests (``hub`` is set by `_dataset_hub_handler`)."""

    hub: FakeDatasetHub

    def _route(self) -> tuple[str, dict[str, str]] | None:
        import re
        from urllib.parse import unquote, urlsplit

        path = unquote(urlsplit(self.path).path)
        for name, pattern in _DOWNLOAD_ROUTES:
            match = re.fullmatch(pattern, path)
            if match:
                return name, match.groupdict()
        return None

    def _answer(self) -> None:
        found = self._route()
        if found is None:
            return self._send(404, {}, b'{"error": "no such route"}')
        route, groups = found
        if route == "file" and self.command == "HEAD":
            route = "head"
        self.hub.calls.append(route)
        status = self.hub.injected(route)
        if status == "hang":
            self.hub.released.wait()
            return None
        if status == "drop":
            self.close_connection = True
            return None
        if isinstance(status, tuple):
            return self._send(*status)
        if isinstance(status, int):
            return self._send(status, {}, b'{"error": "injected"}')
        if groups.get("repo") is not None and groups["repo"] not in self.hub.repos:
            return self._send(*_NOT_FOUND)
        getattr(self, f"_{route if route != 'head' else 'file'}")(groups, status)
        return None

    def _info(self, groups: dict[str, str], status: object) -> None:
        import json

        repo = groups["repo"]
        self._send(200, {}, json.dumps({
            "id": repo, "sha": self.hub.sha(repo), "lastModified": self.hub.dates[repo],
            "private": False, "siblings": [{"rfilename": p} for p in sorted(self.hub.repos[repo])],
        }).encode())

    def _tree(self, groups: dict[str, str], status: object) -> None:
        import json
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(self.path).query)
        page, following = self.hub.tree_page(groups["repo"], int(query.get("cursor", ["0"])[0]))
        headers = {"Link": f'<{following}>; rel="next"'} if following else {}
        self._send(200, headers, json.dumps(page).encode())

    def _file(self, groups: dict[str, str], status: object) -> None:
        repo, path = groups["repo"], groups["path"]
        headers = self.hub.file_headers(repo, path)
        if headers is None:
            return self._send(404, {"X-Error-Code": "EntryNotFound",
                                    "X-Repo-Commit": self.hub.sha(repo)}, b"{}")
        if self.hub.redirect and "X-Linked-Etag" in headers:
            sha256 = headers["X-Linked-Etag"].strip('"')
            return self._send(302, headers | {"Location": f"{self.hub.cdn_url}/cdn/{sha256}",
                                              "Content-Length": "0"}, b"")
        return self._bytes(self.hub.repos[repo][path], headers, status)

    def _cdn(self, groups: dict[str, str], status: object) -> None:
        data = self.hub.blob(groups["sha256"])
        if data is None:
            return self._send(404, {}, b"no such blob")
        return self._bytes(data, {"ETag": f'"{groups["sha256"]}"', "Accept-Ranges": "bytes"},
                           status)

    def _bytes(self, data: bytes, headers: dict[str, str], status: object) -> None:
        import re

        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
            headers = headers | {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        self.send_response(206 if ranged else 200)
        for key, value in (headers | {"Content-Length": str(len(data) - start)}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self._body(data, start, status)

    def _body(self, data: bytes, start: int, status: object) -> None:
        import time

        for offset in range(start, len(data), DOWNLOAD_CHUNK):
            if status == "stall" and offset >= start + (len(data) - start) // 2:
                self.hub.released.wait()
                return
            time.sleep(self.hub.chunk_delay)
            chunk = data[offset:offset + DOWNLOAD_CHUNK]
            self.wfile.write(chunk)
            self.wfile.flush()
            self.hub.bytes_sent += len(chunk)

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


def _dataset_hub_handler(hub: FakeDatasetHub) -> type:
    return type("DatasetHubHandler", (_DatasetHubHandler,), {"hub": hub})


@pytest.fixture
def dataset_hub(monkeypatch) -> Iterator[FakeDatasetHub]:
    """A running FakeDatasetHub that parla downloads from (also in subprocesses): HF_ENDPOINT
    points at it, offline mode is off for both libraries, and no retry waits."""
    import types

    import datasets.config
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    from parla.store import hub_requests

    hub = FakeDatasetHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # both read once, at import
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    monkeypatch.setattr(hub_requests, "_sleep", lambda seconds: None)
    yield hub
    hub.close()
