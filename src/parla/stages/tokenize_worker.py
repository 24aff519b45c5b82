"""The tokenize worker: a prepared shard -> SNAC codes -> Orpheus sequences, one shard at a time.

`ShardTokenizer` is built once per worker (SNAC and the text tokenizer are loaded once). The per-row
layout is `tokens.orpheus` (pure); `build_shard` turns a shard's codes into its table, statistics
and rejects (pure); `GroupStats` are the counts that merge across shards by adding.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile as sf

from parla.audio.decode import libsndfile_message
from parla.errors import Reject, RowRejected
from parla.stages.runner import ShardGroup
from parla.store.layout import TOKENIZE_STAGE
from parla.store.shards import (
    read_schema,
    read_shard,
    write_table_atomic,
)
from parla.tokens import orpheus
from parla.tokens.codec import (
    SnacEncoder,
    SnacFiles,
    TextTokenizer,
)
from parla.tokens.precision import AGREEMENT_CLIPS, code_agreement
from parla.tokens.profile import append_profile

INPUT_COLUMNS = ("audio", "text", "dialect", "speaker_id", "duration", "source_path")


CODE_COLUMNS = ("codes_0", "codes_1", "codes_2")


ROW_COLUMNS = ("text", "dialect", "speaker_id", "duration")


# the length budget: context sizes rows are checked against (Orpheus-style fine-tuning setups
# often train at 2048; Orpheus pretraining chained sequences to 8192), and the statistics' buckets
CONTEXT_LIMITS = (2048, 8192)


LENGTH_PERCENTILES = (50, 90, 95, 99)


LENGTH_BUCKETS = (256, 512, 1024, 1536, 2048, 3072, 4096, 8192)


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

    def count(self, codes: Sequence[np.ndarray], audio_samples: int,
              example: Mapping[str, Any] | None) -> None:
        """Count one kept row: its codes, its audio and (orpheus format) its sequence."""
        self.rows += 1
        self.codes = [n + len(c) for n, c in zip(self.codes, codes, strict=True)]
        self.audio_samples += audio_samples
        if example is None:
            return
        length = len(example["input_ids"])
        kept_frames = len(codes[0]) - example["dropped_frames"]
        self.audio_tokens += orpheus.TOKENS_PER_FRAME * kept_frames
        self.sequence_tokens += length
        self.max_sequence_length = max(self.max_sequence_length, length)
        self.sequence_lengths.append(length)
        self.duplicate_frames += example["dropped_frames"]

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
        example, reason, detail = _layout_row(result, rows["text"][index],
                                              text_ids[index] if text_ids else None,
                                              fmt=fmt, dedupe=dedupe, max_length=max_length)
        if reason is not None:
            group.skipped[reason] = group.skipped.get(reason, 0) + 1
            source = rows["source_path"][index] if "source_path" in rows else None
            rejects.append(Reject(source or "", dialect, reason, detail))
            continue
        kept.append(index)
        group.count(result, int(num_samples[index]), example)
        if example is not None:
            sequences.append(example["input_ids"])
    table = _shard_table(rows, results, kept, sequences, fmt)
    return table, {d: stats[d] for d in sorted(stats)}, rejects


def _layout_row(result: Any, text: str | None, text_ids: Sequence[int] | None, *, fmt: str,
                dedupe: bool, max_length: int
                ) -> tuple[dict[str, Any] | None, str | None, str]:
    """(the row's Orpheus example or None, the reason it is skipped or None, its detail)."""
    if isinstance(result, RowRejected):
        return None, result.reason, result.detail or ""
    if fmt != "orpheus":
        return None, None, ""
    if not text:
        return None, "missing_text", "empty text"
    example = orpheus.build_example(text_ids, result, dedupe=dedupe)
    if len(example["input_ids"]) > max_length:
        return None, "too_long", f"{len(example['input_ids'])} tokens > --max_length {max_length}"
    return example, None, ""


def _shard_table(rows: Mapping[str, Sequence], results: Sequence[Any], kept: Sequence[int],
                 sequences: Sequence[np.ndarray], fmt: str) -> pa.Table:
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
    return pa.table([columns[f.name] for f in schema], schema=schema)


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
    precision: str = "exact"
    torch_compile: bool = False


# rows one worker call batches across (a shard alone has too few clips to fill a GPU's batch);
# its shards' FLAC bytes are held until all are encoded
ROWS_PER_CALL = 4096


@dataclass
class _ReadShard:
    """One input shard as read: its row columns, audio bytes and expected clip lengths."""

    rows: dict[str, list]
    audio: list
    expected: list[int]
    num_samples: list[int]
    text_ids: list[list[int]] | None


class ShardTokenizer:
    """Encodes shards on one device: SNAC and the tokenizer are loaded once per worker.

    Called with one `TokenizeTask` it returns that shard's record; with a `ShardGroup`, the list
    of its shards' records. A group's clips are batched together (length buckets that span its
    shards), and each shard is then laid out and written on its own, as alone: a clip's codes do
    not depend on the batch it was in, so the bytes are those of encoding shard by shard.
    """

    def __init__(self, settings: WorkerSettings, rank: int) -> None:
        import torch

        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.settings = settings
        self.device = settings.devices[rank % len(settings.devices)]
        self.encoder = SnacEncoder(settings.snac, self.device, settings.batch_seconds,
                                   decode_threads=settings.decode_threads,
                                   share=settings.workers_per_device,
                                   precision=settings.precision,
                                   torch_compile=settings.torch_compile)
        self.tokenizer = (TextTokenizer(settings.tokenizer_path)
                          if settings.tokenizer_path is not None else None)
        self.last_profile: dict[str, Any] = {}  # the phases and batches of the last call

    def __call__(self, task: TokenizeTask | ShardGroup) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(task, ShardGroup):
            return self.encode_shards(list(task.tasks))
        return self.encode_shards([task])[0]

    def encode_shards(self, tasks: Sequence[TokenizeTask]) -> list[dict[str, Any]]:
        """Read the shards, encode all their clips in shared batches, write each shard."""
        phases = self.encoder.phases
        with phases.timed("read"):
            shards = [self._read(task) for task in tasks]
        where = [(shard, index) for shard in shards for index in range(len(shard.audio))]
        sample_rate = self.encoder.sample_rate

        def load(position: int) -> np.ndarray:  # runs on the encoder's decode threads
            shard, index = where[position]
            samples = decode_clip(shard.audio[index], sample_rate)
            shard.num_samples[index] = len(samples)
            return samples

        results = self.encoder.encode_lazy([n for s in shards for n in s.expected], load)
        records = []
        with ThreadPoolExecutor(1, thread_name_prefix="parla-write") as writer:
            writes = []
            for task, shard in zip(tasks, shards, strict=True):
                part, results = results[:len(shard.audio)], results[len(shard.audio):]
                with phases.timed("build"):
                    out, record = self._build(task, shard, part)
                if self.settings.precision != "exact":  # exact records stay as they always were
                    record["precision_agreement"] = self._agreement(shard, part)
                writes.append(writer.submit(self._write, task.output_path, out, record))
                records.append(record)
            for write in writes:
                write.result()
        self.last_profile = {"device": self.device, "shards": len(tasks),
                             "rows": sum(len(s.audio) for s in shards), **phases.drain(),
                             "precision": self.encoder.precision_state,
                             "torch_compile": self.encoder.compiled,
                             "batch_seconds": self.encoder.batch_seconds}
        append_profile(self.last_profile)
        return records

    def _read(self, task: TokenizeTask) -> _ReadShard:
        available = set(read_schema(task.input_path).names)
        table = read_shard(task.input_path, columns=[c for c in INPUT_COLUMNS if c in available])
        size = table.num_rows
        audio = (table.column("audio").combine_chunks().field("bytes").to_pylist()
                 if "audio" in available else [None] * size)
        rows = {name: table.column(name).to_pylist() if name in available else [None] * size
                for name in INPUT_COLUMNS if name != "audio"}
        sample_rate = self.encoder.sample_rate
        text_ids = None
        if self.tokenizer is not None:
            text_ids = self.tokenizer.encode_batch([text or "" for text in rows["text"]])
        return _ReadShard(rows, audio, [probe_samples(data, sample_rate) for data in audio],
                          [0] * size, text_ids)

    def _build(self, task: TokenizeTask, shard: _ReadShard, results: Sequence[Any]
               ) -> tuple[pa.Table, dict[str, Any]]:
        settings = self.settings
        out, stats, rejects = build_shard(shard.rows, results, shard.text_ids, shard.num_samples,
                                          fmt=settings.fmt, dedupe=settings.dedupe,
                                          max_length=settings.max_length)
        return out, shard_record(task, settings.fingerprint, stats, rejects)

    def _agreement(self, shard: _ReadShard, results: Sequence[Any]) -> dict[str, Any]:
        """This run's codes of the shard's first clips against float32's, clip by clip."""
        picked = [index for index, result in enumerate(results)
                  if not isinstance(result, RowRejected)][:AGREEMENT_CLIPS]
        audio = [decode_clip(shard.audio[index], self.encoder.sample_rate) for index in picked]
        return code_agreement([results[index] for index in picked],
                              self.encoder.float32_codes(audio))

    def _write(self, path: str, table: pa.Table, record: dict[str, Any]) -> None:
        with self.encoder.phases.timed("write"):
            write_table_atomic(path, table, record=record, stage=TOKENIZE_STAGE)


def shard_record(task: TokenizeTask, fingerprint: Mapping[str, Any],
                 stats: Mapping[str, GroupStats], rejects: Sequence[Reject]) -> dict[str, Any]:
    """What a shard's footer says about it: the settings that made it, its counts, its rejects."""
    return {"config": task.config, "split": task.split, "settings": dict(fingerprint),
            "input_rows": task.rows, "input_bytes": task.input_bytes,
            "stats": {dialect: group.to_dict() for dialect, group in stats.items()},
            "rejects": [reject.to_dict() for reject in rejects]}


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
