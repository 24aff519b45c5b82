"""A Hub dataset id -> a local snapshot folder of one revision, which `datasets` then reads.

The revision is resolved first (one bounded request), its files listed, and the missing ones
downloaded into huggingface_hub's cache (``<cache_dir>/hub`` with --cache_dir), with progress.
Every request is bounded (`hub_requests`). When the Hub cannot be used, a complete cached
snapshot is used instead, and parla says so; a Hub that says the dataset is gone (404) or
closed to this user (401/403) is an error even with a cache, unless ``allow_stale_cache``.
Each failure gets its own line and hint.
"""

from __future__ import annotations

import difflib
import json
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from parla.dialects import DIALECTS
from parla.endpoint import (
    hub_endpoint,
    hub_offline,
    hub_unreachable,
    read_timeout,
    use_timeouts,
    watching_requests,
)
from parla.errors import ParlaError, SourceError
from parla.progress import bars_disabled, get_logger, progress
from parla.store.files import write_json, write_text_atomic
from parla.store.hub_requests import (
    Failure,
    MalformedReply,
    RequestWatch,
    classify,
    quiet_hub_library,
)

log = get_logger("sources")

REPO_TYPE = "dataset"
REF = "main"  # the branch a Hub id means; its commit is recorded in the cache's refs/main
DOWNLOAD_WORKERS = 4
PROGRESS_EVERY_S = 10.0  # a progress line this often when there are no progress bars
_RECORDS = "parla"  # <repo folder>/parla/<sha>.json: a snapshot parla downloaded completely


class HubUnreachableError(ParlaError):
    """A Hub dataset that cannot be downloaded now (no network, a stalled or broken Hub) and has
    no cached copy: the environment failed, not the input (exit 1)."""


@dataclass(frozen=True)
class HubSnapshot:
    """One revision of a Hub dataset, complete on disk."""

    repo_id: str
    folder: Path
    revision: str  # the commit sha
    date: str  # the revision's date (else the download's), YYYY-MM-DD
    from_cache: bool = False


def hub_cache(cache_dir: str | None) -> Path:
    """Where snapshots are kept: ``<cache_dir>/hub``, else huggingface_hub's cache (read now)."""
    if cache_dir:
        return Path(cache_dir).expanduser() / "hub"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _storage(cache: Path, repo_id: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return cache / repo_folder_name(repo_id=repo_id, repo_type=REPO_TYPE)


@dataclass
class HubDownloads:
    """The Hub downloads of one run. A Hub that could not be reached or stopped answering is
    not asked again in the same run: the later datasets go straight to their caches."""

    allow_stale_cache: bool = False
    down: dict[str, Failure] = field(default_factory=dict)  # endpoint -> why

    def fetch(self, repo_id: str, cache_dir: str | None = None) -> HubSnapshot:
        cache, endpoint = hub_cache(cache_dir), hub_endpoint()
        failure = self._no_network(endpoint)
        if failure is None:
            try:
                return _download(repo_id, cache, endpoint)
            except Exception as error:
                failure = classify(error, read_timeout())
                if failure is None:
                    raise
            if failure.kind in ("unreachable", "stalled"):  # the later datasets say whose
                tries = f", {failure.tries} tries" if failure.tries else ""
                self.down[endpoint] = Failure(failure.kind,
                                              f"{failure.detail}{tries} for {repo_id}")
        return self._fall_back(repo_id, cache, endpoint, failure)

    def _no_network(self, endpoint: str) -> Failure | None:
        if hub_offline(datasets=True):
            return Failure("offline", "HF_HUB_OFFLINE is set")
        if endpoint in self.down:
            return self.down[endpoint]
        unreachable = hub_unreachable()
        if not unreachable:
            return None
        self.down[endpoint] = Failure("unreachable", unreachable)
        return self.down[endpoint]

    def _fall_back(self, repo_id: str, cache: Path, endpoint: str, failure: Failure
                   ) -> HubSnapshot:
        cached = find_cached(repo_id, cache)
        what = describe(failure, repo_id, endpoint)
        if failure.kind in ("not_found", "unauthorised"):
            if cached is None or not self.allow_stale_cache:
                raise SourceError(f"{repo_id}: {what}; {_hint(failure, repo_id, cached)}")
            log.warning("%s: %s; using the cached copy of revision %s from %s, as "
                        "--allow_stale_cache allows", repo_id, what, cached.revision, cached.date)
            return cached
        if cached is None:
            message = (f"{repo_id}: cannot load: {what}, and no cached copy exists; "
                       f"{_hint(failure, repo_id, None)}")
            # offline mode is the user's choice (exit 2); anything else, the network's (exit 1)
            raise SourceError(message) if failure.kind == "offline" else HubUnreachableError(
                message)
        say = log.info if failure.kind == "offline" else log.warning
        say("%s: %s; using the cached copy of revision %s from %s", repo_id, what,
            cached.revision, cached.date)
        return cached


def describe(failure: Failure, repo_id: str, endpoint: str) -> str:
    """What happened, as the middle of a line about ``repo_id``."""
    tries = f", {failure.tries} tries" if failure.tries else ""
    return {
        "offline": "offline mode is on (HF_HUB_OFFLINE), so the Hub cannot be reached",
        "unreachable": f"the Hub at {endpoint} cannot be reached ({failure.detail}{tries})",
        "stalled": f"the Hub at {endpoint} did not answer ({failure.detail}{tries})",
        "malformed": f"the Hub at {endpoint} sent a reply parla cannot read ({failure.detail})",
        "server": f"the Hub at {endpoint} failed ({failure.detail}{tries})",
        "not_found": f"the Hub at {endpoint} has no dataset {repo_id} ({failure.detail})",
        "unauthorised": f"the Hub at {endpoint} refused access to {repo_id} ({failure.detail})",
    }[failure.kind]


def _hint(failure: Failure, repo_id: str, cached: HubSnapshot | None) -> str:
    download = (f"or download it where there is network (`hf download {repo_id} --repo-type "
                "dataset --local-dir DIR`) and pass DIR")
    if failure.kind == "not_found":
        # a typo of one of the seven ids (the others differ from it only in the dialect)
        close = difflib.get_close_matches(repo_id, [d.hub_id for d in DIALECTS.values()
                                                    if d.hub_id != repo_id], n=2, cutoff=0.9)
        hint = (f"did you mean {' or '.join(close)}?" if close else
                "check the id (owner/name); a private dataset needs a token that can read it "
                "(HF_TOKEN or `hf auth login`)")
    elif failure.kind == "unauthorised":
        hint = ("it is private or gated: set HF_TOKEN to a token that can read it (or `hf auth "
                "login`), and accept its terms on the Hub if it is gated")
    else:
        hint = {"offline": f"unset HF_HUB_OFFLINE, {download}",
                "unreachable": f"check the network, a proxy (HTTPS_PROXY) or HF_ENDPOINT, "
                               f"{download}",
                "stalled": f"a proxy or captive portal may be holding the connection; "
                           f"PARLA_HUB_TIMEOUT sets the wait per request ({read_timeout():g} s); "
                           f"{download}",
                "malformed": f"is HF_ENDPOINT a Hugging Face Hub? A proxy or captive portal may "
                             f"be answering instead; {download}",
                "server": f"the problem is on the Hub's side: try again later, {download}",
                }[failure.kind]
    if cached is not None:
        hint += (f"; a cached copy of revision {cached.revision} from {cached.date} exists: "
                 "--allow_stale_cache uses it")
    return hint


# --- downloading -----------------------------------------------------------------------------

def _download(repo_id: str, cache: Path, endpoint: str) -> HubSnapshot:
    from huggingface_hub import HfApi

    use_timeouts()
    api = HfApi(endpoint=endpoint, library_name="parla")
    watch = RequestWatch(repo_id, read_timeout())
    with watching_requests(watch), quiet_hub_library():
        info = watch.retrying(lambda: _parsed(lambda: api.dataset_info(repo_id)))
        sha = getattr(info, "sha", None)
        if not isinstance(sha, str) or len(sha) != 40:
            raise MalformedReply(f"the dataset's info names no commit (sha={sha!r})")
        files = watch.retrying(lambda: _parsed(lambda: _list_files(api, repo_id, sha)))
        storage = _storage(cache, repo_id)
        _fetch_files(repo_id, sha, files, storage, endpoint, watch)
    modified = getattr(info, "last_modified", None)
    date = (modified.date().isoformat() if isinstance(modified, datetime) else
            datetime.now(timezone.utc).date().isoformat())
    _remember(storage, repo_id, sha, date, files)
    return HubSnapshot(repo_id, storage / "snapshots" / sha, sha, date)


def _parsed(call: Any) -> Any:
    """A reply that is not what the Hub sends (not JSON, fields missing or of the wrong type)
    is a malformed reply, not a bug in parla."""
    try:
        return call()
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        if isinstance(error, MalformedReply) or type(error).__module__.startswith("huggingface"):
            raise
        raise MalformedReply(f"{type(error).__name__}: {error}") from error


def _list_files(api: Any, repo_id: str, sha: str) -> dict[str, int]:
    """Every file of the revision and its size (the tree listing, page by page)."""
    from huggingface_hub.hf_api import RepoFile

    files = {entry.path: entry.size for entry in api.list_repo_tree(
        repo_id, recursive=True, revision=sha, repo_type=REPO_TYPE) if isinstance(entry, RepoFile)}
    if not all(isinstance(size, int) and size >= 0 for size in files.values()):
        raise MalformedReply("the file listing gives no sizes")
    return files


def _fetch_files(repo_id: str, sha: str, files: dict[str, int], storage: Path, endpoint: str,
                 watch: RequestWatch) -> None:
    snapshot = storage / "snapshots" / sha
    missing = {path: size for path, size in files.items() if not (snapshot / path).is_file()}
    if not missing:
        log.info("%s: revision %s is in the cache (%d files, %s); nothing to download", repo_id,
                 sha, len(files), format_size(sum(files.values())))
        return
    log.info("%s: downloading revision %s: %d of its %d files, %s", repo_id, sha, len(missing),
             len(files), format_size(sum(missing.values())))
    meter = DownloadProgress(repo_id, missing)
    pool = ThreadPoolExecutor(max_workers=min(DOWNLOAD_WORKERS, len(missing)),
                              thread_name_prefix="parla-download")
    try:
        futures = [pool.submit(watch.retrying, _fetcher(repo_id, sha, path, storage.parent,
                                                         endpoint, meter))
                   for path in missing]
        meter.follow(futures)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        meter.close()
    log.info("%s: downloaded %d files, %s in %.1f s", repo_id, len(missing),
             format_size(sum(missing.values())), meter.seconds())


def _fetcher(repo_id: str, sha: str, path: str, cache: Path, endpoint: str,
             meter: DownloadProgress) -> Any:
    def fetch() -> None:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo_id, path, repo_type=REPO_TYPE, revision=sha, cache_dir=str(cache),
                        endpoint=endpoint, etag_timeout=read_timeout(),
                        tqdm_class=meter.counter(path))
        meter.file_done(path)

    return fetch


class DownloadProgress:
    """Files and bytes done of one dataset's download: a bar, or a line every
    `PROGRESS_EVERY_S` where bars are off (a log, --quiet keeps only warnings)."""

    def __init__(self, repo_id: str, files: dict[str, int]) -> None:
        self.repo_id, self.files = repo_id, files
        self.total = sum(files.values())
        self.done_files, self.done_bytes = 0, 0
        self._per_file: dict[str, int] = {}
        self._lock = threading.Lock()  # the download threads update it
        self._started = time.monotonic()
        self._bar = progress(desc=f"downloading {repo_id}", total=self.total, unit="B",
                             unit_scale=True, disable=bars_disabled())

    def counter(self, path: str) -> type:
        """A stand-in for the tqdm bar huggingface_hub updates while it receives ``path``."""
        meter = self

        class Counter:
            def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
                meter.add(path, initial or 0)

            def __enter__(self) -> Counter:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def update(self, n: int | float | None = 1) -> None:
                meter.add(path, int(n or 0))

            def __getattr__(self, name: str) -> Any:  # close, refresh, set_postfix_str...
                return lambda *args, **kwargs: None

        return Counter

    def add(self, path: str, count: int) -> None:
        with self._lock:
            self._per_file[path] = self._per_file.get(path, 0) + count
            self.done_bytes += count
            self._bar.update(count)

    def file_done(self, path: str) -> None:
        self.add(path, self.files[path] - self._per_file.get(path, 0))  # exact, resumes or not
        with self._lock:
            self.done_files += 1
            self._bar.set_postfix_str(f"{self.done_files}/{len(self.files)} files",
                                      refresh=False)

    def follow(self, futures: list[Future]) -> None:
        """Wait for every file, saying how far it got; the first failure is raised."""
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=PROGRESS_EVERY_S, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
            if pending and self._bar.disable:
                log.info("%s: %d of %d files, %s of %s downloaded", self.repo_id,
                         self.done_files, len(self.files), format_size(self.done_bytes),
                         format_size(self.total))

    def seconds(self) -> float:
        return time.monotonic() - self._started

    def close(self) -> None:
        self._bar.close()


def format_size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


# --- the cache -------------------------------------------------------------------------------

def _remember(storage: Path, repo_id: str, sha: str, date: str, files: dict[str, int]) -> None:
    """Mark the snapshot complete (parla's record) and make it the cache's ``main``."""
    write_json(storage / _RECORDS / f"{sha}.json",
               {"repo_id": repo_id, "revision": sha, "date": date, "files": files})
    write_text_atomic(storage / "refs" / REF, sha)


def find_cached(repo_id: str, cache: Path) -> HubSnapshot | None:
    """The cached snapshot to fall back to: the one ``main`` named last, else the newest, as
    long as it is complete (parla's record, or huggingface_hub's file listing, says which files
    it has)."""
    storage = _storage(cache, repo_id)
    candidates: list[str] = []
    ref = storage / "refs" / REF
    if ref.is_file():
        candidates.append(ref.read_text().strip())
    snapshots = storage / "snapshots"
    if snapshots.is_dir():
        candidates += [p.name for p in sorted(snapshots.iterdir(), key=_mtime, reverse=True)]
    for sha in dict.fromkeys(candidates):
        found = _complete_snapshot(storage, repo_id, sha)
        if found is not None:
            return found
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _complete_snapshot(storage: Path, repo_id: str, sha: str) -> HubSnapshot | None:
    folder = storage / "snapshots" / sha
    record = _read_record(storage / _RECORDS / f"{sha}.json")
    files = record.get("files") if record else _listed_files(repo_id, storage.parent, sha)
    if not folder.is_dir() or not files or not all((folder / path).is_file() for path in files):
        return None
    date = (record or {}).get("date") or datetime.fromtimestamp(
        _mtime(folder), timezone.utc).date().isoformat()
    return HubSnapshot(repo_id, folder, sha, str(date), from_cache=True)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _listed_files(repo_id: str, cache: Path, sha: str) -> list[str]:
    """The files huggingface_hub's own download (`hf download`) listed for ``sha``, if any."""
    try:
        from huggingface_hub import get_cached_repo_tree
    except ImportError:  # huggingface_hub < 2 keeps no listing: the snapshot cannot be checked
        return []
    try:
        return [entry.path for entry in get_cached_repo_tree(
            repo_id, repo_type=REPO_TYPE, revision=sha, cache_dir=str(cache))]
    except Exception:  # no listing cached, or one that cannot be read: not a usable snapshot
        return []
