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
import io
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from parla.audio.decode import libsndfile_message
from parla.dialects import ALL_CONFIG, DIALECTS
from parla.errors import Reject, RowRejected, UsageError
from parla.extras import require_tokenize_extra
from parla.options import TokenizeOptions
from parla.progress import get_logger
from parla.report.statistics import write_json, write_rejects
from parla.stages.pack import update_packed
from parla.stages.result import StageResult
from parla.stages.runner import ShardStage, run_shards
from parla.store.files import lock_folder, remove_stale_tmp
from parla.store.layout import REJECTS_FILE, TOKENIZATION_STATS_FILE, TOKENIZE_STAGE
from parla.store.shards import (
    DATA_DIR,
    find_shards,
    read_shard,
    read_shard_record,
    shard_paths,
    write_table_atomic,
)
from parla.tokens import orpheus
from parla.tokens.codec import (
    SnacEncoder,
    SnacFiles,
    TextTokenizer,
    resolve_snac,
    resolve_text_tokenizer,
)

log = get_logger("tokenize")

INPUT_COLUMNS = ("audio", "text", "dialect", "speaker_id", "duration", "source_path")
CODE_COLUMNS = ("codes_0", "codes_1", "codes_2")
ROW_COLUMNS = ("text", "dialect", "speaker_id", "duration")
ORPHEUS_VQ_STRIDES = [4, 2, 1]
# the length budget: context sizes rows are checked against (Orpheus-style fine-tuning setups
# often train at 2048; Orpheus pretraining chained sequences to 8192), and the statistics' buckets
CONTEXT_LIMITS = (2048, 8192)
LENGTH_PERCENTILES = (50, 90, 95, 99)
LENGTH_BUCKETS = (256, 512, 1024, 1536, 2048, 3072, 4096, 8192)


# --- per-row work (pure) -----------------------------------------------------------------------

def decode_clip(data: bytes | None, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of a prepared clip (FLAC bytes) at ``sample_rate``.

    Raises RowRejected (the row is skipped and counted), never anything else for bad bytes.
    """
    if not data:
        raise RowRejected("missing_audio", "no audio bytes")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        raise RowRejected("undecodable_audio", libsndfile_message(error)) from None
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if mono.size == 0:
        raise RowRejected("empty_audio", "no samples")
    if rate != sample_rate:  # prepared corpora are 24 kHz; another rate is resampled, not refused
        from parla.audio.decode import resample

        mono = resample(mono, rate, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def probe_samples(data: bytes | None, sample_rate: int) -> int:
    """Samples a clip will have at ``sample_rate``, from its header (0 when unknown)."""
    if not data:
        return 0
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return 0  # decoding will fail and say why
    if info.samplerate <= 0 or info.frames <= 0:
        return 0
    return int(round(info.frames * sample_rate / info.samplerate))


@dataclass
class GroupStats:
    """Counts of one dialect in one shard; sums, so shards merge by adding."""

    rows: int = 0
    audio_samples: int = 0
    codes: list[int] = field(default_factory=lambda: [0, 0, 0])
    audio_tokens: int = 0
    sequence_tokens: int = 0
    max_sequence_length: int = 0
    duplicate_frames: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    # every kept row's sequence length, for the length budget; merges by concatenation
    sequence_lengths: list[int] = field(default_factory=list)

    def add(self, other: GroupStats) -> None:
        self.rows += other.rows
        self.audio_samples += other.audio_samples
        self.codes = [a + b for a, b in zip(self.codes, other.codes, strict=True)]
        self.audio_tokens += other.audio_tokens
        self.sequence_tokens += other.sequence_tokens
        self.max_sequence_length = max(self.max_sequence_length, other.max_sequence_length)
        self.duplicate_frames += other.duplicate_frames
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.sequence_lengths.extend(other.sequence_lengths)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "audio_samples": self.audio_samples, "codes": self.codes,
                "audio_tokens": self.audio_tokens, "sequence_tokens": self.sequence_tokens,
                "max_sequence_length": self.max_sequence_length,
                "duplicate_frames": self.duplicate_frames,
                "skipped": dict(sorted(self.skipped.items())),
                "sequence_lengths": list(self.sequence_lengths)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupStats:
        return cls(**{**data, "codes": list(data["codes"]), "skipped": dict(data["skipped"]),
                      "sequence_lengths": list(data.get("sequence_lengths", []))})

    def summary(self, sample_rate: int, sequences: bool) -> dict[str, Any]:
        """What tokenization_stats.json shows for a group of rows."""
        seconds = self.audio_samples / sample_rate
        rows = self.rows
        return {
            "rows": rows,
            "rows_skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "audio_hours": round(seconds / 3600, 4),
            "mean_tokens_per_level": {f"codes_{i}": round(n / rows, 2) if rows else None
                                      for i, n in enumerate(self.codes)},
            "mean_sequence_length": (round(self.sequence_tokens / rows, 1)
                                     if rows and sequences else None),
            "max_sequence_length": self.max_sequence_length if sequences else None,
            "audio_tokens_per_second": (round(self.audio_tokens / seconds, 2)
                                        if seconds and sequences else None),
            "duplicate_frames_removed": self.duplicate_frames if sequences else None,
            "sequence_length_distribution": self.length_distribution() if sequences else None,
        }

    def length_distribution(self) -> dict[str, Any] | None:
        """Percentiles of the sequence lengths and the rows over common context limits (None
        when a shard written before lengths were recorded is among the group's)."""
        if len(self.sequence_lengths) != self.rows or not self.rows:
            return None
        lengths = np.asarray(self.sequence_lengths)
        percentiles = {f"p{p}": int(np.percentile(lengths, p, method="higher"))
                       for p in LENGTH_PERCENTILES}
        buckets = np.histogram(lengths, bins=[0, *LENGTH_BUCKETS, np.inf])[0]
        edges = [0, *LENGTH_BUCKETS]
        return {**percentiles, "max": int(lengths.max()),
                "rows_longer_than": {str(limit): int((lengths > limit).sum())
                                     for limit in CONTEXT_LIMITS},
                "histogram": {(f"{low + 1}-{high}" if i < len(LENGTH_BUCKETS) else f">{low}"):
                              int(count) for i, (low, high, count) in
                              enumerate(zip(edges, [*LENGTH_BUCKETS, None], buckets,
                                            strict=True)) if count}}


def _list_array(arrays: Sequence[np.ndarray], value_type: pa.DataType) -> pa.Array:
    """A list column built from offsets + one flat buffer (no per-row Python objects)."""
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    flat = (np.concatenate(arrays) if arrays else np.zeros(0)).astype(value_type.to_pandas_dtype())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, value_type))


def output_schema(fmt: str) -> pa.Schema:
    fields = []
    if fmt == "orpheus":
        fields += [("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                   ("attention_mask", pa.list_(pa.int8()))]
    fields += [(name, pa.list_(pa.int16())) for name in CODE_COLUMNS]
    fields += [("text", pa.string()), ("dialect", pa.string()), ("speaker_id", pa.string()),
               ("duration", pa.float32())]
    return pa.schema(fields)


def build_shard(rows: Mapping[str, Sequence], results: Sequence[Any],
                text_ids: Sequence[Sequence[int]] | None, num_samples: Sequence[int], *,
                fmt: str, dedupe: bool, max_length: int
                ) -> tuple[pa.Table, dict[str, GroupStats], list[Reject]]:
    """Output table, per-dialect statistics and rejects of one shard (pure).

    ``rows`` holds the input columns text, dialect, speaker_id, duration and source_path;
    ``results[i]`` is row i's codes (c0, c1, c2) or the RowRejected that stopped it;
    ``text_ids[i]`` its text tokens (orpheus format only); ``num_samples[i]`` its decoded length.
    """
    stats: dict[str, GroupStats] = {}
    rejects: list[Reject] = []
    kept: list[int] = []
    sequences: list[np.ndarray] = []
    for index, result in enumerate(results):
        dialect = rows["dialect"][index] or ""
        group = stats.setdefault(dialect, GroupStats())
        reason = detail = None
        example = None
        if isinstance(result, RowRejected):
            reason, detail = result.reason, result.detail
        elif fmt == "orpheus" and not rows["text"][index]:
            reason, detail = "missing_text", "empty text"
        elif fmt == "orpheus":
            example = orpheus.build_example(text_ids[index], result, dedupe=dedupe)
            if len(example["input_ids"]) > max_length:
                reason = "too_long"
                detail = f"{len(example['input_ids'])} tokens > --max_length {max_length}"
        if reason is not None:
            group.skipped[reason] = group.skipped.get(reason, 0) + 1
            source = rows["source_path"][index] if "source_path" in rows else None
            rejects.append(Reject(source or "", dialect, reason, detail or ""))
            continue
        kept.append(index)
        group.rows += 1
        group.codes = [n + len(c) for n, c in zip(group.codes, result, strict=True)]
        group.audio_samples += int(num_samples[index])
        if example is not None:
            length = len(example["input_ids"])
            sequences.append(example["input_ids"])
            kept_frames = len(result[0]) - example["dropped_frames"]
            group.audio_tokens += orpheus.TOKENS_PER_FRAME * kept_frames
            group.sequence_tokens += length
            group.max_sequence_length = max(group.max_sequence_length, length)
            group.sequence_lengths.append(length)
            group.duplicate_frames += example["dropped_frames"]

    columns: dict[str, pa.Array] = {}
    if fmt == "orpheus":
        ids = _list_array(sequences, pa.int32())
        columns["input_ids"] = ids
        columns["labels"] = ids
        columns["attention_mask"] = _list_array([np.ones(len(s), np.int8) for s in sequences],
                                                pa.int8())
    for level, name in enumerate(CODE_COLUMNS):
        columns[name] = _list_array([results[i][level] for i in kept], pa.int16())
    for name in ROW_COLUMNS:
        columns[name] = pa.array([rows[name][i] for i in kept],
                                 pa.float32() if name == "duration" else pa.string())
    schema = output_schema(fmt)
    table = pa.table([columns[f.name] for f in schema], schema=schema)
    return table, {d: stats[d] for d in sorted(stats)}, rejects


# --- the worker (one per device) -------------------------------------------------------------

@dataclass(frozen=True)
class TokenizeTask:
    """One output shard of tokenize: the prepared shard it encodes, one for one."""

    config: str
    split: str
    input_path: str
    output_path: str
    rows: int
    input_bytes: int = 0  # with `rows`, tells a resumed run its input shard is the same

    @property
    def output(self) -> str:
        return self.output_path

    def inputs(self) -> dict[str, Any]:
        """What the shard's footer records of its input shard (`runner.mismatch`)."""
        return {"input_rows": self.rows, "input_bytes": self.input_bytes}

    def describe(self) -> str:
        return f"shard {self.config}/{Path(self.input_path).name} ({self.input_path})"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process needs; pickled to each worker once."""

    snac: SnacFiles
    tokenizer_path: str | None
    devices: tuple[str, ...]
    fmt: str
    dedupe: bool
    max_length: int
    batch_seconds: float | None
    workers_per_device: int
    decode_threads: int
    torch_threads: int | None
    fingerprint: Mapping[str, Any]


class ShardTokenizer:
    """Encodes whole shards on one device: SNAC and the tokenizer are loaded once per worker."""

    def __init__(self, settings: WorkerSettings, rank: int) -> None:
        import torch

        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.settings = settings
        self.device = settings.devices[rank % len(settings.devices)]
        self.encoder = SnacEncoder(settings.snac, self.device, settings.batch_seconds,
                                   decode_threads=settings.decode_threads,
                                   share=settings.workers_per_device)
        self.tokenizer = (TextTokenizer(settings.tokenizer_path)
                          if settings.tokenizer_path is not None else None)

    def __call__(self, task: TokenizeTask) -> dict[str, Any]:
        settings = self.settings
        available = set(pq.read_schema(task.input_path).names)
        table = read_shard(task.input_path, columns=[c for c in INPUT_COLUMNS if c in available])
        size = table.num_rows
        audio = (table.column("audio").combine_chunks().field("bytes").to_pylist()
                 if "audio" in available else [None] * size)
        rows = {name: table.column(name).to_pylist() if name in available else [None] * size
                for name in INPUT_COLUMNS if name != "audio"}
        sample_rate = self.encoder.sample_rate
        expected = [probe_samples(data, sample_rate) for data in audio]
        num_samples = [0] * size

        def load(index: int) -> np.ndarray:  # runs on the encoder's decode threads
            samples = decode_clip(audio[index], sample_rate)
            num_samples[index] = len(samples)
            return samples

        text_ids = None
        if self.tokenizer is not None:
            text_ids = self.tokenizer.encode_batch([text or "" for text in rows["text"]])
        results = self.encoder.encode_lazy(expected, load)
        out, stats, rejects = build_shard(rows, results, text_ids, num_samples,
                                          fmt=settings.fmt, dedupe=settings.dedupe,
                                          max_length=settings.max_length)
        record = shard_record(task, settings.fingerprint, stats, rejects)
        write_table_atomic(task.output_path, out, record=record, stage=TOKENIZE_STAGE)
        return record


def shard_record(task: TokenizeTask, fingerprint: Mapping[str, Any],
                 stats: Mapping[str, GroupStats], rejects: Sequence[Reject]) -> dict[str, Any]:
    """What a shard's footer says about it: the settings that made it, its counts, its rejects."""
    return {"config": task.config, "split": task.split, "settings": dict(fingerprint),
            "input_rows": task.rows, "input_bytes": task.input_bytes,
            "stats": {dialect: group.to_dict() for dialect, group in stats.items()},
            "rejects": [reject.to_dict() for reject in rejects]}


def read_tokenized_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record in a tokenized shard's footer; None for a shard parla tokenize did not write."""
    record = read_shard_record(path, TOKENIZE_STAGE)
    return record if record is not None and "stats" in record else None


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
    return [TokenizeTask(config, split, str(path), str(out / path.relative_to(input_dir)),
                         pq.ParquetFile(path).metadata.num_rows, path.stat().st_size)
            for config in sorted(found) for split in sorted(found[config])
            for path in found[config][split]]


def _clear_output(out: Path) -> None:
    shutil.rmtree(out / DATA_DIR, ignore_errors=True)
    for name in (TOKENIZATION_STATS_FILE, REJECTS_FILE):
        (out / name).unlink(missing_ok=True)


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
              for config in ([c for c in found if c in DIALECTS]
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
    parameters = {"snac_model": options.snac_model, "format": options.format,
                  "target_sample_rate": sample_rate}
    fingerprint: dict[str, Any] = {"format": options.format,
                                   "snac_config": json.dumps(snac_config, sort_keys=True),
                                   "snac_weights_sha256": _file_digest(snac_files.weights)}
    if options.format == "orpheus":
        parameters |= {"text_tokenizer": options.text_tokenizer,
                       "dedupe_frames": options.dedupe_frames, "max_length": options.max_length}
        fingerprint |= {"dedupe_frames": options.dedupe_frames,
                        "max_length": options.max_length,
                        "tokenizer_sha256": _file_digest(tokenizer_path)}
    return parameters, fingerprint


def _worker_settings(options: TokenizeOptions, snac_files: SnacFiles,
                     tokenizer_path: Path | None, devices: tuple[str, ...], num_workers: int,
                     fingerprint: Mapping[str, Any]) -> WorkerSettings:
    cpu_count = os.cpu_count() or 1
    on_gpu = devices[0] != "cpu"
    return WorkerSettings(
        snac=snac_files, tokenizer_path=str(tokenizer_path) if tokenizer_path else None,
        devices=devices, fmt=options.format, dedupe=options.dedupe_frames,
        max_length=options.max_length, batch_seconds=options.batch_seconds,
        workers_per_device=options.workers_per_gpu if on_gpu else 1,
        # a GPU worker's CPU time goes to decoding; a CPU worker's to the model itself
        decode_threads=max(2, min(8, cpu_count // max(1, num_workers) - 1)) if on_gpu else 1,
        torch_threads=None if (on_gpu or num_workers == 1) else max(1, cpu_count // num_workers),
        fingerprint=fingerprint)


def tokenize(options: TokenizeOptions) -> StageResult:
    """Run the tokenize stage; its statistics are those written to tokenization_stats.json."""
    started = time.perf_counter()
    require_tokenize_extra()
    input_dir = Path(options.input_dir).expanduser()
    out = Path(options.output_dir).expanduser()
    if not input_dir.is_dir():
        raise UsageError(f"--input_dir {input_dir} is not a folder")
    found = find_shards(input_dir)
    if not found:
        raise UsageError(f"--input_dir {input_dir} holds no prepared shards "
                         f"({DATA_DIR}/<config>/<split>-*.parquet); run `parla prepare` first")
    found = _select_configs(found, options, input_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} exists and is not a folder")

    # the model and tokenizer are found before any data is read: a missing one fails in seconds
    snac_files, snac_config, tokenizer_path = resolve_models(options)
    devices, num_workers = pick_devices(options)
    parameters, fingerprint = _fingerprint(options, snac_files, snac_config, tokenizer_path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--output_dir {out} cannot be created ({error.strerror})") from None
    with lock_folder(out):
        if options.overwrite:
            _clear_output(out)
        if remove_stale_tmp(out):
            log.info("removed the half-written files of an interrupted run")
        tasks = _plan(found, input_dir, out)
        workers = max(1, min(num_workers, len(tasks)))
        log.info("tokenizing %d shard(s) (%d rows) on %s with up to %d worker(s)", len(tasks),
                 sum(t.rows for t in tasks), ", ".join(devices), workers)
        settings = _worker_settings(options, snac_files, tokenizer_path, devices, workers,
                                    fingerprint)
        on_gpu = devices[0] != "cpu"
        records = run_shards(ShardStage(TOKENIZE_STAGE, out, fingerprint), tasks,
                             shard_paths(find_shards(out), configs=found),
                             functools.partial(ShardTokenizer, settings), engine=options.engine,
                             num_workers=workers,
                             num_gpus_per_worker=(1 / options.workers_per_gpu) if on_gpu else 0)
        statistics = _write_reports(out, records, settings, parameters, options.pack_length,
                                    options.seed)
    elapsed = time.perf_counter() - started
    total = statistics["total"]
    log.info("tokenized %d rows (%d skipped, %.1f s of audio) in %.1f s; wrote %s", total["rows"],
             total["rows_skipped"], total["audio_hours"] * 3600, elapsed, out)
    return StageResult("tokenize", str(out), statistics, elapsed)


def _write_reports(out: Path, records: list[dict], settings: WorkerSettings,
                   parameters: Mapping[str, Any], pack_length: int | None,
                   seed: int) -> dict[str, Any]:
    from parla.card.folder import write_dataset_card

    sample_rate = int(parameters["target_sample_rate"])
    statistics = aggregate(records, sample_rate, settings.fmt == "orpheus", parameters)
    warn_long_rows(statistics, settings.max_length)
    # packing reads the finished tokenized shards; the card below then describes `packed` too
    packed = update_packed(out, pack_length, seed)
    if packed is not None:
        statistics["packed"] = packed
    write_json(out / TOKENIZATION_STATS_FILE, statistics)
    write_rejects(out / REJECTS_FILE, _rejects(records))
    write_dataset_card(out, kind="tokenized", parameters=parameters)
    return statistics
