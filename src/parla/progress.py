"""Logging and progress bars, with one switch to silence bars (``--quiet`` /
PARLA_DISABLE_PROGRESS)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

_LOGGER_NAME = "parla"
_bars_disabled = False


def get_logger(name: str | None = None) -> logging.Logger:
    return logging.getLogger(_LOGGER_NAME if name is None else f"{_LOGGER_NAME}.{name}")


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is logged, not as it was when the handler
    was made: test runners and notebooks swap the stream, and a handler holding the old one
    writes into a closed file."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Set up parla's log format once (the CLI calls this; library users may not)."""
    logger = logging.getLogger(_LOGGER_NAME)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[parla %(levelname)s] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    global _bars_disabled
    _bars_disabled = quiet  # each command says afresh (an earlier -q in this process does not)


def disable_progress_bars() -> None:
    global _bars_disabled
    _bars_disabled = True


def bars_disabled() -> bool:
    return _bars_disabled or os.environ.get("PARLA_DISABLE_PROGRESS", "") not in ("", "0")


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None,
             unit: str = "rows", **kwargs: Any) -> tqdm:
    """A tqdm bar that honours the global off switch."""
    disable = kwargs.pop("disable", False) or bars_disabled()
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable,
                dynamic_ncols=True, **kwargs)
