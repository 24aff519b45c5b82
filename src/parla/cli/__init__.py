"""Command line: ``parla prepare | groups | tokenize | publish | run | demo``.

Every flag is accepted with underscores (as the original scripts spelled them) and with dashes.
Flags map one to one onto the stage's options dataclass. Every failure is one line on stderr and
an exit code (`EXIT_CODES_HELP`): 2 bad input, 1 environment, 130 SIGINT, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from parla.cli.flags import _bool_flag, _common, _flag, _Parser, add_storage_arguments
from parla.cli.groups import _cmd_groups, add_grouping_arguments, add_groups_arguments
from parla.errors import Terminated
from parla.failures import EXIT_INTERRUPTED, EXIT_TERMINATED, one_line, run_command
from parla.options import (
    ENGINES,
    RESAMPLERS,
    SELECT_BY,
    VAD_BACKENDS,
    ConditioningOptions,
    PrepareOptions,
    TokenizeOptions,
)
from parla.progress import configure_logging
from parla.stages.result import StageResult
from parla.store.layout import REJECTS_FILE

EXIT_CODES_HELP = ("exit codes: 0 done; 1 the environment failed (disk full, a file that cannot be "
                   "written, network, the Hub); 2 bad input (arguments, sources, options); 130 "
                   "interrupted (Ctrl-C); 143 terminated (SIGTERM). Finished work is kept: run "
                   "the same command again to resume.")


# --- prepare ---------------------------------------------------------------------------------

def add_prepare_arguments(parser: argparse.ArgumentParser, require_sources: bool = True) -> None:
    defaults = PrepareOptions(datasets=("x",), output_dir="x")
    _add_prepare_io(parser.add_argument_group("input and output"), defaults, require_sources)
    add_grouping_arguments(parser.add_argument_group("groups (one config each) and language"),
                           defaults)
    _add_selection(parser.add_argument_group("selection (before any audio is decoded)"), defaults)
    _add_audio(parser.add_argument_group("audio"), defaults)
    _add_conditioning(parser.add_argument_group("conditioning (TTS-grade clean-up)"),
                      ConditioningOptions())
    _add_quality(parser.add_argument_group("quality scores (the parla[quality] extra)"))


def _add_prepare_io(io: Any, defaults: PrepareOptions, require_sources: bool) -> None:
    _flag(io, "datasets", nargs="+", required=require_sources, metavar="SOURCE",
          help="sources: Hub dataset ids (xaviviro/cv_23_ca_central), local Hub-layout or "
               "save_to_disk folders, or a raw Common Voice release folder (validated.tsv + "
               "clips/, split into dialects by its accents column). Prefix NAME=SOURCE to set "
               "the dialect explicitly.")
    _flag(io, "output_dir", required=require_sources, help="folder to write (Hub layout)")
    _flag(io, "overwrite", action="store_true", help="replace a non-empty output folder")
    _flag(io, "cache_dir", help="datasets cache folder for Hub/local sources (Hub downloads go "
                                "to its hub/ folder; default: the Hugging Face cache)")
    _flag(io, "allow_stale_cache", action="store_true",
          help="a Hub dataset the Hub no longer serves (404, or 401/403: deleted, renamed, "
               "private) is read from its cached copy, if there is one, instead of failing")
    _flag(io, "rows_per_shard", type=int, default=defaults.rows_per_shard,
          help="rows per output parquet shard, the unit of work and of resume "
               "(default %(default)s)")
    _flag(io, "save_speaker_metadata", action="store_true",
          help="also write speaker_metadata.json")
    _flag(io, "dry_run", action="store_true",
          help="print the counts after each selection step and write nothing")
    add_storage_arguments(io)


def _add_selection(sel: Any, defaults: PrepareOptions) -> None:
    _flag(sel, "min_duration", type=float, default=defaults.min_duration,
          help="shortest clip kept, seconds (default %(default)s)")
    _flag(sel, "max_duration", type=float, default=defaults.max_duration,
          help="longest clip kept, seconds (default %(default)s)")
    _flag(sel, "min_up_votes", type=int, help="drop clips with fewer up votes")
    _flag(sel, "max_down_votes", type=int, help="drop clips with more down votes")
    _flag(sel, "min_samples_per_speaker", type=int, default=defaults.min_samples_per_speaker,
          help="drop speakers with fewer clips (default %(default)s)")
    _bool_flag(sel, "balance_speakers", defaults.balance_speakers,
               "cap clips per speaker at --max_samples_per_speaker (default on; "
               "--no_balance_speakers to keep all)")
    _flag(sel, "max_samples_per_speaker", type=int, default=defaults.max_samples_per_speaker,
          help="clips kept per speaker when balancing (default %(default)s)")
    _flag(sel, "samples_per_dialect", type=int, help="cap on clips per dialect")
    _flag(sel, "select_by", choices=SELECT_BY, default=defaults.select_by,
          help="which of a speaker's clips fill its quota: random (the first clips in seeded "
               "order that pass every check; a rejected clip is replaced by the next) or "
               "quality (every candidate is decoded and scored, the best kept: DNSMOS with "
               "--dnsmos, else SNR; slower) (default %(default)s)")
    _flag(sel, "max_candidates_per_speaker", type=int,
          help="clips of one speaker considered at most: spares that replace rejected clips, "
               "or what --select_by quality decodes and ranks (default: twice "
               "--max_samples_per_speaker)")
    _flag(sel, "validation_fraction", type=float, default=defaults.validation_fraction,
          help="share of each dialect's speakers held out in its validation split "
               "(default %(default)s)")
    _flag(sel, "seed", type=int, default=defaults.seed, help="seed of every random choice")


def _add_audio(aud: Any, defaults: PrepareOptions) -> None:
    _flag(aud, "target_sample_rate", type=int, default=defaults.target_sample_rate,
          help="output sample rate (default %(default)s)")
    _flag(aud, "resampler", choices=RESAMPLERS, default=defaults.resampler,
          help="auto (default): mpg123 where the libmpg123 library is installed, else soxr. "
               "mpg123 decodes 48 kHz MP3 straight to 24 kHz (its subband synthesis; the "
               "fastest, docs/QUALITY.md compares it), soxr resamples the decoded audio (high "
               "quality), scipy is the polyphase filter of the original scripts")
    _flag(aud, "num_workers", type=int, help="worker processes (default: every core)")
    _flag(aud, "engine", choices=ENGINES, default="local", help="local processes or a Ray cluster")


def _add_conditioning(con: Any, cond: ConditioningOptions) -> None:
    _bool_flag(con, "condition_audio", cond.condition_audio,
               "run the audio steps below (default on). --no_condition_audio switches trimming, "
               "loudness and every quality reject off at once: about 1.8x faster, for drafts")
    _bool_flag(con, "trim_silence", cond.trim_silence,
               "trim leading/trailing non-speech (default on; --no_trim_silence)")
    _flag(con, "keep_silence_ms", type=float, default=cond.keep_silence_ms,
          help="silence kept on each side when trimming (default %(default)s)")
    _flag(con, "vad", choices=VAD_BACKENDS, default=cond.vad,
          help="speech detector: silero (needs torch and the silero-vad package: pip install "
               "silero-vad) or energy; auto picks silero if both are installed")
    _bool_flag(con, "loudness_norm", cond.loudness_norm,
               "normalise loudness to --target_lufs (default on; --no_loudness_norm)")
    _flag(con, "target_lufs", type=float, default=cond.target_lufs,
          help="loudness target, LUFS (default %(default)s)")
    _flag(con, "true_peak_db", type=float, default=cond.true_peak_db,
          help="true-peak ceiling after loudness normalisation, dBTP (default %(default)s)")
    _flag(con, "max_clipped_fraction", type=float, default=cond.max_clipped_fraction,
          help="reject clips with more samples at full scale (default %(default)s)")
    _flag(con, "min_snr_db", type=float, default=cond.min_snr_db,
          help="reject clips with a lower estimated SNR (default %(default)s)")
    _flag(con, "min_chars_per_sec", type=float, default=cond.min_chars_per_sec,
          help="reject slower speech: audio probably not matching its text (default %(default)s)")
    _flag(con, "max_chars_per_sec", type=float, default=cond.max_chars_per_sec,
          help="reject faster speech (default %(default)s)")
    _bool_flag(con, "reject_foreign_text", cond.reject_foreign_text,
               "reject sentences with characters their language's rules refuse (ca: outside "
               "Catalan's alphabet and punctuation; others: symbols and control characters) "
               "(default on)")
    _bool_flag(con, "normalize_text", cond.normalize_text,
               "Unicode NFC, uniform quotes/apostrophes, collapsed spaces (default on)")


def _add_quality(qual: Any) -> None:
    _flag(qual, "dnsmos", action="store_true",
          help="score every kept clip with DNSMOS (dnsmos_sig/bak/ovrl; about 1.5 s of one CPU "
               "core per Common Voice clip, docs/QUALITY.md)")
    _flag(qual, "min_dnsmos", type=float,
          help="reject clips whose overall DNSMOS is lower (reason low_dnsmos; needs --dnsmos)")


def _fields(cls: type, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The options a stage's flags map onto: every field of its dataclass (one flag each)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)


_CONDITIONING_FIELDS = _fields(ConditioningOptions)
_PREPARE_FIELDS = _fields(PrepareOptions, skip=("conditioning",))


def prepare_options_from_args(args: argparse.Namespace) -> PrepareOptions:
    conditioning = ConditioningOptions(**{k: getattr(args, k) for k in _CONDITIONING_FIELDS})
    values = {k: getattr(args, k) for k in _PREPARE_FIELDS}
    return PrepareOptions(**values, conditioning=conditioning)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from parla.stages.prepare import prepare

    _print_prepared(prepare(prepare_options_from_args(args)), args.quiet)
    return 0


def _print_prepared(result: StageResult, quiet: bool) -> None:
    """What prepare did: the selection counts of a dry run, or the summary table and where."""
    from parla.report.statistics import format_counts_table, format_summary

    if result.dry_run:  # each dialect's selection steps
        for dialect, entry in result.statistics["dialects"].items():
            print(format_counts_table(f"{dialect} (dry run: nothing written)", entry["steps"]))
        return
    if not quiet:
        print(format_summary(result.statistics))
    print(f"wrote {result.output} in {result.seconds:.1f} s (rejects: "
          f"{result.statistics['total']['rejected']} in {result.output_dir / REJECTS_FILE})")


# --- demo ------------------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> int:
    from parla.demo import load_hint
    from parla.stages.prepare import run_demo

    result = run_demo(args.output_dir, overwrite=args.overwrite, num_workers=args.num_workers)
    _print_prepared(result, args.quiet)
    if not args.quiet:
        print(load_hint(args.output_dir, result.output_dir.resolve()))
    return 0


# --- tokenize / publish / run (filled in by their stages) ------------------------------------

def add_tokenize_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    _flag(io, "input_dir", required=True, help="a prepared corpus (output of prepare)")
    _flag(io, "output_dir", required=True,
          help="folder to write (same configs and shard names as the input); a rerun resumes")
    _flag(io, "overwrite", action="store_true", help="redo every shard instead of resuming")
    add_storage_arguments(io)
    add_tokenize_settings(parser, io)
    _flag(io, "seed", type=int, default=TokenizeOptions("in", "out").seed,
          help="seed of the example order in the `packed` config (default %(default)s; "
               "`parla run` uses prepare's --seed)")
    _flag(parser, "engine", choices=ENGINES, default=TokenizeOptions("in", "out").engine,
          help="local processes or a Ray cluster")


def add_tokenize_settings(parser: argparse.ArgumentParser, group: Any) -> None:
    """The tokenize flags shared by `parla tokenize` and `parla run --tokenize`."""
    defaults = TokenizeOptions(input_dir="in", output_dir="out")
    _flag(group, "configs", nargs="+", metavar="CONFIG",
          help="configs to tokenize (default: every config of the input; each clip is stored, "
               "and encoded, once). `all` names every dialect")
    _flag(group, "format", choices=("orpheus", "codes"), default=defaults.format,
          help="orpheus: input_ids/labels/attention_mask plus the codes; codes: SNAC codes only "
               "(default %(default)s)")
    _bool_flag(group, "dedupe_frames", defaults.dedupe_frames,
               "drop a frame whose first code repeats the last kept frame's, as Orpheus's data "
               "preparation (default on; --no_dedupe_frames to keep every frame)")
    _flag(group, "max_length", type=int, default=defaults.max_length,
          help="skip (and count) rows whose sequence is longer; never truncated. A second "
               "of speech is about 83 audio tokens, plus the text (default %(default)s)")
    _flag(group, "pack_length", type=int, metavar="N",
          help="also write the `packed` config (train and validation): whole examples "
               "concatenated into rows of exactly N tokens, padded and masked, for batches "
               "larger than 1 (e.g. 2048 or 8192; see docs/TRAINING.md)")

    mod = parser.add_argument_group("models")
    _flag(mod, "snac_model", default=defaults.snac_model,
          help="SNAC Hub id or local folder with config.json + pytorch_model.bin "
               "(default %(default)s)")
    _flag(mod, "text_tokenizer", default=defaults.text_tokenizer,
          help="Orpheus text tokenizer: Hub id, local folder or tokenizer.json "
               "(default %(default)s)")

    dev = parser.add_argument_group("devices")
    _flag(dev, "device", default=defaults.device,
          help="auto (every CUDA GPU, else the CPU), cpu, cuda or cuda:N (default %(default)s)")
    _flag(dev, "num_gpu_workers", type=int,
          help="GPUs to use (default: every visible GPU)")
    _flag(dev, "workers_per_gpu", type=int, default=defaults.workers_per_gpu,
          help="worker processes per GPU (default %(default)s)")
    _flag(dev, "num_cpu_workers", type=int, default=defaults.num_cpu_workers,
          help="worker processes when encoding on the CPU (default %(default)s)")
    _flag(dev, "batch_seconds", type=float,
          help="audio seconds per SNAC batch (default: from free GPU memory, or a quarter of "
               "the RAM on CPU; at most 600)")
    _flag(dev, "precision", default=defaults.precision, choices=("exact", "bf16"),
          help="exact: float32 with TF32 off, codes as one clip alone gives them (default); "
               "bf16: bfloat16 autocast, faster on a GPU, some codes differ (the first 4 "
               "clips of each shard are also encoded in float32, and the share of equal "
               "codes goes into the footers, tokenization_stats.json and the card)")
    _flag(dev, "torch_compile", action="store_true",
          help="run SNAC's encoder through torch.compile (a C compiler is needed; the first "
               "batch takes a while longer). Each worker encodes its first batch both ways and "
               "keeps the compiled encoder only when every code is the same; otherwise it "
               "warns and encodes eagerly")


_TOKENIZE_FIELDS = _fields(TokenizeOptions)


def tokenize_options_from_args(args: argparse.Namespace) -> TokenizeOptions:
    return TokenizeOptions(**{k: getattr(args, k) for k in _TOKENIZE_FIELDS})


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from parla.stages.tokenize import tokenize

    tokenize(tokenize_options_from_args(args))
    return 0


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="a prepared or tokenized output folder")
    _flag(parser, "repo_id", required=True, metavar="USER/NAME",
          help="dataset repo to upload to; created if missing. The token comes from HF_TOKEN or "
               "`hf auth login` and needs write access")
    _flag(parser, "private", action="store_true",
          help="create the repo private (an existing repo keeps its visibility)")
    _flag(parser, "revision", help="branch to upload to, created if missing (default: main)")
    _flag(parser, "commit_message", help="message of the upload commit(s)")
    _flag(parser, "num_workers", type=int,
          help="upload threads (huggingface_hub < 2 only; newer versions choose their own)")
    add_storage_arguments(parser, lock=False)
    parser.epilog = ("The dataset card (README.md) is regenerated from the data before the "
                     "upload. An interrupted or failed upload leaves the folder as it was: run "
                     "the same command again to finish it (files already uploaded are skipped).")


def _cmd_publish(args: argparse.Namespace) -> int:
    from parla.options import PublishOptions
    from parla.stages.publish import publish

    options = PublishOptions(folder=args.folder, repo_id=args.repo_id, private=args.private,
                             revision=args.revision, commit_message=args.commit_message,
                             num_workers=args.num_workers, storage_options=args.storage_options)
    try:
        url = publish(options).output
    except (KeyboardInterrupt, Terminated) as stop:
        how = "interrupted" if isinstance(stop, KeyboardInterrupt) else "terminated (SIGTERM)"
        print(one_line(f"parla: upload {how}; {options.folder} is intact: run `parla publish "
                       f"{options.folder} --repo_id {options.repo_id}` again to finish it"),
              file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED
    print(url)
    return 0


_RUN_EPILOG = """\
config file: the same options as the flags, named without the dashes, in TOML or YAML; flat or
grouped under [prepare] [tokenize] [publish]. Flags given on the command line override it.

  # run.toml                                  # run.yaml
  output_dir = "/workspace/data/processed"    output_dir: /workspace/data/processed
  max_samples_per_speaker = 50                max_samples_per_speaker: 50
  [publish]                                   publish:
  hf_repo = "user/cv_23_ca_distilled"           hf_repo: user/cv_23_ca_distilled

With --hf_repo the Hub login and write access are checked before anything is processed; the
token comes from HF_TOKEN or `hf auth login`. If the upload fails, the finished folder is kept:
`parla publish <folder> --repo_id ...` uploads it without redoing the processing."""


def _unset_defaults(parser: argparse.ArgumentParser, keep: tuple[str, ...]) -> None:
    """Make every option default to None, so a flag given explicitly can be told from one left
    out (the config file fills those); help texts keep showing the real defaults."""
    for action in parser._actions:
        if not action.option_strings or action.dest in keep:
            continue
        if action.help and "%(default)s" in action.help:
            action.help = action.help.replace("%(default)s", str(action.default))
        action.default = None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from parla.stages.run import DEFAULT_DATASETS, TOKENIZED_SUFFIX

    _flag(parser, "config", metavar="FILE",
          help="TOML or YAML file holding any of the options below (see the end of this help)")
    add_prepare_arguments(parser, require_sources=False)
    for action in parser._actions:
        if action.dest == "datasets":
            action.help += f" Default: the 7 Catalan datasets ({', '.join(DEFAULT_DATASETS)})."

    tok = parser.add_argument_group("tokenize (with --tokenize)")
    _bool_flag(tok, "tokenize", False,
               "encode the prepared corpus with SNAC into Orpheus input_ids (needs the "
               "parla[tokenize] extra; --no_tokenize overrides a config file)")
    _flag(tok, "tokenized_dir",
          help=f"where to write the tokenized corpus (default: <output_dir>{TOKENIZED_SUFFIX})")
    add_tokenize_settings(parser, tok)

    pub = parser.add_argument_group("publish (with --hf_repo)")
    _flag(pub, "hf_repo", metavar="USER/NAME",
          help="upload the run's final output (the tokenized corpus with --tokenize, else the "
               "prepared one) to this dataset repo, created if missing")
    _bool_flag(pub, "hf_private", False,
               "create the repo private (an existing repo keeps its visibility)")
    _flag(pub, "hf_revision", help="branch to upload to, created if missing (default: main)")
    _flag(pub, "hf_commit_message", help="message of the upload commit(s)")

    _unset_defaults(parser, keep=("help", "config"))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _RUN_EPILOG


def _cmd_run(args: argparse.Namespace) -> int:
    from parla.stages.run import build_run_options, load_config, run, run_option_types

    values = load_config(args.config) if args.config else {}
    known = run_option_types()
    given = {key: value for key, value in vars(args).items()
             if key in known and value is not None}
    # prepare's summary as soon as it is done: a later stage's failure must not hide it
    result = run(*build_run_options(values | given), on_step=lambda step: _print_prepared(
        step, args.quiet) if step.stage == "prepare" else None)
    published = result.step("publish")
    if published is not None:
        print(published.output)
    return 0


# --- entry point -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="parla",
        description="Build text-to-speech training corpora: prepare (filter, balance, resample) "
                    "-> tokenize (SNAC codes, Orpheus layout) -> publish (Hugging Face Hub).",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    commands = [
        ("prepare", "filter, balance and resample Common Voice dialect datasets to a Hub-layout "
                    "corpus", add_prepare_arguments, _cmd_prepare),
        ("groups", "list the groups (configs) prepare would make of a Common Voice release, "
                   "with their clips and speakers, and the rows it cannot place",
         add_groups_arguments, _cmd_groups),
        ("tokenize", "encode a prepared corpus with SNAC into Orpheus-ready input_ids",
         add_tokenize_arguments, _cmd_tokenize),
        ("publish", "upload a prepared or tokenized folder to the Hugging Face Hub",
         add_publish_arguments, _cmd_publish),
        ("run", "prepare -> tokenize -> publish in one command (defaults: the 7 Catalan datasets)",
         add_run_arguments, _cmd_run),
    ]
    for name, help_text, add_arguments, command in commands:
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command_parser)
        command_parser.epilog = "\n\n".join(filter(None, [command_parser.epilog,
                                                           EXIT_CODES_HELP]))
        _common(command_parser)
        command_parser.set_defaults(handler=command)
    demo = sub.add_parser("demo", help="prepare the embedded demo corpus (offline) and show how "
                                       "to load it",
                          description="Run prepare on the Common Voice-format demo corpus that "
                                      "ships with parla.")
    demo.add_argument("output_dir", nargs="?", default="parla_demo_output",
                      help="where to write (default %(default)s)")
    _flag(demo, "overwrite", action="store_true", help="replace an existing output folder")
    _flag(demo, "num_workers", type=int, help="worker processes (default: every core)")
    _common(demo)
    demo.epilog = EXIT_CODES_HELP
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("parla")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    def command() -> int:
        args = build_parser().parse_args(argv)
        configure_logging(verbose=args.verbose, quiet=args.quiet)
        return args.handler(args)

    return run_command("parla", command)


if __name__ == "__main__":
    sys.exit(main())
