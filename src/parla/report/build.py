"""Writing report.html and its sample clips, and reading a prepared folder into the report's data.

`write_report` takes plain data (documented there); `read_prepared_folder` reads today's folder
layout into that data, kept apart so that a new layout changes only that function.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parla.dialects import ALL_CONFIG
from parla.errors import UsageError
from parla.report.page import render_report
from parla.report.statistics import clips_table
from parla.store.files import remove_tree, write_bytes_atomic
from parla.store.layout import (
    PACKED_CONFIG,
    PREPARE_STAGE,
    REJECTS_FILE,
    REPORT_DIR,
    REPORT_FILE,
    STATISTICS_FILE,
)
from parla.store.shards import find_shards, parquet_file, read_shard_record
from parla.store.urls import as_path, is_remote, map_io

SAMPLES_PER_DIALECT = 3


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text) or "x"


def _write_samples(out: Path, samples: Mapping[str, Sequence[Mapping[str, Any]]]
                   ) -> dict[str, list[dict[str, Any]]]:
    written: dict[str, list[dict[str, Any]]] = {}
    files: list[tuple[Path, bytes]] = []
    for dialect, items in samples.items():
        folder = out / REPORT_DIR / "audio" / _safe_name(dialect)
        for index, item in enumerate(items):
            entry = {"text": item.get("text", ""), "speaker_id": item.get("speaker_id", "")}
            conditioned = folder / f"{index}-conditioned.flac"
            files.append((conditioned, item["audio"]))
            entry["audio"] = conditioned.relative_to(out).as_posix()
            entry["source"] = None
            if item.get("source"):
                suffix = "." + _safe_name(str(item.get("source_suffix") or ".mp3").lstrip("."))
                source = folder / f"{index}-source{suffix}"
                files.append((source, item["source"]))
                entry["source"] = source.relative_to(out).as_posix()
            written.setdefault(dialect, []).append(entry)
    map_io(lambda file: write_bytes_atomic(*file), files, concurrent=is_remote(out))
    return written


def write_report(out_dir: str | os.PathLike, statistics: Mapping[str, Any],
                 clips: Sequence[Mapping[str, Any]], rejects: Sequence[Mapping[str, Any]],
                 samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write ``<out_dir>/report.html`` and its sample clips under ``<out_dir>/report/``.

    Everything is plain data:

    - ``statistics``: the ``dialect_statistics.json`` dict (`prepare.build_statistics`):
      ``dialects`` -> name -> {``steps``: [{step, rows, speakers, hours}], ``rejected``:
      {reason: count}, ``output``: {rows, speakers, samples_per_speaker, hours, mean_duration},
      ``conditioning``: {..., mean_snr_db}}, and ``total`` (the same output keys plus rejected,
      train_rows, validation_rows). Missing keys show as "—".
    - ``clips``: one dict per kept clip: ``dialect``, ``speaker_id``, ``duration`` and, where
      measured, ``snr_db``, ``chars_per_sec``, ``duration_s_before``/``_after``,
      ``leading_silence_s_before``/``_after``, ``trailing_silence_s_before``/``_after``,
      ``lufs_before``/``_after``, ``dnsmos_ovrl``/``_sig``/``_bak``. Any of the measured keys
      may be missing (``--no_condition_audio``, no ``--dnsmos``): that figure then says so.
    - ``rejects``: the ``rejects.jsonl`` dicts (source_path, dialect, reason, detail).
    - ``samples``: dialect -> a few {``text``, ``speaker_id``, ``audio``: conditioned FLAC bytes,
      ``source``: the original clip's bytes or None, ``source_suffix``: e.g. ``.mp3``}.

    The ``report/`` folder is parla's: it is replaced on every call. Returns the page's path.
    """
    out = as_path(out_dir)
    remove_tree(out / REPORT_DIR)
    sample_files = _write_samples(out, samples)
    page = render_report(statistics, clips, rejects, sample_files)
    write_bytes_atomic(out / REPORT_FILE, page.encode("utf-8"))
    return out / REPORT_FILE


def read_prepared_folder(folder: str | os.PathLike, source_dirs: Sequence[str | os.PathLike] = (),
                         samples_per_dialect: int = SAMPLES_PER_DIALECT) -> dict[str, Any]:
    """`write_report`'s inputs from a prepared folder: its statistics and rejects, and the
    per-clip measurements from its shards' footer records. Source clips are looked up as
    ``clips/<source_path>`` or ``<source_path>`` under each of ``source_dirs``."""
    from parla.store.shards import find_shards

    out = as_path(folder)
    if not (out / STATISTICS_FILE).is_file():
        raise UsageError(f"{out} has no {STATISTICS_FILE}: not a prepared folder")
    statistics = json.loads((out / STATISTICS_FILE).read_text(encoding="utf-8"))
    rejects_path = out / REJECTS_FILE
    rejects = ([json.loads(line) for line in rejects_path.read_text(encoding="utf-8").splitlines()
                if line.strip()] if rejects_path.is_file() else [])
    records = [record for splits in find_shards(out).values() for paths in splits.values()
               for path in paths if (record := read_shard_record(path, PREPARE_STAGE)) is not None]
    return {"statistics": statistics, "clips": report_clips(records), "rejects": rejects,
            "samples": collect_samples(out, samples_per_dialect,
                                       lambda row: _source_from_dirs(row, source_dirs))}


def report_clips(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per kept clip from the shards' records, missing measurements left out."""
    return [{key: value for key, value in clip.items()
             if value is not None and not (isinstance(value, float) and np.isnan(value))}
            for clip in clips_table(records).to_dict("records")]


def collect_samples(folder: Path, samples_per_dialect: int, read_source: Any,
                    shards: Mapping[str, Mapping[str, Sequence[Path]]] | None = None
                    ) -> dict[str, list[dict[str, Any]]]:
    """The first rows of each dialect's first train shard (or validation), as report samples;
    ``read_source(row)`` gives the row's original clip bytes, or None. ``shards`` is the
    folder's `find_shards` when the caller has it."""
    samples: dict[str, list[dict[str, Any]]] = {}
    for config, splits in sorted((find_shards(folder) if shards is None else shards).items()):
        if config in (ALL_CONFIG, PACKED_CONFIG):
            continue
        for path in [p for split in ("train", "validation") for p in splits.get(split, [])]:
            wanted = samples_per_dialect - len(samples.get(config, []))
            if wanted <= 0:
                break
            with parquet_file(path) as parquet:
                first = (parquet.read_row_group(0).slice(0, wanted).to_pylist()
                         if parquet.metadata.num_row_groups else [])
            if first:
                samples.setdefault(config, []).extend(_sample(row, read_source(row))
                                                      for row in first)
    return samples


def _source_from_dirs(row: Mapping[str, Any], source_dirs: Sequence[str | os.PathLike]
                      ) -> bytes | None:
    source_path = str(row.get("source_path") or "")
    if source_path and not Path(source_path).is_absolute() and ".." not in Path(source_path).parts:
        for base in source_dirs:
            for candidate in (as_path(base) / "clips" / source_path, as_path(base) / source_path):
                if candidate.is_file():
                    return candidate.read_bytes()
    return None


def _sample(row: Mapping[str, Any], source: bytes | None) -> dict[str, Any]:
    source_path = str(row.get("source_path") or "")
    return {"text": row.get("original_text") or row.get("text", ""),
            "speaker_id": row.get("speaker_id", ""), "audio": row["audio"]["bytes"],
            "source": source, "source_suffix": Path(source_path).suffix or ".mp3"}


