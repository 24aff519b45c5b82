"""The flag spellings every parla command shares: underscores and dashes, --x / --no_x pairs."""

from __future__ import annotations

import argparse
from typing import Any

from parla.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--max_dur 5` must not mean --max_duration
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse's own errors: same one-line form, exit 2
        raise UsageError(message)


def _flag(parser: argparse.ArgumentParser | Any, name: str, **kwargs: Any) -> None:
    """Add ``--name_with_underscores`` and its ``--dashed-spelling`` as one option."""
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    kwargs.setdefault("dest", name)
    parser.add_argument(*spellings, **kwargs)


def _bool_flag(parser: argparse.ArgumentParser | Any, name: str, default: bool, help: str) -> None:
    """``--name`` / ``--no_name`` pair."""
    group = parser.add_mutually_exclusive_group()
    _flag(group, name, action="store_true", default=default, help=help)
    _flag(group, f"no_{name}", action="store_false", dest=name, help=argparse.SUPPRESS)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars, warnings only")
