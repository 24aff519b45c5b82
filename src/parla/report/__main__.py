"""`python -m parla.report FOLDER`: (re)build report.html of a prepared folder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from parla.report.build import SAMPLES_PER_DIALECT, read_prepared_folder, write_report


def _local_sources(folder: Path) -> list[str]:
    """The local source folders prepare read that exist here (raw CV releases): recorded in the
    folder's hidden sources file (the card names them without their paths); a folder written
    before that file existed has them in its card's parameters."""
    import json

    from parla.card.render import read_card_state
    from parla.store.layout import CARD_FILE, SOURCES_FILE

    recorded, card = folder / SOURCES_FILE, folder / CARD_FILE
    if recorded.is_file():
        specs = json.loads(recorded.read_text(encoding="utf-8")).get("datasets") or []
    else:
        state = read_card_state(card.read_text(encoding="utf-8")) if card.is_file() else None
        specs = (state[1].get("datasets") or []) if state else []
    found = []
    for spec in specs:
        location = str(spec).split("=", 1)[-1]
        if Path(location).is_dir():
            found.append(location)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    from parla.failures import run_command

    parser = argparse.ArgumentParser(prog="python -m parla.report",
                                     description="(Re)build report.html of a prepared folder.")
    parser.add_argument("folder", help="a folder written by parla prepare")
    parser.add_argument("--sources", nargs="*", default=None, metavar="DIR",
                        help="folders holding the original clips (default: the local sources "
                             "named in the folder's dataset card)")
    parser.add_argument("--samples", type=int, default=SAMPLES_PER_DIALECT,
                        help="sample clips per dialect (default %(default)s)")
    args = parser.parse_args(argv)

    def command() -> int:
        from parla.store.urls import as_path

        folder = as_path(args.folder)  # a local folder, or a URL (credentials from the env)
        sources = args.sources if args.sources is not None else _local_sources(folder)
        data = read_prepared_folder(folder, sources, args.samples)
        path = write_report(folder, data["statistics"], data["clips"], data["rejects"],
                            data["samples"])
        print(f"wrote {path}")
        return 0

    return run_command("parla report", command)


if __name__ == "__main__":
    sys.exit(main())
