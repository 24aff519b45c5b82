"""The requests of one Hub dataset's download: bounded, retried a few times, each retry said.

Every request huggingface_hub's shared client sends while a `RequestWatch` is active goes through
it (`parla.endpoint.watching_requests`): it gets parla's timeouts (connect, then each read of
the reply and of the file's bytes, PARLA_HUB_TIMEOUT), and every failure the libraries would
retry (a timeout, a lost connection, HTTP 429 or 5xx) is counted. Each one is logged as one line;
past `MAX_RETRIES` the next request or byte read raises `HubGaveUp` instead, which neither
huggingface_hub nor the HTTP client retries. A download then ends within about
(MAX_RETRIES + 1) x PARLA_HUB_TIMEOUT plus the waits between tries, wherever the Hub stalls.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from parla.endpoint import CONNECT_TIMEOUT_S, HubStoppedAnswering
from parla.progress import get_logger

log = get_logger("sources")

MAX_RETRIES = 3  # failures retried per dataset, all its requests together
RETRY_WAITS_S = (1.0, 2.0, 4.0)  # parla's own waits before trying a call again
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
# requests huggingface_hub makes on its own and shrugs off when they fail (it fetches a registry
# of AI agents once a day, for its user agent header): bounded too, but no failure of the download
UNCOUNTED_PATHS = ("/api/agent-harnesses",)
_sleep = time.sleep  # tests replace it
_T = TypeVar("_T")


@dataclass(frozen=True)
class Failure:
    """What went wrong with the Hub, in words: ``kind`` is one of offline, unreachable,
    stalled, malformed, server, not_found, unauthorised; ``detail`` says more."""

    kind: str
    detail: str = ""
    tries: int = 0  # requests that failed, when the retries were spent


class HubGaveUp(HubStoppedAnswering):
    """The download's retries are spent: nothing retries this."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.kind}: {failure.detail}")
        self.failure = failure


class MalformedReply(ValueError):
    """A reply that parses but does not say what a Hub says (no commit sha, no file sizes)."""


@functools.cache
def _httpx() -> Any:
    """The HTTP client huggingface_hub uses (httpx2 in huggingface_hub 2, else httpx)."""
    try:
        return importlib.import_module("httpx2")
    except ImportError:
        return importlib.import_module("httpx")


def _where(request: Any) -> str:
    return f"{request.method} {urlsplit(str(request.url)).path}"


def transport_failure(error: BaseException, timeout: float) -> Failure:
    httpx = _httpx()
    if isinstance(error, httpx.ConnectTimeout):
        return Failure("stalled", f"no connection within {min(CONNECT_TIMEOUT_S, timeout):g} s")
    if isinstance(error, httpx.TimeoutException):
        return Failure("stalled", f"no reply within {timeout:g} s")
    if isinstance(error, httpx.ConnectError):
        return Failure("unreachable", _first_line(error) or "cannot connect")
    reason = _first_line(error) or type(error).__name__
    return Failure("unreachable", f"the connection broke: {reason}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


class RequestWatch:
    """Timeouts, counted failures and one log line per retry for one dataset's requests."""

    def __init__(self, repo_id: str, timeout: float) -> None:
        self.repo_id, self.timeout = repo_id, timeout
        self.failures = 0
        self.last: Failure | None = None
        self._lock = threading.Lock()

    def send(self, transport: Any, request: Any) -> Any:
        httpx = _httpx()
        self.check()
        timeout = self.timeout
        request.extensions["timeout"] = {"connect": min(CONNECT_TIMEOUT_S, timeout),
                                         "read": timeout, "write": timeout, "pool": timeout}
        if urlsplit(str(request.url)).path in UNCOUNTED_PATHS:
            return transport.handle_request(request)
        try:
            response = transport.handle_request(request)
        except httpx.TransportError as error:
            self.failed(request, transport_failure(error, timeout))
            raise
        if response.status_code in RETRY_STATUSES:
            try:
                self.failed(request, Failure("server", f"HTTP {response.status_code}"))
            except HubGaveUp:
                response.close()
                raise
        response.stream = _watched_stream_class()(response.stream, self, request)
        return response

    def check(self) -> None:
        """Refuse to send or read more once the retries are spent."""
        if self.failures > MAX_RETRIES and self.last is not None:
            raise HubGaveUp(Failure(self.last.kind, self.last.detail, self.failures))

    def failed(self, request: Any, failure: Failure) -> None:
        with self._lock:
            self.failures += 1
            self.last, count = failure, self.failures
        if count > MAX_RETRIES:
            raise HubGaveUp(Failure(failure.kind, failure.detail, count))
        log.warning("%s: %s (%s); trying again (%d of %d)", self.repo_id,
                    _said(failure), _where(request), count, MAX_RETRIES)

    def retrying(self, call: Callable[[], _T]) -> _T:
        """``call()``, tried again after a failure this watch counted (the libraries retry
        some calls themselves, others not at all)."""
        while True:
            try:
                return call()
            except HubGaveUp:
                raise
            except Exception as error:
                if not _retryable(error):
                    raise
                self.check()
                _sleep(RETRY_WAITS_S[min(self.failures, len(RETRY_WAITS_S)) - 1])


def _said(failure: Failure) -> str:
    if failure.kind == "server":
        return f"the Hub answered {failure.detail}"
    if failure.kind == "stalled":
        return f"the Hub did not answer ({failure.detail})"
    return f"no answer from the Hub ({failure.detail})"


def _retryable(error: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    for link in causes(error):
        if isinstance(link, _httpx().TransportError):
            return True
        if isinstance(link, HfHubHTTPError):
            return _status(link) in RETRY_STATUSES
    return False


@functools.cache
def _watched_stream_class() -> type:
    httpx = _httpx()

    class WatchedStream(httpx.SyncByteStream):
        """A reply's bytes: a stalled or broken transfer counts as a failure too."""

        def __init__(self, stream: Any, watch: RequestWatch, request: Any) -> None:
            self._stream, self._watch, self._request = stream, watch, request

        def __iter__(self) -> Iterator[bytes]:
            try:
                for chunk in self._stream:
                    self._watch.check()  # another file's failures may have spent the retries
                    yield chunk
            except httpx.TransportError as error:
                self._watch.failed(self._request, transport_failure(error, self._watch.timeout))
                raise

        def close(self) -> None:
            self._stream.close()

    return WatchedStream


def causes(error: BaseException) -> list[BaseException]:
    """The error and what it was raised from, nearest first."""
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return chain


def _status(error: BaseException) -> int | None:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def classify(error: BaseException, timeout: float) -> Failure | None:
    """What a failed download says about the Hub, or None when it is not the Hub's doing."""
    chain = causes(error)
    for link in chain:
        if isinstance(link, HubGaveUp):
            return link.failure
    for link in chain:
        found = _http_failure(link) or _other_failure(link, timeout)
        if found is not None:
            return found
    return None


def _http_failure(error: BaseException) -> Failure | None:
    from huggingface_hub import errors

    if isinstance(error, errors.GatedRepoError):
        return Failure("unauthorised", "the dataset is gated: HTTP 403")
    if isinstance(error, errors.RepositoryNotFoundError):
        return Failure("not_found", f"HTTP {_status(error) or 404}")
    if isinstance(error, (errors.RevisionNotFoundError, errors.RemoteEntryNotFoundError)):
        return Failure("malformed", f"the Hub lists what it does not serve: {_first_line(error)}")
    if not isinstance(error, errors.HfHubHTTPError):
        return None
    status = _status(error)
    if status in (401, 403):
        return Failure("unauthorised", f"HTTP {status}")
    if status == 404:
        return Failure("not_found", "HTTP 404")
    return Failure("server", f"HTTP {status}" if status else _first_line(error))


def _other_failure(error: BaseException, timeout: float) -> Failure | None:
    from huggingface_hub import errors
    from huggingface_hub.utils import OfflineModeIsEnabled

    httpx = _httpx()
    if isinstance(error, OfflineModeIsEnabled):
        return Failure("offline", "HF_HUB_OFFLINE is set")
    if isinstance(error, MalformedReply):
        return Failure("malformed", str(error))
    if isinstance(error, (httpx.DecodingError, httpx.TooManyRedirects, errors.FileMetadataError,
                          json.JSONDecodeError)):
        return Failure("malformed", f"{type(error).__name__}: {_first_line(error)}")
    if isinstance(error, httpx.TransportError):
        return transport_failure(error, timeout)
    return None


@contextlib.contextmanager
def quiet_hub_library() -> Iterator[None]:
    """huggingface_hub logs each of its retries as a raw warning; parla says them itself."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
