"""The prepare worker: one shard task in, one finished shard on disk and its small record out.

Built once per worker process (or Ray actor). For each speaker of the shard it reads, decodes,
resamples and conditions candidate clips in their seeded order until the speaker's quota is met
(back-fill: a rejected clip is replaced by the next spare), or, with ``select_by="quality"``,
it measures every candidate and keeps the best. It writes the shard atomically with its record
(settings, statistics, rejects, per-clip measurements) in the parquet footer, and returns that
record: the driver moves records, never audio.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parla.audio import decode as audio
from parla.conditioning.policy import Conditioner
from parla.dialects import DIALECTS
from parla.errors import Reject, RowRejected, UsageError
from parla.options import PrepareOptions
from parla.stages.planning import PrepareTask, SpeakerGroup
from parla.store.clips import ClipReader
from parla.store.layout import PREPARE_STAGE
from parla.store.shards import prepared_table, write_table_atomic

# per-clip measurements kept in the shard record (numbers only), for statistics and the report
MEASUREMENTS = ("duration_s_before", "duration_s_after", "leading_silence_s_before",
                "leading_silence_s_after", "trailing_silence_s_before",
                "trailing_silence_s_after", "lufs_before", "lufs_after", "snr_db",
                "chars_per_sec", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
CLIP_FACTS = ("source_path", "speaker_id", "gender", "age", "duration")


def _expected_format(path: str) -> str | None:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in ("mp3", "wav", "flac", "ogg") else None


def process_clip(data: bytes, item: Mapping[str, Any], options: PrepareOptions,
                 conditioner: Conditioner, scorer: Any = None,
                 voices: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Decode, check, resample, condition, score and encode one clip into a prepared row.

    Raises RowRejected (ClipRejected is one) for a clip that cannot be training data. The
    duration limits apply to the conditioned (trimmed) clip. ``voices`` maps a group id to its
    voice name (the text prefix); without it the groups are the Catalan dialects.
    """
    resampler = audio.resolve_resampler(options.resampler)
    samples, sample_rate = audio.decode_audio(
        data, _expected_format(item["path"]), item.get("nominal_duration"),
        mpg123_rate=options.target_sample_rate if resampler == "mpg123" else None)
    samples = audio.resample(samples, sample_rate, options.target_sample_rate, resampler)
    clip = conditioner(samples, options.target_sample_rate, item["sentence"])
    duration = clip.samples.size / options.target_sample_rate
    if not options.min_duration <= duration <= options.max_duration:
        raise RowRejected("duration_out_of_range", f"{duration:.2f}s after conditioning")
    measurements = dict(clip.measurements)
    if scorer is not None:
        measurements |= score_clip(scorer, clip.samples, options)
    voice = voices[item["dialect"]] if voices is not None else DIALECTS[item["dialect"]].voice_name
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
        "measurements": {key: float(measurements[key]) for key in MEASUREMENTS
                         if isinstance(measurements.get(key), (int, float))},
    }


def require_resampler(options: PrepareOptions) -> None:
    """Refuse --resampler mpg123 on a machine without the libmpg123 library (UsageError)."""
    if audio.resolve_resampler(options.resampler) == "mpg123":
        from parla.audio.mpg123 import available

        if not available():
            raise UsageError("--resampler mpg123 needs the libmpg123 library, which this "
                             "machine lacks (Debian/Ubuntu: apt install libmpg123-0); "
                             "--resampler soxr needs nothing more")


def require_flac_encoder(wanted: str | None) -> None:
    """Refuse to write with another FLAC encoder than the run's driver chose (UsageError): the
    bytes would differ from shard to shard. None (no run to match) accepts any."""
    here = audio.flac_encoder()
    if wanted is not None and here != wanted:
        raise UsageError(f"this machine encodes FLAC with {here}, the run's driver with {wanted}: "
                         "the driver and every worker machine need the same libFLAC (Debian/"
                         "Ubuntu: libflac12, libflac14 or libflac12t64), or, without it, the "
                         "same libsndfile")


def score_clip(scorer: Any, samples: Any, options: PrepareOptions) -> dict[str, float]:
    """DNSMOS scores of a conditioned clip; a clip under --min_dnsmos is rejected."""
    from parla.conditioning.dnsmos import dnsmos_reject

    scores = scorer(samples, options.target_sample_rate)
    verdict = dnsmos_reject(scores, options.min_dnsmos)
    if verdict is not None:
        raise RowRejected(*verdict)
    return scores


def quality_score(row: Mapping[str, Any]) -> float:
    """What --select_by quality ranks a speaker's clips by: DNSMOS when scored, else SNR."""
    measured = row["measurements"]
    value = measured.get("dnsmos_ovrl", measured.get("snr_db"))
    return float(value) if value is not None else float("-inf")


class ShardPreparer:
    """Turns a shard task into a written shard; its state (the speech detector, the DNSMOS
    sessions, the source readers) is built once per worker."""

    def __init__(self, options: PrepareOptions, readers: Mapping[str, ClipReader],
                 settings: Mapping[str, Any], rank: int = 0,
                 voices: Mapping[str, str] | None = None) -> None:
        del rank  # every worker prepares alike (the engines' factory protocol passes one)
        self.options = options
        self.voices = dict(voices) if voices is not None else None  # group id -> text prefix
        self.readers = dict(readers)
        self.settings = dict(settings)  # what every shard's record says made it
        # again here: a Ray node may lack what the driver has
        require_resampler(options)
        require_flac_encoder(self.settings.get("flac_encoder"))
        # a worker decodes clip after clip: keeping freed memory for reuse saves the page
        # faults of each clip's fresh arrays, about a millisecond a clip
        audio.reuse_freed_memory()
        # loads a VAD model once, if any; the text rules are the run's language's
        self.conditioner = Conditioner(options.conditioning, language=options.language or "ca")
        self.scorer = None
        if options.dnsmos:
            from parla.conditioning.dnsmos import DnsmosScorer

            self.scorer = DnsmosScorer()

    def _process(self, item: Mapping[str, Any]) -> dict[str, Any] | Reject:
        try:
            data = self.readers[item["source"]].read(int(item["row"]), item["path"])
            return process_clip(data, item, self.options, self.conditioner, self.scorer,
                                self.voices)
        except RowRejected as error:
            return Reject(item["path"], item["dialect"], error.reason, error.detail)

    def _fill(self, group: SpeakerGroup) -> tuple[list[dict], list[Reject], list[dict]]:
        """(kept rows, rejects, candidates that passed but were not kept) of one speaker."""
        kept: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        passed: list[tuple[int, dict[str, Any]]] = []
        quality = self.options.select_by == "quality"
        for position, item in enumerate(group.candidates):
            if not quality and len(kept) == group.quota:
                break  # random selection: the first clips that pass are kept
            result = self._process(item)
            if isinstance(result, Reject):
                rejects.append(result)
                continue
            result["backfilled"] = not item["selected"]
            if quality:
                passed.append((position, result))
            else:
                kept.append(result)
        if not quality:
            return kept, rejects, []
        # best score first, the seeded candidate order breaking ties; kept in candidate order
        ranked = sorted(passed, key=lambda entry: (-quality_score(entry[1]), entry[0]))
        chosen = sorted(ranked[:group.quota], key=lambda entry: entry[0])
        return [row for _, row in chosen], rejects, [row for _, row in ranked[group.quota:]]

    def __call__(self, task: PrepareTask) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        dropped: list[dict[str, Any]] = []
        short = 0
        seconds_by_path = {c["path"]: float(c["duration"]) for g in task.groups
                           for c in g.candidates}
        for group in task.groups:
            kept, group_rejects, group_dropped = self._fill(group)
            short += len(kept) < group.quota
            rows += kept
            rejects += group_rejects
            dropped += group_dropped
        record = shard_record(task, self.settings, rows, rejects, dropped, short,
                              seconds_by_path)
        table = prepared_table(rows, self.options.target_sample_rate,
                               dnsmos=self.scorer is not None)
        write_table_atomic(task.path, table, record=record, stage=PREPARE_STAGE)
        return record


def shard_record(task: PrepareTask, settings: Mapping[str, Any], rows: list[dict[str, Any]],
                 rejects: list[Reject], dropped: list[dict[str, Any]], short_speakers: int,
                 seconds_by_path: Mapping[str, float]) -> dict[str, Any]:
    """What a prepared shard's footer says about it (plain JSON data)."""
    removed: dict[str, float] = {}
    for reject in rejects:
        removed[reject.reason] = removed.get(reject.reason, 0.0) + seconds_by_path.get(
            reject.source_path, 0.0)
    clips: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in CLIP_FACTS}
    clips["duration"] = [round(float(value), 6) for value in clips["duration"]]
    clips["backfilled"] = [bool(row["backfilled"]) for row in rows]
    for key in MEASUREMENTS:
        values = [row["measurements"].get(key) for row in rows]
        if any(value is not None for value in values):
            clips[key] = [None if value is None else round(value, 6) for value in values]
    record = {
        "settings": dict(settings), "task": task.digest(),
        "config": task.config, "split": task.split, "index": task.index, "count": task.count,
        "planned_rows": task.rows, "rows": len(rows), "short_speakers": short_speakers,
        "clips": clips,
        "rejects": [reject.to_dict() for reject in rejects],
        "removed_seconds": {reason: round(value, 6) for reason, value in sorted(removed.items())},
        "quality_dropped": [{"speaker_id": row["speaker_id"], "source_path": row["source_path"],
                             "score": quality_score(row)} for row in dropped],
    }
    # as the footer will give it back to a resumed run: both runs build the same reports
    return json.loads(json.dumps(record, sort_keys=True))
