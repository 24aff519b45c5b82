#!/usr/bin/env python
"""Drop-in for the original ``tokenize_with_snac_multiprocess.py``: runs ``parla tokenize``.

Accepts the original flags (``--input_dir --output_dir --num_gpu_workers --snac_model
--queue_size --batch_size``) and every ``parla tokenize`` flag. ``--queue_size`` and
``--batch_size`` are accepted for old command lines but have no effect: parla sizes its batches
in audio seconds (``--batch_seconds``, automatic from free GPU memory) and decodes ahead of the
GPU on its own. The input is a ``parla prepare`` folder; the output has the same configs with
``input_ids``/``labels``/``attention_mask`` and the SNAC codes as ``codes_0..2``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from parla.cli import _common, _flag, _Parser, add_tokenize_arguments, tokenize_options_from_args
from parla.failures import run_command
from parla.progress import configure_logging, get_logger


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokenize_with_snac_multiprocess.py",
                     description="Encode a prepared corpus with SNAC into Orpheus input_ids "
                                 "(runs `parla tokenize`).")
    add_tokenize_arguments(parser)
    old = parser.add_argument_group("accepted for old command lines (no effect)")
    _flag(old, "queue_size", type=int, help="size of the original's sample queue")
    _flag(old, "batch_size", type=int, help="clips per batch in the original; see --batch_seconds")
    _common(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from parla.stages.tokenize import tokenize

    def command() -> int:
        args = build_parser().parse_args(argv)
        configure_logging(verbose=args.verbose, quiet=args.quiet)
        ignored = [f"--{name}" for name in ("queue_size", "batch_size")
                   if getattr(args, name) is not None]
        if ignored:
            get_logger("tokenize").info("%s accepted for compatibility and ignored; batches are "
                                        "sized by --batch_seconds", " and ".join(ignored))
        tokenize(tokenize_options_from_args(args))
        return 0

    return run_command("tokenize_with_snac_multiprocess.py", command)


if __name__ == "__main__":
    sys.exit(main())
