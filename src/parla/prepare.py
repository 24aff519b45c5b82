"""The prepare stage: sources -> selection -> decode/condition/resample in workers -> shards.

IO and process management live here; every per-clip transform is a pure function in `audio`,
`conditioning` and `text`. Selection runs on metadata only, so only selected clips are decoded.
Rows are processed once, in the combined config's (shuffled) order, and each processed row is
written both to its dialect's shard and to the ``all`` config's train or validation shard.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from . import audio
from .conditioning import Conditioner
from .dialects import ALL_CONFIG, DIALECTS
from .engines import get_engine
from .errors import AudioDecodeError, Reject, UsageError
from .options import PrepareOptions
from .progress import get_logger, progress
from .reports import (
    REJECTS_FILE,
    REPORT_FILES,
    SPEAKERS_FILE,
    STATISTICS_FILE,
    RejectLog,
    format_counts_table,
    format_summary,
    write_json,
)
from .selection import StepCount, rng_for, select_dialect, shuffle, split_by_speaker
from .shards import (
    DATA_DIR,
    ShardWriter,
    find_shards,
    parse_shard_name,
    prepared_schema,
    prepared_table,
    read_shard,
    remove_stale_tmp,
    shard_path,
)
from .sources import LoadedSource, load_source, parse_source_spec, read_clip

log = get_logger("prepare")

TASK_ROWS = 16  # clips per worker task: large enough to amortise IPC, small for smooth progress
_META_FIELDS = ("client_id", "sentence", "gender", "age", "dialect", "path")


@dataclass
class PrepareResult:
    output_dir: Path
    statistics: dict[str, Any]
    selection: dict[str, list[StepCount]] = field(default_factory=dict)


# --- the per-clip work (runs in worker processes) --------------------------------------------

def _expected_format(path: str) -> str | None:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in ("mp3", "wav", "flac", "ogg") else None


def process_clip(data: bytes, item: dict[str, Any], options: PrepareOptions,
                 conditioner: Conditioner) -> dict[str, Any]:
    """Decode, check, resample, condition and encode one clip.

    Raises AudioDecodeError (ClipRejected is one) for a clip that cannot be training data. The
    duration limits apply to the conditioned (trimmed) clip.
    """
    samples, sample_rate = audio.decode_audio(data, _expected_format(item["path"]),
                                              item.get("nominal_duration"))
    samples = audio.resample(samples, sample_rate, options.target_sample_rate, options.resampler)
    clip = conditioner(samples, options.target_sample_rate, item["sentence"])
    duration = clip.samples.size / options.target_sample_rate
    if not options.min_duration <= duration <= options.max_duration:
        raise AudioDecodeError("duration_out_of_range", f"{duration:.2f}s after conditioning")
    voice = DIALECTS[item["dialect"]].voice_name
    return {
        "audio": audio.encode_flac(clip.samples, options.target_sample_rate),
        "audio_path": Path(item["path"]).with_suffix(".flac").name,
        "text": f"{voice}: {clip.text}",
        "original_text": clip.text,
        "voice_name": voice,
        "dialect": item["dialect"],
        "speaker_id": item["client_id"],
        "gender": item["gender"],
        "age": item["age"],
        "duration": duration,
        "source_path": item["path"],
        "measurements": _summary_measurements(clip.measurements),
    }


_MEASUREMENTS = ("duration_s_before", "duration_s_after", "leading_silence_s_before",
                 "leading_silence_s_after", "trailing_silence_s_before",
                 "trailing_silence_s_after", "lufs_before", "lufs_after", "snr_db")


def _summary_measurements(measurements: dict[str, Any]) -> dict[str, float]:
    """The measurements the statistics aggregate (numbers only, small to send back)."""
    return {key: float(measurements[key]) for key in _MEASUREMENTS
            if isinstance(measurements.get(key), (int, float))}


class AudioWorker:
    """Built once per worker process; turns a task (list of clip items) into rows or rejects."""

    def __init__(self, options: PrepareOptions, rank: int = 0) -> None:
        self.options = options
        self.rank = rank
        self.conditioner = Conditioner(options.conditioning)  # loads a VAD model once, if any

    def __call__(self, items: list[dict[str, Any]]) -> list[dict[str, Any] | Reject]:
        results: list[dict[str, Any] | Reject] = []
        for item in items:
            try:
                data = item.get("audio_bytes")
                if data is None and item.get("audio_file"):
                    data = read_clip(item["audio_file"])
                results.append(process_clip(data or b"", item, self.options, self.conditioner))
            except AudioDecodeError as error:
                results.append(Reject(item["path"], item["dialect"], error.reason, error.detail))
        return results


# --- planning --------------------------------------------------------------------------------

@dataclass
class _Plan:
    order: pd.DataFrame  # every selected row, in processing order, with its destinations
    shard_counts: dict[tuple[str, str], int]


def _plan(selected: dict[str, pd.DataFrame], options: PrepareOptions) -> _Plan:
    """Split each dialect by speaker, shuffle the combined config, and place every row in shards."""
    # each dialect aims at the fraction of all rows so far less what is already held out, so
    # whole-speaker rounding does not add up across small dialects
    splits: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    rows_so_far = held_out_rows = 0
    for dialect, table in selected.items():
        rows_so_far += len(table)
        splits[dialect] = split_by_speaker(
            table, options.validation_fraction, rng_for(options.seed, "split", dialect),
            target_rows=options.validation_fraction * rows_so_far - held_out_rows)
        held_out_rows += len(splits[dialect][1])
    # a speaker recorded under two dialects is held out in both, or `all` would not be
    # speaker-disjoint
    held_out = set().union(*(set(validation["client_id"]) for _, validation in splits.values()))
    trains, validations = [], []
    for train, validation in splits.values():
        moved = train["client_id"].isin(held_out).to_numpy()
        trains.append(train[~moved].assign(split="train"))
        validations.append(pd.concat([validation, train[moved]]).assign(split="validation"))
    parts = [shuffle(pd.concat(group, ignore_index=True), rng_for(options.seed, "all", split))
             for split, group in (("train", trains), ("validation", validations))
             if group and sum(len(t) for t in group)]
    order = pd.concat(parts, ignore_index=True)  # prepare() stops before an empty selection
    rows_per_shard = options.rows_per_shard
    order["all_shard"] = order.groupby("split").cumcount().to_numpy() // rows_per_shard
    order["dialect_shard"] = order.groupby("dialect").cumcount().to_numpy() // rows_per_shard
    shard_counts: dict[tuple[str, str], int] = {}
    for split, size in order["split"].value_counts().items():
        shard_counts[(ALL_CONFIG, split)] = math.ceil(size / rows_per_shard)
    for dialect, size in order["dialect"].value_counts().items():
        shard_counts[(dialect, "train")] = math.ceil(size / rows_per_shard)
    return _Plan(order, shard_counts)


def _tasks(order: pd.DataFrame,
           sources: dict[str, LoadedSource]) -> Iterator[list[dict[str, Any]]]:
    """Worker tasks in processing order; audio bytes are read only as tasks are handed out."""
    for start in range(0, len(order), TASK_ROWS):
        chunk = order.iloc[start:start + TASK_ROWS]
        items = [{key: row[key] for key in _META_FIELDS} |
                 {"nominal_duration": None if row["from_header"] else row["duration"]}
                 for row in chunk.to_dict("records")]
        for source_name, rows in chunk.groupby("source", sort=False):
            source = sources[source_name]
            positions = [chunk.index.get_loc(i) for i in rows.index]
            if source.clips_dir is not None:
                for position, path in zip(positions, rows["path"], strict=True):
                    items[position]["audio_file"] = str(source.clips_dir / path)
            else:
                for position, data in zip(positions, source.read_bytes(rows["row"].tolist()),
                                          strict=True):
                    items[position]["audio_bytes"] = data
        yield items


# --- writing ---------------------------------------------------------------------------------

class _ConfigWriter:
    """Writes one config/split's shards in order; a shard left with no rows is still written.

    Shards listed in ``finished`` (found complete by a resumed run) are not written again; rows
    meant for them are ignored.
    """

    def __init__(self, out_dir: Path, config: str, split: str, count: int, sample_rate: int,
                 finished: frozenset[int] = frozenset()):
        self.out_dir, self.config, self.split, self.count = out_dir, config, split, count
        self.finished = finished
        self.schema = prepared_schema(sample_rate)
        self.sample_rate = sample_rate
        self.index = -1
        self.writer: ShardWriter | None = None

    def _advance_to(self, index: int) -> None:
        while self.index < index:
            if self.writer is not None:
                self.writer.close()
            self.index += 1
            self.writer = (ShardWriter(shard_path(self.out_dir, self.config, self.split,
                                                  self.index, self.count), self.schema)
                           if self.index < self.count and self.index not in self.finished
                           else None)

    def add(self, row: pa.Table, index: int) -> None:
        self._advance_to(index)
        if self.writer is not None:
            self.writer.write(row)

    def close(self) -> None:
        self._advance_to(self.count)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


# --- the stage -------------------------------------------------------------------------------

STATE_FILE = ".parla_prepare_state.json"  # what a resumed run must match
# options that say how and where a run goes, not what it writes: not in the card or fingerprint
_RUN_SETTINGS = ("output_dir", "overwrite", "dry_run", "cache_dir", "num_workers", "engine")
# conditioning measurements of every kept clip, a line each as it is processed, so statistics
# survive an interruption (rows of finished shards are not processed again)
MEASUREMENTS_FILE = ".parla_measurements.jsonl"


def _check_output_dir(options: PrepareOptions) -> tuple[Path, bool]:
    """Refuse an output folder that cannot or must not be written, creating nothing yet: a bad
    source found after this check must leave no trace. Returns (folder, resumable): a folder
    left by an interrupted run with the same options may be resumed."""
    out = Path(options.output_dir).expanduser()
    if options.dry_run:
        return out, False
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} exists and is not a folder")
    if not out.exists():
        parent = out.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"--output_dir {out} cannot be created: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"--output_dir {out} cannot be created: {parent} is not writable")
        return out, False
    resumable = False
    if any(out.iterdir()):
        unknown = [p.name for p in out.iterdir()
                   if p.name not in (DATA_DIR, *REPORT_FILES) and not p.name.startswith(".")]
        if unknown:
            raise UsageError(f"--output_dir {out} holds files parla did not write "
                             f"({', '.join(sorted(unknown)[:5])}); refusing to write there")
        resumable = not options.overwrite and (out / STATE_FILE).is_file()
        if not options.overwrite and not resumable:
            raise UsageError(f"--output_dir {out} is not empty; pass --overwrite to replace it")
    try:
        probe = out / ".parla-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--output_dir {out} is not writable ({error.strerror})") from None
    return out, resumable


def _clear_output(out: Path) -> None:
    shutil.rmtree(out / DATA_DIR, ignore_errors=True)
    for name in (*REPORT_FILES, STATE_FILE, MEASUREMENTS_FILE):
        (out / name).unlink(missing_ok=True)


def _fingerprint(options: PrepareOptions, plan: _Plan) -> str:
    """Identifies a run's output: every option that changes bytes, and the planned rows."""
    settings = asdict(options)
    for irrelevant in (*_RUN_SETTINGS, "save_speaker_metadata"):
        settings.pop(irrelevant, None)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    columns = ["source", "row", "path", "split", "dialect", "all_shard", "dialect_shard"]
    digest.update(pd.util.hash_pandas_object(plan.order[columns], index=False).to_numpy()
                  .tobytes())
    return digest.hexdigest()


def _finished_shards(out: Path, plan: _Plan) -> dict[tuple[str, str], frozenset[int]]:
    finished: dict[tuple[str, str], set[int]] = {}
    for config, splits in find_shards(out).items():
        for split, paths in splits.items():
            for path in paths:
                parsed = parse_shard_name(path.name)
                if parsed and plan.shard_counts.get((config, split)) == parsed[2]:
                    finished.setdefault((config, split), set()).add(parsed[1])
    return {key: frozenset(indexes) for key, indexes in finished.items()}


def load_sources(options: PrepareOptions) -> dict[str, LoadedSource]:
    specs = [parse_source_spec(text) for text in options.datasets]
    sources: dict[str, LoadedSource] = {}
    for spec in specs:
        if spec.location in sources:
            raise UsageError(f"source {spec.location} is given twice")
        sources[spec.location] = load_source(spec, options.cache_dir)
    return sources


def select(options: PrepareOptions, sources: dict[str, LoadedSource]
           ) -> tuple[dict[str, pd.DataFrame], dict[str, list[StepCount]]]:
    """Per dialect: the selected rows and the counts after each selection step."""
    # clip_durations.tsv gives a nominal length to check decoding against; header lengths are
    # checked inside the decoder itself
    metadata = pd.concat([s.metadata.assign(from_header=s.kind != "cv_release")
                          for s in sources.values()], ignore_index=True)
    selected, counts = {}, {}
    for dialect in sorted(set(metadata["dialect"])):
        table, steps = select_dialect(metadata[metadata["dialect"] == dialect], options, dialect)
        selected[dialect], counts[dialect] = table, steps
    return selected, counts


def prepare(options: PrepareOptions) -> PrepareResult:
    """Run the prepare stage; returns where the output is and its statistics.

    Rerunning the same command on a folder left by an interrupted run resumes it: finished
    shards are kept and only the rows of unfinished shards are processed again. The output is
    the same, byte for byte, as that of an uninterrupted run.
    """
    started = time.monotonic()
    out, resumable = _check_output_dir(options)
    sources = load_sources(options)
    selected, counts = select(options, sources)
    if options.dry_run:
        for dialect, steps in counts.items():
            print(format_counts_table(f"{dialect} (dry run: nothing written)",
                                      [s.to_dict() for s in steps]))
        return PrepareResult(out, {}, counts)
    if not any(len(table) for table in selected.values()):
        raise UsageError("no clips are left after selection, so there is nothing to write; "
                         "--dry_run shows the rows left after each step")
    plan = _plan(selected, options)
    fingerprint = _fingerprint(options, plan)
    if resumable:
        state = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("fingerprint") != fingerprint:
            raise UsageError(f"--output_dir {out} holds a run with other options or inputs; "
                             "pass --overwrite to replace it")
        remove_stale_tmp(out)
    if options.overwrite:
        _clear_output(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--output_dir {out} cannot be created ({error.strerror})") from None
    write_json(out / STATE_FILE, {"fingerprint": fingerprint})

    finished = _finished_shards(out, plan) if resumable else {}
    writers = {key: _ConfigWriter(out, key[0], key[1], n, options.target_sample_rate,
                                  finished.get(key, frozenset()))
               for key, n in sorted(plan.shard_counts.items())}
    order = plan.order
    todo = order[_unfinished_rows(order, finished)]
    if resumable:
        log.info("resuming %s: %d of %d clips left to process", out, len(todo), len(order))

    rejects = RejectLog(out / REJECTS_FILE, append=resumable)
    for source in sources.values():
        rejects.extend(source.rejects)
    measurements_log = open(out / MEASUREMENTS_FILE, "a" if resumable else "w",
                            encoding="utf-8", buffering=1)
    map_tasks = get_engine(options.engine)
    bar = progress(desc="prepare", total=len(todo), unit="clips")
    destinations = todo[["split", "all_shard", "dialect", "dialect_shard"]].to_numpy()
    position = 0
    try:
        for results in map_tasks(_tasks(todo, sources),
                                 functools.partial(AudioWorker, options),
                                 num_workers=options.workers,
                                 describe_task=lambda items: items[0]["path"]):
            for result in results:
                split, all_shard, dialect, dialect_shard = destinations[position]
                position += 1
                if isinstance(result, Reject):
                    rejects.add(result)
                    continue
                row = prepared_table([result], options.target_sample_rate)
                writers[(ALL_CONFIG, split)].add(row, int(all_shard))
                writers[(dialect, "train")].add(row, int(dialect_shard))
                measurements_log.write(json.dumps(
                    {"dialect": dialect, "source_path": result["source_path"],
                     **result["measurements"]}) + "\n")
            bar.update(len(results))
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
        rejects.close()
        measurements_log.close()
    rejects.finalize()  # one sorted line per rejected clip, however often the run was resumed

    kept = _kept_rows(out)
    measured = _read_measurements(out / MEASUREMENTS_FILE)
    statistics = build_statistics(options, counts, kept, rejects, sources,
                                  time.monotonic() - started, _removed(out, plan), measured)
    write_json(out / STATISTICS_FILE, statistics)
    if options.save_speaker_metadata:
        write_json(out / SPEAKERS_FILE, speaker_metadata(kept))
    _write_card(out, options)
    print(format_summary(statistics))
    print(f"wrote {out} (rejects: {rejects.total()} in {out / REJECTS_FILE})")
    return PrepareResult(out, statistics, counts)


def _unfinished_rows(order: pd.DataFrame,
                     finished: dict[tuple[str, str], frozenset[int]]) -> np.ndarray:
    """Rows that still have a destination shard to be written (all rows on a fresh run)."""
    def done(configs: Any, indexes: Any) -> np.ndarray:
        return np.array([int(index) in finished.get(key, ()) for key, index in
                         zip(configs, indexes, strict=True)], dtype=bool)

    all_done = done([(ALL_CONFIG, split) for split in order["split"]], order["all_shard"])
    dialect_done = done([(dialect, "train") for dialect in order["dialect"]],
                        order["dialect_shard"])
    return ~(all_done & dialect_done)


def _read_measurements(path: Path) -> list[dict[str, Any]]:
    """The measurement lines, one per clip (a resumed run may have met a clip twice)."""
    by_clip: dict[tuple[str, str], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_clip[(record["dialect"], record.pop("source_path"))] = record
    return [by_clip[key] for key in sorted(by_clip)]


def _removed(out: Path, plan: _Plan) -> list[tuple[str, str, float]]:
    """(dialect, reason, seconds) of every selected clip that was rejected while processing."""
    keys = zip(plan.order["dialect"], plan.order["path"], strict=True)
    seconds = dict(zip(keys, plan.order["duration"], strict=True))
    removed = []
    for line in (out / REJECTS_FILE).read_text(encoding="utf-8").splitlines():
        reject = json.loads(line)
        key = (reject["dialect"], reject["source_path"])
        if key in seconds:
            removed.append((reject["dialect"], reject["reason"], float(seconds[key])))
    return removed


def _kept_rows(out: Path) -> list[dict[str, Any]]:
    """Small facts of every written row, read back from the ``all`` shards (no audio)."""
    kept: list[dict[str, Any]] = []
    columns = ["dialect", "speaker_id", "gender", "age", "duration"]
    for split, paths in find_shards(out).get(ALL_CONFIG, {}).items():
        for path in paths:
            for row in read_shard(path, columns).to_pylist():
                kept.append(row | {"split": split})
    return kept


def _write_card(out: Path, options: PrepareOptions) -> None:
    from .hub import write_dataset_card

    parameters = asdict(options)
    for private in _RUN_SETTINGS:
        parameters.pop(private, None)
    write_dataset_card(out, kind="prepared", parameters=parameters)


# --- statistics ------------------------------------------------------------------------------

def _output_counts(rows: pd.DataFrame) -> dict[str, Any]:
    speakers = int(rows["speaker_id"].nunique()) if len(rows) else 0
    hours = float(rows["duration"].sum()) / 3600 if len(rows) else 0.0
    return {"rows": len(rows), "speakers": speakers,
            "samples_per_speaker": round(len(rows) / speakers, 2) if speakers else 0.0,
            "hours": round(hours, 4),
            "mean_duration": round(float(rows["duration"].mean()), 3) if len(rows) else 0.0}


def conditioning_effect(rows: pd.DataFrame,
                        removed: list[tuple[str, str, float]]) -> dict[str, Any]:
    """Before/after figures of conditioning on kept rows, and the hours each rule removed."""
    def mean(column: str) -> float | None:
        values = rows[column].dropna() if column in rows else pd.Series(dtype=float)
        return round(float(values.mean()), 4) if len(values) else None

    def spread(column: str) -> float | None:
        values = rows[column].dropna() if column in rows else pd.Series(dtype=float)
        return round(float(values.std(ddof=0)), 3) if len(values) else None

    hours_removed: dict[str, float] = {}
    if "duration_s_before" in rows and "duration_s_after" in rows:
        trimmed = (rows["duration_s_before"] - rows["duration_s_after"]).sum()
        hours_removed["trimming"] = round(float(trimmed) / 3600, 4)
    for _, reason, seconds in removed:
        hours_removed[reason] = hours_removed.get(reason, 0.0) + seconds / 3600
    return {
        "leading_silence_s": {"before": mean("leading_silence_s_before"),
                              "after": mean("leading_silence_s_after")},
        "trailing_silence_s": {"before": mean("trailing_silence_s_before"),
                               "after": mean("trailing_silence_s_after")},
        "lufs_std": {"before": spread("lufs_before"), "after": spread("lufs_after")},
        "mean_snr_db": mean("snr_db"),
        "hours_removed": {reason: round(hours, 4) for reason, hours in
                          sorted(hours_removed.items())},
    }


def build_statistics(options: PrepareOptions, counts: dict[str, list[StepCount]],
                     kept: list[dict[str, Any]], rejects: RejectLog,
                     sources: dict[str, LoadedSource], elapsed: float,
                     removed: list[tuple[str, str, float]] | None = None,
                     measured: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Statistics of a run. ``kept`` is every written row; ``measured``/``removed`` are the
    conditioning measurements of every kept clip and the rejected clips' (dialect, reason, seconds).
    """
    removed = removed or []
    rows = pd.DataFrame(kept, columns=["dialect", "split", "speaker_id", "gender", "age",
                                       "duration"])
    measurements = pd.DataFrame(measured or [], columns=["dialect", *_MEASUREMENTS])
    dialects = {}
    for dialect, steps in counts.items():
        mine = rows[rows["dialect"] == dialect]
        dialects[dialect] = {
            "steps": [s.to_dict() for s in steps],
            "rejected": dict(sorted(rejects.counts.get(dialect, {}).items())),
            "output": _output_counts(mine),
            "conditioning": conditioning_effect(
                measurements[measurements["dialect"] == dialect],
                [entry for entry in removed if entry[0] == dialect]),
        }
    total = _output_counts(rows) | {"conditioning": conditioning_effect(measurements, removed),
                                    "clips_measured": len(measurements)}
    validation = rows[rows["split"] == "validation"]
    total |= {"rejected": rejects.total(),
              "train_rows": int((rows["split"] == "train").sum()),
              "validation_rows": len(validation),
              "validation_speakers": int(validation["speaker_id"].nunique()),
              "rows_without_dialect": sum(s.rows_without_dialect for s in sources.values()),
              "elapsed_seconds": round(elapsed, 2)}
    return {"parameters": {"seed": options.seed, "target_sample_rate": options.target_sample_rate,
                           "resampler": options.resampler, "min_duration": options.min_duration,
                           "max_duration": options.max_duration,
                           "min_samples_per_speaker": options.min_samples_per_speaker,
                           "balance_speakers": options.balance_speakers,
                           "max_samples_per_speaker": options.max_samples_per_speaker,
                           "samples_per_dialect": options.samples_per_dialect,
                           "validation_fraction": options.validation_fraction},
            "dialects": dialects, "total": total}


def speaker_metadata(kept: list[dict[str, Any]]) -> dict[str, Any]:
    speakers: dict[str, dict[str, Any]] = {}
    for row in kept:
        entry = speakers.setdefault(row["speaker_id"], {
            "dialect": row["dialect"], "gender": row["gender"], "age": row["age"],
            "split": row["split"], "clips": 0, "seconds": 0.0})
        entry["clips"] += 1
        entry["seconds"] = round(entry["seconds"] + float(row["duration"]), 3)
    return dict(sorted(speakers.items()))


# --- demo ------------------------------------------------------------------------------------

def run_demo(output_dir: str = "parla_demo_output", overwrite: bool = False,
             num_workers: int | None = None) -> PrepareResult:
    """Prepare the embedded demo corpus and say how to load the result."""
    from .demo import demo_corpus_path

    options = PrepareOptions(datasets=(str(demo_corpus_path()),), output_dir=output_dir,
                             overwrite=overwrite, num_workers=num_workers,
                             max_samples_per_speaker=8, save_speaker_metadata=True)
    result = prepare(options)
    print(f"\nDemo corpus prepared in {result.output_dir.resolve()}\nLoad it with:\n"
          f"  import datasets\n"
          f"  ds = datasets.load_dataset({str(result.output_dir)!r}, 'all', "
          f"cache_dir='/tmp/parla-cache')\n"
          f"  central = datasets.load_dataset({str(result.output_dir)!r}, 'central', "
          f"split='train', cache_dir='/tmp/parla-cache')\n"
          f"(a fresh cache_dir: datasets caches a local folder by its name, so a regenerated "
          f"folder could read back stale rows)")
    return result
