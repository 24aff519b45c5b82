"""The tokenize stage: a prepared corpus -> SNAC codes -> Orpheus training sequences.

One output shard per input shard, same Hub layout and names, each written atomically with its
own statistics and rejects in the parquet footer; so a finished shard is complete and
self-describing, a rerun skips it (resume, even after ``kill -9``), and the stage's reports are
rebuilt from the shards, identical whether or not the run was interrupted.

Order of work: validate options, find the model and the tokenizer (UsageError before any data is
read), plan the shards not done yet, then one worker per device encodes whole shards
(`ShardTokenizer`). Per-row layout lives in `orpheus` (pure), the model in `codec`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from parla.card.names import public_location
from parla.dialects import ALL_CONFIG
from parla.errors import Reject, UsageError
from parla.extras import require_tokenize_extra
from parla.options import TokenizeOptions
from parla.progress import get_logger
from parla.report.statistics import write_rejects
from parla.stages.pack import update_packed
from parla.stages.result import StageResult
from parla.stages.runner import ShardStage, group_tasks, run_todo, trusted_records
from parla.stages.tokenize_worker import (
    CODE_COLUMNS,
    CONTEXT_LIMITS,
    ROWS_PER_CALL,
    GroupStats,
    ShardTokenizer,
    TokenizeTask,
    WorkerSettings,
)
from parla.store.files import remove_stale_tmp, remove_tree, write_json
from parla.store.layout import (
    CARD_FILE,
    PACKED_CONFIG,
    REJECTS_FILE,
    TOKENIZATION_STATS_FILE,
    TOKENIZE_STAGE,
)
from parla.store.lock import lock_folder
from parla.store.shards import (
    DATA_DIR,
    find_shards,
    shard_paths,
    shard_rows,
)
from parla.store.urls import as_path, check_reachable, is_remote, use_storage_options
from parla.tokens import orpheus
from parla.tokens.codec import (
    SnacFiles,
    TextTokenizer,
    resolve_snac,
    resolve_text_tokenizer,
)
from parla.tokens.precision import combined_agreement

log = get_logger("tokenize")

ORPHEUS_VQ_STRIDES = [4, 2, 1]


# --- planning ----------------------------------------------------------------------------------

_CUDA_DEVICE = re.compile(r"^cuda(:(\d+))?$")


def pick_devices(options: TokenizeOptions) -> tuple[tuple[str, ...], int]:
    """(devices, number of workers): one worker per GPU times --workers_per_gpu, or CPU workers."""
    import torch

    wanted = options.device
    if options.engine == "ray":  # the cluster's GPUs, not only this machine's
        from parla.engines.ray import cluster_gpus

        gpus = cluster_gpus()
    else:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wanted == "cpu" or (wanted == "auto" and gpus == 0):
        if wanted == "auto":
            log.warning("no CUDA GPU found: encoding on the CPU, which is far slower "
                        "(pass --device cpu to silence this warning)")
        return ("cpu",), options.num_cpu_workers
    match = _CUDA_DEVICE.match(wanted)
    if wanted != "auto" and match is None:
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {wanted!r}")
    if gpus == 0:
        raise UsageError(f"--device {wanted}: no CUDA GPU is visible to torch")
    if match is not None and match.group(2) is not None:
        index = int(match.group(2))
        if index >= gpus:
            raise UsageError(f"--device {wanted}: only {gpus} GPU(s) visible (cuda:0.."
                             f"cuda:{gpus - 1})")
        devices: tuple[str, ...] = (f"cuda:{index}",)
    else:
        count = options.num_gpu_workers or gpus
        if count > gpus:
            log.warning("--num_gpu_workers %d but only %d GPU(s) visible: using %d", count, gpus,
                        gpus)
            count = gpus
        devices = tuple(f"cuda:{i}" for i in range(count))
    return devices, len(devices) * options.workers_per_gpu


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_snac_config(config: Mapping[str, Any], fmt: str, source: str) -> None:
    strides = list(config.get("vq_strides", []))
    if len(strides) != len(CODE_COLUMNS):
        raise UsageError(f"SNAC model {source} has {len(strides)} code levels; tokenize needs "
                         "the 3-level 24 kHz model (hubertsiuzdak/snac_24khz)")
    if fmt == "orpheus" and (strides != ORPHEUS_VQ_STRIDES
                             or config.get("codebook_size") != orpheus.CODEBOOK_SIZE):
        raise UsageError(f"SNAC model {source} does not fit the Orpheus layout (needs "
                         f"vq_strides {ORPHEUS_VQ_STRIDES} and codebook_size "
                         f"{orpheus.CODEBOOK_SIZE}, as hubertsiuzdak/snac_24khz)")


def resolve_models(options: TokenizeOptions) -> tuple[SnacFiles, dict[str, Any], Path | None]:
    """Find the SNAC model and (orpheus format) the text tokenizer, and check they fit; no data is
    read and nothing heavy is loaded. UsageError naming what is missing and how to pass it.

    `parla run` can call this before preparing, so a missing model fails before hours of work.
    """
    snac_files = resolve_snac(options.snac_model)
    snac_config = snac_files.read_config()
    _check_snac_config(snac_config, options.format, options.snac_model)
    tokenizer_path = None
    if options.format == "orpheus":
        tokenizer_path = resolve_text_tokenizer(options.text_tokenizer)
        TextTokenizer(tokenizer_path)  # a broken file fails here, not in every worker
    return snac_files, snac_config, tokenizer_path


def _plan(found: Mapping[str, Mapping[str, list[Path]]], input_dir: Path,
          out: Path) -> list[TokenizeTask]:
    """Every input shard as a task, its output at the same place under ``out``."""
    return [TokenizeTask(config, split, str(path), str(out / DATA_DIR / config / path.name),
                         shard_rows(path), path.stat().st_size)
            for config in sorted(found) for split in sorted(found[config])
            for path in found[config][split]]


def _clear_output(out: Path) -> None:
    for name in (DATA_DIR, TOKENIZATION_STATS_FILE, REJECTS_FILE):
        remove_tree(out / name)


# --- reports -----------------------------------------------------------------------------------

def aggregate(records: Sequence[Mapping[str, Any]], sample_rate: int, sequences: bool,
              parameters: Mapping[str, Any]) -> dict[str, Any]:
    """tokenization_stats.json from the shards' records (in task order: deterministic)."""
    by_dialect: dict[str, GroupStats] = {}
    by_split: dict[str, dict[str, GroupStats]] = {}
    has_dialect_configs = any(r["config"] != ALL_CONFIG for r in records)
    for record in records:
        split_total = by_split.setdefault(record["config"], {}).setdefault(record["split"],
                                                                            GroupStats())
        for dialect, data in record["stats"].items():
            group = GroupStats.from_dict(data)
            split_total.add(group)
            # a folder of the old layout has an `all` folder repeating the dialects: count once
            if record["config"] != ALL_CONFIG or not has_dialect_configs:
                by_dialect.setdefault(dialect, GroupStats()).add(group)
    total = GroupStats()
    for group in by_dialect.values():
        total.add(group)
    return {
        "parameters": dict(parameters),
        "dialects": {d: by_dialect[d].summary(sample_rate, sequences) for d in sorted(by_dialect)},
        "total": total.summary(sample_rate, sequences),
        "configs": {config: {split: group.summary(sample_rate, sequences)
                             for split, group in sorted(splits.items())}
                    for config, splits in sorted(by_split.items())},
    }


def _rejects(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every skipped row of the run, with the config and split of its shard."""
    return [{**Reject(**reject).to_dict(), "config": record["config"], "split": record["split"]}
            for record in records for reject in record["rejects"]]


def warn_long_rows(statistics: Mapping[str, Any], max_length: int) -> None:
    """One warning per common context limit (below --max_length) that some rows exceed."""
    dialects = {d: s["sequence_length_distribution"] for d, s in statistics["dialects"].items()
                if s.get("sequence_length_distribution")}
    rows = sum(s["rows"] for s in statistics["dialects"].values())
    for limit in CONTEXT_LIMITS:
        if limit >= max_length:
            continue  # longer rows were skipped and counted as too_long
        over = {d: dist["rows_longer_than"][str(limit)] for d, dist in dialects.items()}
        total = sum(over.values())
        if total:
            where = ", ".join(f"{d} {n}" for d, n in over.items() if n)
            log.warning("%d of %d rows are longer than %d tokens (%s): a model trained with a "
                        "%d-token context truncates or refuses them; --max_length %d skips "
                        "them, --pack_length %d packs the rest (docs/TRAINING.md)", total, rows,
                        limit, where, limit, limit, limit)


# --- the stage ---------------------------------------------------------------------------------

def _select_configs(found: dict[str, dict[str, list[Path]]], options: TokenizeOptions,
                    input_dir: Path) -> dict[str, dict[str, list[Path]]]:
    """The input configs to tokenize: every one by default; `all` stands for every dialect."""
    if options.configs is None:
        return found
    wanted = [config for name in options.configs
              for config in ([c for c in found if c not in (ALL_CONFIG, PACKED_CONFIG)]
                             if name == ALL_CONFIG and ALL_CONFIG not in found else [name])]
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise UsageError(f"--configs {', '.join(unknown)}: not in {input_dir} (it has "
                         f"{', '.join(sorted(found))})")
    return {config: found[config] for config in sorted(set(wanted))}


def _fingerprint(options: TokenizeOptions, snac_files: SnacFiles, snac_config: Mapping[str, Any],
                 tokenizer_path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters shown in the card and statistics, settings every shard's record must match)."""
    sample_rate = int(snac_config.get("sampling_rate", 24000))
    parameters = {"snac_model": public_location(options.snac_model), "format": options.format,
                  "target_sample_rate": sample_rate}
    fingerprint: dict[str, Any] = {"format": options.format,
                                   "snac_config": json.dumps(snac_config, sort_keys=True),
                                   "snac_weights_sha256": _file_digest(snac_files.weights)}
    if options.precision != "exact":  # exact shards keep the records they always had
        parameters["precision"] = options.precision
        fingerprint["precision"] = options.precision
    if options.format == "orpheus":
        parameters |= {"text_tokenizer": public_location(options.text_tokenizer),
                       "dedupe_frames": options.dedupe_frames, "max_length": options.max_length}
        fingerprint |= {"dedupe_frames": options.dedupe_frames,
                        "max_length": options.max_length,
                        "tokenizer_sha256": _file_digest(tokenizer_path)}
    return parameters, fingerprint


def input_groups(input_dir: Path) -> dict[str, Any]:
    """The language and groups the prepared input's card records (none for the Catalan
    dialects, whose names the card knows): the tokenized card names them too."""
    from parla.card.render import GROUPS_KEY, read_card_state

    card = input_dir / CARD_FILE
    state = read_card_state(card.read_text(encoding="utf-8")) if card.is_file() else None
    recorded = state[1] if state is not None else {}
    return {key: recorded[key] for key in ("language", GROUPS_KEY) if key in recorded}


def _worker_settings(options: TokenizeOptions, snac_files: SnacFiles,
                     tokenizer_path: Path | None, devices: tuple[str, ...], num_workers: int,
                     fingerprint: Mapping[str, Any]) -> WorkerSettings:
    cpu_count = os.cpu_count() or 1
    on_gpu = devices[0] != "cpu"
    return WorkerSettings(
        snac=snac_files, tokenizer_path=str(tokenizer_path) if tokenizer_path else None,
        devices=devices, fmt=options.format, dedupe=options.dedupe_frames,
        max_length=options.max_length, batch_seconds=options.batch_seconds,
        # the share of the device's memory a worker's batches take
        workers_per_device=options.workers_per_gpu if on_gpu else num_workers,
        # a GPU worker's CPU time goes to decoding; a CPU worker's to the model itself
        decode_threads=max(2, min(8, cpu_count // max(1, num_workers) - 1)) if on_gpu else 1,
        torch_threads=None if (on_gpu or num_workers == 1) else max(1, cpu_count // num_workers),
        fingerprint=fingerprint, precision=options.precision,
        torch_compile=options.torch_compile)


def tokenize(options: TokenizeOptions) -> StageResult:
    """Run the tokenize stage; its statistics are those written to tokenization_stats.json."""
    started = time.perf_counter()
    require_tokenize_extra()
    use_storage_options(options.storage_options)
    input_dir, out, found = _folders(options)

    # the model and tokenizer are found before any data is read: a missing one fails in seconds
    snac_files, snac_config, tokenizer_path = resolve_models(options)
    devices, num_workers = pick_devices(options)
    parameters, fingerprint = _fingerprint(options, snac_files, snac_config, tokenizer_path)
    parameters |= input_groups(input_dir)
    if not is_remote(out):  # a store has no folders to make
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"--output_dir {out} cannot be created ({error.strerror})") from None
    with lock_folder(out, break_lock=options.break_lock):
        if options.overwrite:
            _clear_output(out)
        if remove_stale_tmp(out):
            log.info("removed the half-written files of an interrupted run")
        tasks = _plan(found, input_dir, out)
        stage = ShardStage(TOKENIZE_STAGE, out, fingerprint, required=("stats",))
        done = trusted_records(stage, tasks, shard_paths(find_shards(out), configs=found))
        todo = [task for task in tasks if task.output not in done]
        # the workers' threads are sized for the shards left: as many workers as there are
        # worker calls (groups of shards, as run_todo makes them) to give them
        workers = max(1, min(num_workers, len(group_tasks(todo, ROWS_PER_CALL, num_workers))))
        log.info("tokenizing %d shard(s) (%d rows) on %s with %d worker(s)", len(todo),
                 sum(t.rows for t in todo), ", ".join(devices), workers)
        settings = _worker_settings(options, snac_files, tokenizer_path, devices, workers,
                                    fingerprint)
        on_gpu = devices[0] != "cpu"
        records = run_todo(stage, tasks, done, functools.partial(ShardTokenizer, settings),
                           engine=options.engine, num_workers=num_workers,
                           num_gpus_per_worker=(1 / options.workers_per_gpu) if on_gpu else 0,
                           group_rows=ROWS_PER_CALL)
        statistics = _write_reports(out, records, settings, parameters, options.pack_length,
                                    options.seed)
    elapsed = time.perf_counter() - started
    total = statistics["total"]
    log.info("tokenized %d rows (%d skipped, %.1f s of audio) in %.1f s; wrote %s", total["rows"],
             total["rows_skipped"], total["audio_hours"] * 3600, elapsed, out)
    return StageResult("tokenize", str(out), statistics, elapsed)


def _folders(options: TokenizeOptions) -> tuple[Path, Path, dict[str, dict[str, list[Path]]]]:
    """The input folder, the output folder and the input's shards to tokenize, checked."""
    input_dir, out = as_path(options.input_dir), as_path(options.output_dir)
    check_reachable(input_dir, "--input_dir")
    check_reachable(out, "--output_dir")
    if not input_dir.is_dir():
        raise UsageError(f"--input_dir {input_dir} is not a folder")
    found = find_shards(input_dir)
    if not found:
        raise UsageError(f"--input_dir {input_dir} holds no prepared shards "
                         f"({DATA_DIR}/<config>/<split>-*.parquet); run `parla prepare` first")
    found = _select_configs(found, options, input_dir)
    if out.is_file():
        raise UsageError(f"--output_dir {out} exists and is not a folder")
    return input_dir, out, found


def _write_reports(out: Path, records: list[dict], settings: WorkerSettings,
                   parameters: Mapping[str, Any], pack_length: int | None,
                   seed: int) -> dict[str, Any]:
    from parla.card.folder import write_dataset_card

    sample_rate = int(parameters["target_sample_rate"])
    agreement = combined_agreement([record.get("precision_agreement") for record in records])
    if agreement is not None:  # a bf16 run: how far its codes agree with float32's
        parameters = {**parameters, "precision_agreement": agreement["share_equal"]}
    statistics = aggregate(records, sample_rate, settings.fmt == "orpheus", parameters)
    if agreement is not None:
        statistics["precision_agreement"] = agreement
    warn_long_rows(statistics, settings.max_length)
    # packing reads the finished tokenized shards; the card below then describes `packed` too
    packed = update_packed(out, pack_length, seed)
    if packed is not None:
        statistics["packed"] = packed
    write_json(out / TOKENIZATION_STATS_FILE, statistics)
    write_rejects(out / REJECTS_FILE, _rejects(records))
    write_dataset_card(out, kind="tokenized", parameters=parameters)
    return statistics
