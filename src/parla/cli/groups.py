"""`parla groups` and the grouping flags it shares with prepare (and run)."""

from __future__ import annotations

import argparse
from typing import Any

from parla.cli.flags import _flag
from parla.options import GROUP_BY, PrepareOptions


def add_grouping_arguments(group: Any, defaults: PrepareOptions) -> None:
    _flag(group, "language", metavar="LOCALE",
          help="Common Voice locale (es, cy, pt-BR): its text rules and built-in groups "
               "(default: from the release folder's name, e.g. .../es, or a dataset's, "
               "cv_23_ca_central; else ca)")
    _flag(group, "group_by", choices=GROUP_BY,
          help="find the groups in the rows: the `variant` column, the free-text `accents` "
               "(split on '|'; a row joins the one group among its parts, see `parla groups`), "
               "or none (one group). Default: each source's name, else its rows' accents/"
               "variant matched against --groups or the language's built-in groups (ca: the "
               "seven Catalan dialects)")
    _flag(group, "groups", metavar="FILE",
          help="groups file (TOML or YAML): group id -> display_name, voice_name (the text "
               "prefix), aliases and the accent strings it absorbs (src/parla/presets/ca.toml "
               "is the Catalan one)")
    _flag(group, "min_group_clips", type=int, default=defaults.min_group_clips,
          help="leave out groups with fewer clips; their rows are rejects (small_group) "
               "(default %(default)s)")


def add_groups_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="+", metavar="SOURCE",
                        help="sources, as prepare's --datasets (a raw Common Voice release "
                             "folder, a Hub-layout folder, ...)")
    defaults = PrepareOptions(datasets=("x",), output_dir="x")
    add_grouping_arguments(parser.add_argument_group("groups and language"), defaults)
    _flag(parser, "cache_dir", help="datasets cache folder for Hub/local sources")


def _cmd_groups(args: argparse.Namespace) -> int:
    from parla.stages.groups import group_table

    options = PrepareOptions(datasets=tuple(args.datasets), output_dir="-", dry_run=True,
                             language=args.language, group_by=args.group_by, groups=args.groups,
                             min_group_clips=args.min_group_clips, cache_dir=args.cache_dir)
    print(group_table(options).format())
    return 0
