#!/usr/bin/env python
"""Drop-in for the original ``prepare_by_dialect.py``: runs ``parla prepare`` with its flags.

Every original flag is accepted verbatim (``--datasets … --output_dir --target_sample_rate
--min_duration --max_duration --samples_per_dialect --min_samples_per_speaker
--balance_speakers --max_samples_per_speaker --save_speaker_metadata --num_workers``), and so is
every other ``parla prepare`` flag. One difference in defaults is undone here so that old command
lines keep their meaning: the original balanced speakers only when ``--balance_speakers`` was
given, while ``parla prepare`` balances by default.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from parla.cli import main as parla_main

BALANCE_FLAGS = ("--balance_speakers", "--balance-speakers", "--no_balance_speakers",
                 "--no-balance-speakers")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(arg in BALANCE_FLAGS for arg in args):
        args.append("--no_balance_speakers")  # the original kept every clip unless asked
    return parla_main(["prepare", *args])


if __name__ == "__main__":
    sys.exit(main())
