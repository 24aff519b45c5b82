"""How publish talks HTTP to the Hub: every stall ends the run, retries are bounded and said.

huggingface_hub 2 sends every request through one shared httpx client, which parla replaces
(`use_timeouts`). Its transport is the one place that decides about a failed request:

- a stall (no connection, the Hub not reading what is sent, no reply, no free connection in
  the pool) within PARLA_HUB_TIMEOUT ends the run: `HubStalled`, never sent again;
- HTTP 429 and 5xx, and a dropped connection, are sent again after a wait (Retry-After
  honoured, else doubling from 1 s), each retry logged as one line, at most `MAX_RETRIES` per
  request and PARLA_HUB_RETRY_S seconds of waiting per run; past that, `HubGaveUp`;
- a commit (the one request that changes the repo) is sent again only when the Hub said it did
  not take it (429, 503) or it never left: after a 500, 502, 504 or a connection dropped
  mid-request the Hub may have acted on it, and a rerun of `parla publish` finishes cleanly.

Both errors are BaseExceptions: huggingface_hub's own retries (`http_backoff`) and its upload
pipeline (which re-sends a failed commit "in smaller chunks") catch Exception, and would
otherwise send the request again, silently, for many minutes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from parla.endpoint import (
    CONNECT_TIMEOUT_S,
    factory_in_place,
    hub_endpoint,
    hub_http,
    read_timeout,
    xet_timeouts,
)
from parla.errors import UsageError
from parla.progress import get_logger, progress

log = get_logger("hub")

RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
REFUSED_STATUSES = (429, 503)  # the Hub says it did not take the request
MAX_RETRIES = 5
RETRY_S = 180.0  # PARLA_HUB_RETRY_S: seconds of waiting to retry, all requests of a run together
MAX_WAIT_S = 60.0  # one wait, unless the Hub's Retry-After asks for more (within the budget)
CHUNK_BYTES = 1 << 20  # a request body is sent in pieces of this size, counted on its bar
BAR_MIN_BYTES = 4 << 20  # smaller bodies go in a blink: no bar
_sleep = time.sleep  # tests replace it to record the waits
_LABELS = (("/whoami", "checking the login"), ("/auth-check/", "checking write access"),
           ("/repos/create", "creating the repo"), ("/preupload/", "asking which files to send"),
           ("/commit/", "committing the upload"), ("/branch/", "creating the branch"),
           ("/xet-write-token/", "getting an upload token"), ("/lfs-files", "sending files"))
# what huggingface_hub asks on the side and does without when it fails (it catches Exception):
# sent once, as it is
_BEST_EFFORT_PATHS = ("/api/agent-harnesses", "/api/telemetry")


class HubStalled(BaseException):
    """The Hub stopped taking part in a request for PARLA_HUB_TIMEOUT: ``what`` it stopped
    doing and ``detail`` how long parla waited."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what} ({detail})")
        self.what, self.detail = what, detail


# the name the read-timeout error had before parla covered every stall
HubStoppedAnswering = HubStalled


class HubGaveUp(BaseException):
    """A request that kept failing (``response`` holds the Hub's last answer, if any) and is
    not sent again: ``reason`` why it failed, ``retried`` what was tried."""

    def __init__(self, reason: str, retried: str, response: Any = None) -> None:
        super().__init__(f"{reason}{retried}")
        self.reason, self.retried, self.response = reason, retried, response


def retry_seconds() -> float:
    text = os.environ.get("PARLA_HUB_RETRY_S")
    try:
        return float(text) if text else RETRY_S
    except ValueError:
        raise UsageError(f"PARLA_HUB_RETRY_S={text!r} is not a number of seconds") from None


class _Budget:
    """Seconds left for waiting to retry, for every request of one run together."""

    def __init__(self) -> None:
        self.cap, self.waited = RETRY_S, 0.0

    def reset(self) -> None:
        self.cap, self.waited = retry_seconds(), 0.0

    @property
    def left(self) -> float:
        return self.cap - self.waited


_budget = _Budget()


def reset_retries() -> None:
    """A new run: the whole PARLA_HUB_RETRY_S again."""
    _budget.reset()


def retry_wait(status: int | None, headers: Any, retries: int) -> float:
    """The wait before retry number ``retries + 1``: the Hub's Retry-After (in seconds), else
    doubling from 1 s, at most `MAX_WAIT_S`."""
    value = headers.get("Retry-After") if status is not None and headers is not None else None
    if value is not None and str(value).strip().isdigit():
        return float(value)
    return min(2.0 ** retries, MAX_WAIT_S)


def _doing(request: Any) -> str:
    path = request.url.path
    for part, label in _LABELS:
        if part in path:
            return label
    return f"{request.method} {path}"


def _changes_the_repo(request: Any) -> bool:
    return request.method == "POST" and "/commit/" in request.url.path


def _seconds(value: float) -> str:
    return f"{value:.3g}"


def _why_not_again(request: Any, httpx: Any, retries: int, wait: float, may_have_acted: bool
                   ) -> str | None:
    """Why a failed request is not sent again (None: it is, after ``wait``)."""
    tried = (f", retried {retries} time{'' if retries == 1 else 's'} over "
             f"{_seconds(_budget.waited)} s" if retries else "")
    if may_have_acted and _changes_the_repo(request):
        return f"{tried}; not sent again, as the Hub may have acted on it"
    if not isinstance(request.stream, httpx.ByteStream):
        return f"{tried}; not sent again (its body cannot be replayed)"
    if retries >= MAX_RETRIES:
        return tried
    if wait > _budget.left:
        return (f"{tried}; waiting {_seconds(wait)} s more would pass the "
                f"{_seconds(_budget.cap)} s of retries PARLA_HUB_RETRY_S allows")
    return None


def _stalled(error: BaseException, httpx: Any, request: Any) -> HubStalled:
    timeouts = request.extensions.get("timeout") or {}
    if isinstance(error, httpx.ConnectTimeout):
        return HubStalled("took no connection", f"none within {timeouts.get('connect'):g} s")
    if isinstance(error, httpx.WriteTimeout):
        return HubStalled("stopped reading what parla sent",
                          f"nothing taken for {timeouts.get('write'):g} s; PARLA_HUB_TIMEOUT "
                          "sets the wait")
    if isinstance(error, httpx.PoolTimeout):
        return HubStalled("left no connection free",
                          f"none within {timeouts.get('pool'):g} s; PARLA_HUB_TIMEOUT sets "
                          "the wait")
    return HubStalled("stopped answering", f"no reply within {timeouts.get('read'):g} s; "
                                           "PARLA_HUB_TIMEOUT sets the wait")


@contextlib.contextmanager
def _counted_body(request: Any, httpx: Any) -> Iterator[None]:
    """Send a large body in pieces, with a bar of the bytes sent (a stall then shows where)."""
    stream = request.stream
    if not isinstance(stream, httpx.ByteStream) or len(request.content) < BAR_MIN_BYTES:
        yield
        return
    body = request.content
    bar = progress(desc=f"sending to the Hub ({_doing(request)})", total=len(body), unit="B",
                   unit_scale=True, leave=False,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B of {total_fmt}B "
                              "[{elapsed}<{remaining}, {rate_fmt}]")

    class Pieces(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for start in range(0, len(body), CHUNK_BYTES):
                piece = body[start:start + CHUNK_BYTES]
                yield piece
                bar.update(len(piece))

    request.stream = Pieces()
    try:
        yield
    finally:
        request.stream = stream
        bar.close()


def _attempt(inner: Any, request: Any, httpx: Any) -> tuple[Any, BaseException | None]:
    """(the Hub's response, None) or (None, the dropped connection); a stall raises."""
    try:
        with _counted_body(request, httpx):
            return inner.handle_request(request), None
    except httpx.TimeoutException as error:
        raise _stalled(error, httpx, request) from None
    except (httpx.NetworkError, httpx.RemoteProtocolError) as error:
        return None, error


def send(inner: Any, request: Any, httpx: Any) -> Any:
    """``inner.handle_request(request)``, retried as the module docstring says."""
    retries = 0
    while True:
        response, dropped = _attempt(inner, request, httpx)
        if response is not None and response.status_code not in RETRY_STATUSES:
            return response
        if response is not None:
            status = response.status_code
            reason = f"the Hub answered HTTP {status}"
            may_have_acted = status not in REFUSED_STATUSES
            wait = retry_wait(status, response.headers, retries)
        else:
            first = (str(dropped).strip().splitlines() or [type(dropped).__name__])[0]
            reason = f"the connection to the Hub at {hub_endpoint()} dropped ({first})"
            may_have_acted = not isinstance(dropped, httpx.ConnectError)
            wait = retry_wait(None, None, retries)
        why_not = _why_not_again(request, httpx, retries, wait, may_have_acted)
        if why_not is not None:
            if response is not None:
                response.read()
                response.close()
            raise HubGaveUp(reason, why_not, response) from None
        if response is not None:
            response.close()
        retries += 1
        log.warning("%s while %s; retrying in %s s, %d of %d", reason, _doing(request),
                    _seconds(wait), retries, MAX_RETRIES)
        _budget.waited += wait
        _sleep(wait)


def _with_timeouts(request: Any, timeout: Any) -> None:
    """Every request times out, even one that huggingface_hub sends with ``timeout=None``."""
    given = request.extensions.get("timeout") or {}
    defaults = timeout.as_dict()
    request.extensions["timeout"] = {key: given.get(key) if given.get(key) is not None
                                     else defaults[key] for key in defaults}


_factory_timeout: float | None = None
_factory: Any = None  # the client factory this module installed last


def use_timeouts() -> None:
    """Make huggingface_hub's shared HTTP client (and hf_xet's) time out and retry as above."""
    global _factory_timeout, _factory
    timeout = read_timeout()
    connect = min(CONNECT_TIMEOUT_S, timeout)
    xet_timeouts(connect, timeout, retry_seconds())
    # the download side installs a client of its own (endpoint.use_timeouts): reinstall ours
    # when it is not the one in place
    if _factory_timeout == timeout and factory_in_place(_factory):
        return
    found = hub_http()
    if found is None:
        return  # huggingface_hub < 1 (requests): it sets its own timeouts
    _http, httpx = found
    limits = httpx.Timeout(timeout, connect=connect)

    class HubTransport(httpx.BaseTransport):
        def __init__(self) -> None:
            self._inner = httpx.HTTPTransport()

        def handle_request(self, request: Any) -> Any:
            _with_timeouts(request, limits)
            if request.url.path.startswith(_BEST_EFFORT_PATHS):
                return self._inner.handle_request(request)
            return send(self._inner, request, httpx)

        def close(self) -> None:
            self._inner.close()

    def client_factory() -> Any:
        return httpx.Client(event_hooks={"request": [_http.hf_request_event_hook]},
                            follow_redirects=True, transport=HubTransport(), timeout=limits)

    _http.set_client_factory(client_factory)
    _factory_timeout, _factory = timeout, client_factory


