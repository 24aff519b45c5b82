"""Dataset card and Hugging Face Hub upload.

The card (`README.md`) is rendered from the shards themselves, so its numbers always match the
data; the processing parameters it shows travel inside the card (an HTML comment the Hub does not
display), so `publish` can regenerate it without the stage that wrote it.

Publishing checks the token and the write access first, then uploads the folder with
huggingface_hub's resumable folder upload: a failed upload never touches the local data, and
running `parla publish` again finishes it. The token is read from ``HF_TOKEN`` or the stored
login, handed to huggingface_hub, and never printed, logged or written anywhere.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from parla.card.folder import refresh_dataset_card, updated_card
from parla.endpoint import hub_endpoint, hub_offline, hub_unreachable
from parla.errors import ParlaError, UsageError
from parla.hub.transport import HubGaveUp, HubStalled, reset_retries, use_timeouts
from parla.options import PublishOptions
from parla.progress import bars_disabled, get_logger
from parla.store.layout import CARD_FILE
from parla.store.shards import find_shards
from parla.store.urls import as_path, check_reachable, is_remote, open_ranges

log = get_logger("hub")

REPO_TYPE = "dataset"
STORE_COMMIT_FILES = 200  # files per commit when publishing from a bucket
# what an upload leaves out: half-written shards and huggingface_hub's own resume bookkeeping
UPLOAD_IGNORE_PATTERNS = ["*.tmp", ".cache/**", ".parla-write-test", ".parla_*", ".parla.lock"]
TOKENS_URL = "https://huggingface.co/settings/tokens"

# every request, parla's own and huggingface_hub's, is retried (or not) by parla.hub.transport


class HubAccessError(UsageError):
    """No token, a rejected token, or no write access: fixable by the user, found before work."""


class HubError(ParlaError):
    """The Hub failed or could not be reached; the local folder is left as it was."""


# --- statistics ------------------------------------------------------------------------------


# --- the card --------------------------------------------------------------------------------


# --- talking to the Hub ----------------------------------------------------------------------


def _api(token: str) -> Any:
    from huggingface_hub import HfApi

    use_timeouts()
    return HfApi(endpoint=hub_endpoint(), token=token, library_name="parla")


@contextlib.contextmanager
def _quiet_hub_library() -> Iterator[None]:
    """huggingface_hub logs each retry as a raw warning line; parla says what failed itself (and
    its upload bars follow parla's switch: -q, PARLA_DISABLE_PROGRESS)."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    logger = logging.getLogger("huggingface_hub")
    level, bars_were_off = logger.level, are_progress_bars_disabled()
    logger.setLevel(logging.ERROR)
    if bars_disabled():
        disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if not bars_were_off:
            enable_progress_bars()


def _resolve_token(token: str | None, repo_id: str) -> str:
    from huggingface_hub import get_token

    if hub_offline():
        raise HubAccessError(f"HF_HUB_OFFLINE is set, so {repo_id} cannot be uploaded; unset it "
                             "to publish")
    token = token or get_token()
    if not token:
        raise HubAccessError(f"not logged in to the Hugging Face Hub, which uploading to "
                             f"{repo_id} needs: set HF_TOKEN or run `hf auth login` (a token "
                             f"with write access, from {TOKENS_URL})")
    return token


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a failed Hub call raises: HfHubHTTPError and ConnectionError are OSErrors; the HTTP
    client's transport errors (httpx2 in huggingface_hub 2, requests before) are named here."""
    errors: list[type[BaseException]] = [OSError, HubStalled, HubGaveUp,
                                         *_malformed_reply_errors()]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("hf_xet", "XetAuthenticationError"),
                         ("hf_xet", "XetObjectNotFoundError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _malformed_reply_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises on a reply it cannot parse (a bad ``commitUrl``: HfUriError;
    JSON that is not JSON, or lacks a key)."""
    errors: list[type[BaseException]] = [json.JSONDecodeError, KeyError]
    try:
        from huggingface_hub.errors import HfUriError

        errors.append(HfUriError)
    except ImportError:
        pass
    return tuple(errors)


def _timeout_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [TimeoutError, socket.timeout]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TimeoutException)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _scrub(message: str, token: str | None) -> str:
    return message.replace(token, "***") if token else message


def _failure(error: BaseException, doing: str, repo_id: str, token: str | None
             ) -> HubAccessError | HubError:
    """One clear message per kind of failure (never the token)."""
    if isinstance(error, HubStalled):
        return HubError(f"the Hub at {hub_endpoint()} {error.what} while {doing} "
                        f"({error.detail})")
    status = _status(error)
    retried = error.retried if isinstance(error, HubGaveUp) else ""
    if status == 401:
        return HubAccessError(
            f"the Hub rejected the Hugging Face token (HTTP 401) while {doing}: it is invalid or "
            f"expired; set HF_TOKEN to a valid token or run `hf auth login --force`")
    if status == 403:
        return HubAccessError(
            f"the Hub refused write access to dataset {repo_id} (HTTP 403) while {doing}: use a "
            f"token with write access to it ({TOKENS_URL}) or another --repo_id")
    if status == 429:
        return HubError(f"the Hub kept rate-limiting parla (HTTP 429) while {doing}{retried}; "
                        f"wait a few minutes and try again")
    if status is not None and status >= 500:
        return HubError(f"the Hub had a server error (HTTP {status}) while {doing}{retried}; "
                        f"the problem is on the Hub's side, try again later")
    if isinstance(error, HubGaveUp):
        return HubError(_scrub(f"{error.reason} while {doing}{retried}", token))
    if status is not None:
        detail = " ".join((getattr(error, "server_message", None) or "").split())  # one line
        return HubError(_scrub(f"the Hub answered HTTP {status} while {doing}"
                               + (f": {detail}" if detail else ""), token))
    from huggingface_hub.utils import OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return HubAccessError("HF_HUB_OFFLINE is set: unset it to publish")
    if isinstance(error, _timeout_errors()):
        return HubError(f"the Hub at {hub_endpoint()} stopped answering while {doing}")
    if isinstance(error, _malformed_reply_errors()):
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return HubError(_scrub(f"the Hub sent a reply parla cannot read while {doing} "
                               f"({type(error).__name__}: {first[:200]})", token))
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return HubError(_scrub(f"no answer from the Hub at {hub_endpoint()} while {doing} "
                           f"({reason})", token))


def _can_create_in(namespace: str, identity: Mapping[str, Any]) -> bool:
    if namespace == identity.get("name"):
        return True
    for org in identity.get("orgs") or []:
        if org.get("name") == namespace:
            return org.get("roleInOrg", "write") not in ("read",)
    return False


def check_write_access(repo_id: str, token: str | None = None) -> str:
    """Fail fast: the token exists, is valid, and may write (or create) dataset ``repo_id``.

    Returns the user name. Raises HubAccessError (fixable by the user) or HubError (the Hub is
    down or unreachable).
    """
    PublishOptions(folder=".", repo_id=repo_id)  # the repo id's shape, as one clear UsageError
    token = _resolve_token(token, repo_id)
    reset_retries()  # PARLA_HUB_RETRY_S counts from here, for the whole publish
    unreachable = hub_unreachable()
    if unreachable:
        raise HubError(f"no answer from the Hub at {hub_endpoint()} while checking the login "
                       f"({unreachable}); check the network, or HF_ENDPOINT")
    api = _api(token)
    try:
        with _quiet_hub_library():
            identity = api.whoami(token=token)
    except _network_errors() as error:
        raise _failure(error, "checking the login", repo_id, token) from None
    user = str(identity.get("name", "?"))
    role = ((identity.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubAccessError(f"the Hugging Face token of {user} is read-only; create one with "
                             f"write access at {TOKENS_URL} and set HF_TOKEN to it")
    try:
        with _quiet_hub_library():
            api.auth_check(repo_id, repo_type=REPO_TYPE, token=token, write=True)
        return user
    except _network_errors() as error:
        if _status(error) not in (401, 404):
            raise _failure(error, f"checking write access to {repo_id}", repo_id, token) from None
    # the repo does not exist (or is invisible to this user): it will be created, so the
    # namespace must be the user's own or one of their organisations
    namespace = repo_id.split("/")[0]
    if not _can_create_in(namespace, identity):
        raise HubAccessError(f"dataset {repo_id} does not exist and {user} cannot create "
                             f"datasets under '{namespace}' (not the user name or one of its "
                             f"organisations with write access)")
    return user


def _upload(api: Any, options: PublishOptions, folder: Path, token: str) -> None:
    upload_large_folder = getattr(api, "upload_large_folder", None)
    if upload_large_folder is not None:
        # huggingface_hub < 2: the resumable, parallel uploader is a separate method
        upload_large_folder(repo_id=options.repo_id, folder_path=folder, repo_type=REPO_TYPE,
                            revision=options.revision, private=options.private,
                            ignore_patterns=UPLOAD_IGNORE_PATTERNS,
                            num_workers=options.num_workers)
        return
    # huggingface_hub >= 2: upload_folder itself streams the files (hf_xet), commits in batches
    # and skips what is already on the Hub when run again
    api.upload_folder(repo_id=options.repo_id, folder_path=folder, repo_type=REPO_TYPE,
                      revision=options.revision, token=token,
                      ignore_patterns=list(UPLOAD_IGNORE_PATTERNS),
                      commit_message=options.commit_message or "Upload corpus with parla")


def _uploaded_files(folder: Path) -> list[Path]:
    """The files that the upload considers (huggingface_hub's ignore rules, roughly)."""
    from fnmatch import fnmatch

    return [p for p in sorted(folder.rglob("*")) if p.is_file()
            and not any(fnmatch(str(p.relative_to(folder)), pattern) or fnmatch(p.name, pattern)
                        for pattern in UPLOAD_IGNORE_PATTERNS)]


def _upload_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) that the upload considers."""
    sizes = [p.stat().st_size for p in _uploaded_files(folder)]
    return len(sizes), sum(sizes)


def _upload_from_store(api: Any, options: PublishOptions, folder: Any, token: str,
                       card: str | None) -> None:
    """A bucket folder to the Hub, each file streamed from the store (no local copy), in
    commits of `STORE_COMMIT_FILES` files, the card in the last; a rerun sends again only what
    the Hub lacks (huggingface_hub skips blobs it already has)."""
    from huggingface_hub import CommitOperationAdd

    files = [p for p in _uploaded_files(folder)  # a README parla did not write goes unchanged
             if card is None or str(p.relative_to(folder)) != CARD_FILE]
    batches = [files[i:i + STORE_COMMIT_FILES]
               for i in range(0, len(files), STORE_COMMIT_FILES)] or [[]]
    for number, batch in enumerate(batches, start=1):
        with contextlib.ExitStack() as opened:
            # buffered: huggingface_hub takes io.BufferedIOBase objects, not fsspec's files
            # by exact ranges: fsspec's read-ahead would hold up to 50 MB per open file
            operations = [CommitOperationAdd(str(p.relative_to(folder)), opened.enter_context(
                io.BufferedReader(open_ranges(p), 1 << 20))) for p in batch]
            if card is not None and number == len(batches):
                operations.append(CommitOperationAdd(CARD_FILE, card.encode("utf-8")))
            api.create_commit(repo_id=options.repo_id, repo_type=REPO_TYPE,
                              operations=operations, revision=options.revision, token=token,
                              commit_message=(options.commit_message
                                              or "Upload corpus with parla")
                              + (f" ({number}/{len(batches)})" if len(batches) > 1 else ""))


@contextlib.contextmanager
def _staged(folder: Path, card: str | None) -> Iterator[Path]:
    """What to upload: ``folder`` itself, or (with a new card) a temporary tree of links to its
    files plus the card, so that a failed upload leaves the user's folder exactly as it was."""
    if card is None or (folder / CARD_FILE).is_file() and \
            (folder / CARD_FILE).read_text(encoding="utf-8") == card:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="parla-publish-") as tmp:
        stage = Path(tmp)
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_dir() or relative == Path(CARD_FILE) or relative.parts[0] == ".cache":
                continue
            (stage / relative).parent.mkdir(parents=True, exist_ok=True)
            (stage / relative).symlink_to(path.resolve())
        (stage / CARD_FILE).write_text(card, encoding="utf-8")
        yield stage


def upload_folder(options: PublishOptions, token: str | None = None) -> str:
    """Upload a prepared or tokenized folder (card regenerated first); returns the dataset URL.

    Creates the dataset repo if missing. Any failure raises one HubAccessError/HubError saying
    what failed and how to finish; the local folder is not changed (the regenerated card is
    written into it only once the upload succeeded), and publishing it again finishes the upload.
    """
    folder = as_path(options.folder)
    check_reachable(folder, "publish")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    if not find_shards(folder):
        raise UsageError(f"no shards under {folder / 'data'}: nothing to publish (run "
                         f"`parla prepare` first)")
    token = _resolve_token(token, options.repo_id)
    user = check_write_access(options.repo_id, token)
    card = updated_card(folder, options.repo_id)
    if card is None:
        log.warning("%s was not written by parla; uploading it unchanged", folder / CARD_FILE)
    api = _api(token)
    url = f"{hub_endpoint()}/datasets/{options.repo_id}"
    files, size = _upload_size(folder)
    log.info("uploading %s (%d files, %.1f MB; files already on the Hub are skipped) to %s as %s",
             folder, files, size / 1e6, url, user)
    with contextlib.ExitStack() as stack:
        # a bucket's files are streamed from it; a local folder's are staged beside the card
        upload_from = (folder if is_remote(folder)  # a local failure: not the Hub's
                       else stack.enter_context(_staged(folder, card)))
        stack.enter_context(_quiet_hub_library())
        _upload_steps(api, options, upload_from, token, folder, card)
    if card is not None:
        refresh_dataset_card(folder, options.repo_id)  # the local card now matches the Hub's
    log.info("published %s", url)
    return url


def _upload_steps(api: Any, options: PublishOptions, upload_from: Path, token: str,
                  folder: Path, card: str | None) -> None:
    """Create the repo (and branch), then upload; a failure is one HubError naming the step."""
    doing = f"creating the repo {options.repo_id}"
    try:
        api.create_repo(options.repo_id, repo_type=REPO_TYPE, private=options.private,
                        exist_ok=True, token=token)
        if options.revision and not options.revision.startswith("refs/"):
            doing = f"creating the branch {options.revision} of {options.repo_id}"
            api.create_branch(options.repo_id, branch=options.revision, repo_type=REPO_TYPE,
                              exist_ok=True, token=token)
        doing = f"uploading {folder} to {options.repo_id}"
        if is_remote(upload_from):
            _upload_from_store(api, options, upload_from, token, card)
        else:
            _upload(api, options, upload_from, token)
    except _network_errors() as error:
        failure = _failure(error, doing, options.repo_id, token)
        revision = f" --revision {options.revision}" if options.revision else ""
        resume = (f"; the local folder is intact: run `parla publish {folder} --repo_id "
                  f"{options.repo_id}{revision}` again to finish (files already uploaded are "
                  f"not sent again)")
        raise type(failure)(f"{failure}{resume}") from None
