"""The dataset card of a folder: its configs and numbers read from the shards, then written.

The numbers are computed from the data files themselves (rows, speakers, hours per split), so the
card always matches the data. Rendering the text is `card.render`; this module does the reading
and the writing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from parla.card.names import public_parameters
from parla.card.render import SplitStats, read_card_state, render_card
from parla.dialects import ALL_CONFIG, DIALECTS
from parla.errors import UsageError
from parla.progress import get_logger
from parla.store.files import write_text_atomic
from parla.store.layout import CARD_FILE, PACK_STAGE, PACKED_CONFIG
from parla.store.shards import find_shards, parquet_file, read_schema, read_shard_record, shard_glob
from parla.store.urls import as_path, is_remote, map_io
from parla.tokens.packing import combine_summaries

log = get_logger("card")

Shards = Mapping[str, Mapping[str, Sequence[Path]]]  # a `find_shards` result

_STAT_COLUMNS = ("speaker_id", "duration")


@dataclass(frozen=True)
class _ShardNumbers:
    rows: int
    speakers: frozenset | None  # None: no speaker_id column
    seconds: float | None  # None: no duration column


def _shard_numbers(path: Path) -> _ShardNumbers:
    """Rows, speakers and seconds of one shard, reading only its small columns."""
    with parquet_file(path) as parquet:
        names = set(parquet.schema_arrow.names)
        columns = [name for name in _STAT_COLUMNS if name in names]
        table = parquet.read(columns=columns) if columns else None
        rows = parquet.metadata.num_rows
    speakers = seconds = None
    if "speaker_id" in names:
        speakers = frozenset(pc.unique(table.column("speaker_id")).to_pylist())
    if "duration" in names:
        # summed in float64: float32 sums drift over hundreds of thousands of clips
        seconds = pc.sum(table.column("duration").cast(pa.float64())).as_py() or 0.0
    return _ShardNumbers(rows, speakers, seconds)


def split_stats(config: str, split: str, shards: Sequence[_ShardNumbers]) -> SplitStats:
    """One split's numbers from its shards' (in the order of its files)."""
    has_speakers = all(shard.speakers is not None for shard in shards)
    has_duration = all(shard.seconds is not None for shard in shards)
    speakers = set().union(*(shard.speakers or () for shard in shards))
    seconds = 0.0
    for shard in shards:
        seconds += shard.seconds or 0.0
    return SplitStats(config, split, sum(shard.rows for shard in shards),
                      len(speakers) if has_speakers else None,
                      seconds if has_duration else None)


def _config_order(config: str) -> tuple[int, int, str]:
    if config == ALL_CONFIG:
        return (0, 0, config)
    known = list(DIALECTS)
    return (1, known.index(config), config) if config in known else (2, 0, config)


def folder_statistics(folder: str | os.PathLike, shards: Shards | None = None
                      ) -> tuple[dict[str, dict[str, Any]], list[SplitStats]]:
    """The `data_files` patterns and the numbers of every config and split found in a folder.

    Each clip is stored once, in its group's (dialect's) config; ``all`` is the union of the
    group configs' files, defined only in the card, so it costs no storage and no second encode.
    """
    shards = find_shards(folder) if shards is None else shards
    files = sorted({path for splits in shards.values() for paths in splits.values()
                    for path in paths}, key=str)
    # each shard read once (the `all` config reuses its groups'), several at once on a store
    numbers = dict(zip(files, map_io(_shard_numbers, files, concurrent=is_remote(folder)),
                       strict=True))
    configs: dict[str, dict[str, Any]] = {}
    stats: list[SplitStats] = []
    dialects = [config for config in sorted(shards, key=_config_order)
                if config not in (ALL_CONFIG, PACKED_CONFIG)]
    if dialects and ALL_CONFIG not in shards:
        for split in _ordered_splits({s for d in dialects for s in shards[d]}):
            members = [d for d in dialects if split in shards[d]]
            configs.setdefault(ALL_CONFIG, {})[split] = [shard_glob(d, split) for d in members]
            stats.append(split_stats(ALL_CONFIG, split, [numbers[p] for d in members
                                                         for p in shards[d][split]]))
    for config in sorted(shards, key=_config_order):
        for split in _ordered_splits(shards[config]):
            configs.setdefault(config, {})[split] = shard_glob(config, split)
            stats.append(split_stats(config, split, [numbers[p] for p in shards[config][split]]))
    return configs, stats


def _ordered_splits(splits: Iterable[str]) -> list[str]:
    return sorted(splits, key=lambda s: (s != "train", s != "validation", s))


def _first_schema(folder: Path, shards: Shards | None = None) -> list[tuple[str, str]]:
    """Columns of the first shard of the examples' configs (`packed` has its own section)."""
    shards = find_shards(folder) if shards is None else shards
    for splits in [s for c, s in shards.items() if c != PACKED_CONFIG] or shards.values():
        for paths in splits.values():
            schema = read_schema(paths[0])
            return [(field.name, str(field.type)) for field in schema]
    return []


def _report_summary(folder: Path, repo_id: str | None) -> str | None:
    """The card's report section, when the folder has report.html and its statistics."""
    from parla.card.render import card_summary
    from parla.store.layout import REPORT_FILE, STATISTICS_FILE

    statistics = folder / STATISTICS_FILE
    if not (folder / REPORT_FILE).is_file() or not statistics.is_file():
        return None
    return card_summary(json.loads(statistics.read_text(encoding="utf-8")), repo_id)


def card_text(folder: Path, kind: str, parameters: Mapping[str, Any],
              repo_id: str | None = None, shards: Shards | None = None) -> str:
    """The card of ``folder`` as its shards (and packed config, and report) say now; a local
    path among the parameters shows as its name (the card is public once published).
    ``shards`` is the folder's `find_shards` when the caller has it (one scan a run)."""
    shards = find_shards(folder) if shards is None else shards
    configs, table_rows = folder_statistics(folder, shards)
    if not configs:
        raise UsageError(f"no shards under {folder / 'data'}: nothing to describe")
    return render_card(configs, table_rows, public_parameters(parameters), kind, repo_id=repo_id,
                       columns=_first_schema(folder, shards),
                       packed=read_packed_summary(folder, shards),
                       report=_report_summary(folder, repo_id))


def write_dataset_card(folder: str | os.PathLike, *, kind: str, parameters: Mapping[str, Any],
                       repo_id: str | None = None, shards: Shards | None = None) -> Path:
    """Write ``<folder>/README.md`` from the shards found there (``shards``, when the caller
    has scanned the folder); stages call this last."""
    folder = as_path(folder)
    text = card_text(folder, kind, parameters, repo_id, shards)
    path = folder / CARD_FILE
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return path


def updated_card(folder: str | os.PathLike, repo_id: str | None = None) -> str | None:
    """The text a parla card of ``folder`` should hold now (regenerated from the current shards,
    naming the repo in its examples), or None for a README that parla did not write.

    A missing card is made with the kind guessed from the columns and no recorded parameters.
    """
    folder = as_path(folder)
    path = folder / CARD_FILE
    if path.is_file():
        state = read_card_state(path.read_text(encoding="utf-8"))
        if state is None:
            return None
        kind, parameters = state
    else:
        names = {name for name, _ in _first_schema(folder)}
        kind, parameters = ("tokenized" if "input_ids" in names else "prepared"), {}
    return card_text(folder, kind, parameters, repo_id)


def refresh_dataset_card(folder: str | os.PathLike, repo_id: str | None = None) -> Path | None:
    """Regenerate a parla card in ``folder`` (see `updated_card`); a README that parla did not
    write is left alone (returns None)."""
    folder = as_path(folder)
    text = updated_card(folder, repo_id)
    if text is None:
        log.warning("%s was not written by parla; leaving it as it is", folder / CARD_FILE)
        return None
    path = folder / CARD_FILE
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return path


def read_packed_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record in a packed shard's footer; None for any other file."""
    record = read_shard_record(path, PACK_STAGE)
    return record if record is not None and "summary" in record else None


def read_packed_summary(folder: str | os.PathLike, shards: Shards | None = None
                        ) -> dict[str, Any] | None:
    """The packed config's numbers from its shards' footers (for the card); None without one."""
    found = (find_shards(folder) if shards is None else shards).get(PACKED_CONFIG)
    if not found:
        return None
    summaries: dict[str, dict] = {}
    settings: Mapping[str, Any] = {}
    for split, paths in found.items():
        record = read_packed_record(paths[0])
        if record is None:
            return None
        summaries[split], settings = record["summary"], record["settings"]
    return combine_summaries(summaries, settings["pack_length"], settings["seed"])
