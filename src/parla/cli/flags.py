"""The flag spellings every parla command shares: underscores and dashes, --x / --no_x pairs."""

from __future__ import annotations

import argparse
import difflib
from typing import Any

from parla.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--max_dur 5` must not mean --max_duration
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse's own errors: same one-line form, exit 2
        raise UsageError(message)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # name the command, and the flag it has that was probably meant
            command = getattr(parsed, "command", None)
            known = [o for a in _subparser(self, command)._actions for o in a.option_strings]
            near = [m for e in extras if e.startswith("-") for m in
                    difflib.get_close_matches(e.split("=")[0], known, n=1, cutoff=0.75)]
            where = f" for `{self.prog} {command}`" if command else ""
            raise UsageError(f"unrecognized arguments{where}: {' '.join(extras)}"
                             + (f" (did you mean {', '.join(near)}?)" if near else ""))
        return parsed


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


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
                        help="no progress bars, summary table or hints: warnings, errors and "
                             "the one line saying what was written")


def add_storage_arguments(group: Any, lock: bool = True) -> None:
    """--storage_options (and --break_lock for a stage that writes): for paths given as URLs."""
    _flag(group, "storage_options", metavar="JSON",
          help="fsspec options for s3://, gs://, az:// paths, as a JSON object (e.g. "
               '\'{"endpoint_url": "http://localhost:9000"}\'); credentials come from the '
               "store's usual chain (environment variables, profiles) and are never printed")
    if lock:
        _flag(group, "break_lock", action="store_true",
              help="take over the lock of another run on an object-store output at once "
                   "(by default a crashed run's lock is taken over once it expires)")
