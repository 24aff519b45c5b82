"""Where the Hugging Face Hub is, whether it answers, and how long parla waits for it.

Read at call time, not at import: huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``
once when it is imported. Both the download side (sources, models) and the Hub client use this;
it holds no client of its own.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

from parla.errors import UsageError

# huggingface_hub 2 talks to the Hub with no timeout at all: a Hub that accepts a request and
# never answers would hang a download or `parla publish` for ever. PARLA_HUB_TIMEOUT (seconds)
# overrides the read timeout, for slow links; connecting and the reachability probe stay short.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 1.5


def hub_offline(datasets: bool = False) -> bool:
    """Whether offline mode is on: ``HF_HUB_OFFLINE`` read now, or huggingface_hub's copy of it
    (and, with ``datasets``, the datasets library's copy, which `load_dataset` obeys)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    if datasets:
        import datasets.config

        return bool(datasets.config.HF_HUB_OFFLINE)
    return False


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` read now (huggingface_hub reads it only once, at import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def read_timeout() -> float:
    try:
        return float(os.environ.get("PARLA_HUB_TIMEOUT") or READ_TIMEOUT_S)
    except ValueError:
        raise UsageError(f"PARLA_HUB_TIMEOUT={os.environ['PARLA_HUB_TIMEOUT']!r} is not a "
                         "number of seconds") from None


_factory_timeout: float | None = None
_factory: Any = None  # the client factory this module installed last
# sees every request while set (store.hub_download bounds the downloads of a Hub dataset with it):
# an object whose ``send(transport, request)`` sends the request and returns the response
_watch: Any = None


@contextlib.contextmanager
def watching_requests(watch: Any) -> Iterator[None]:
    """Every request of huggingface_hub's shared client goes through ``watch.send`` meanwhile."""
    global _watch
    previous, _watch = _watch, watch
    try:
        yield
    finally:
        _watch = previous


class HubStoppedAnswering(Exception):
    """The Hub stopped answering a request (not one of the HTTP client's own errors, so
    huggingface_hub does not send it again); `store.hub_requests.HubGaveUp` is one."""


def use_timeouts() -> None:
    """Make huggingface_hub's shared HTTP client time out (connect, then each read)."""
    global _factory_timeout, _factory
    timeout = read_timeout()
    # downloads try a request 4 times (store.hub_requests): hf_xet's transfers get as long
    xet_timeouts(min(CONNECT_TIMEOUT_S, timeout), timeout, 4 * timeout)
    # the publish side installs a client of its own (hub.transport): reinstall ours when it is
    # not the one in place
    if _factory_timeout == timeout and factory_in_place(_factory):
        return
    found = hub_http()
    if found is None:
        return  # huggingface_hub < 1 (requests): it sets its own timeouts
    _http, httpx = found

    class WatchedTransport(httpx.BaseTransport):
        """Each request goes through the watch while one is set (a Hub dataset's download,
        `store.hub_download`); otherwise it is sent as it is, under these timeouts. Uploads
        have their own transport (`hub.transport`)."""

        def __init__(self) -> None:
            self._inner = httpx.HTTPTransport()

        def handle_request(self, request: Any) -> Any:
            watch = _watch
            if watch is not None:
                return watch.send(self._inner, request)
            return self._inner.handle_request(request)

        def close(self) -> None:
            self._inner.close()

    def client_factory() -> Any:
        return httpx.Client(event_hooks={"request": [_http.hf_request_event_hook]},
                            follow_redirects=True, transport=WatchedTransport(),
                            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S))

    _http.set_client_factory(client_factory)
    _factory_timeout, _factory = timeout, client_factory


def hub_http() -> tuple[Any, Any] | None:
    """huggingface_hub's HTTP module and the httpx it sends with (httpx2 in huggingface_hub 2),
    or None for huggingface_hub < 1, which has no client factory to set."""
    from huggingface_hub.utils import _http

    if not hasattr(_http, "set_client_factory"):
        return None
    try:
        return _http, importlib.import_module("httpx2")
    except ImportError:
        return _http, importlib.import_module("httpx")


def factory_in_place(factory: Any) -> bool:
    """Whether ``factory`` is the client factory huggingface_hub builds its client with now."""
    from huggingface_hub.utils import _http

    return factory is not None and getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) is factory


def xet_timeouts(connect: float, timeout: float, retry_s: float) -> None:
    """hf_xet (the Hub's file transfer) has its own client: the same connect and read timeouts
    and a retry budget, unless set already (read when its session starts)."""
    for name, seconds in (("HF_XET_CLIENT_CONNECT_TIMEOUT", connect),
                          ("HF_XET_CLIENT_READ_TIMEOUT", timeout),
                          ("HF_XET_CLIENT_RETRY_MAX_DURATION", retry_s)):
        os.environ.setdefault(name, f"{max(1, math.ceil(seconds))}s")


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be reached now, or None if it can (or a proxy stands in the way).

    One TCP connection, answered in about a second: offline, the HTTP clients' own retries take
    25 s or more before they give up.
    """
    from urllib.parse import urlsplit

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                            "http_proxy", "ALL_PROXY", "all_proxy")):
        return None  # only the proxy knows
    url = urlsplit(hub_endpoint())
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error.strerror or str(error) or type(error).__name__)

    thread = threading.Thread(target=connect, daemon=True, name="parla-hub-probe")
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer in {timeout:g} s"
