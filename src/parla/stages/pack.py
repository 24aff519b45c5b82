"""The `packed` config: whole Orpheus examples concatenated into training rows of exactly N tokens.

Why: transformers' default collator stacks rows, so rows of unequal length crash at batch size
> 1; fixed-length rows batch at any size and waste only the padding at each row's end.

A row holds whole examples (never one split across rows) in a seeded random order, placed by
best fit (each example goes into the open row it fills most tightly), then padding:

- ``input_ids``: the examples, then PAD_TOKEN (128263) up to N;
- ``labels``: the examples' tokens, -100 on the padding and on each example's first token, so
  every example is scored on exactly the tokens it is scored on alone (the first token has
  nothing before it in the example; predicting it from the previous example teaches nothing);
- ``attention_mask``: 1 on the examples, 0 on the padding;
- ``position_ids``: 0, 1, 2, ... restarting at every example (and at the padding).

Examples longer than N are skipped and counted. The planning and the row layout are pure
functions on plain data; `update_packed` is the stage step that reads the tokenized shards and
writes ``data/packed/<split>-*.parquet`` through the shard runner, each shard with its footer
record (settings with the source digest, the split's numbers): a rerun keeps the packed shards
that match and rewrites the others, and reads no example of a split whose set is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parla.dialects import ALL_CONFIG
from parla.progress import get_logger
from parla.stages.runner import ShardStage, run_shards
from parla.store.files import remove_tree
from parla.store.layout import PACK_STAGE, PACKED_CONFIG
from parla.store.shards import (
    DATA_DIR,
    find_shards,
    parse_shard_name,
    read_shard,
    read_shard_record,
    shard_path,
    shard_paths,
    shard_rows,
    write_table_atomic,
)
from parla.store.urls import as_path
from parla.tokens.packing import combine_summaries, pack_rows, plan_rows, summarize

log = get_logger("packing")

TOKENS_PER_SHARD = 1 << 23  # rows per shard = this // N: ~8M tokens, tens of MB on disk
FORMAT_VERSION = 1  # bump when the row layout changes: older packed shards are rewritten
COLUMNS = ("input_ids", "labels", "attention_mask", "position_ids")
SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                    ("attention_mask", pa.list_(pa.int8())),
                    ("position_ids", pa.list_(pa.int32()))])


# --- planning (pure) ---------------------------------------------------------------------------


def packing_sources(found: Mapping[str, Mapping[str, Sequence[Path]]]
                    ) -> dict[str, list[Path]]:
    """The tokenized shards to pack, by split, holding every example once.

    The dialect configs (every config but `all` and `packed`) by split; but where a physical
    `all` config exists and no dialect config has a validation split, `all`: that is the layout
    whose dialect configs are train-only copies of `all`, which alone holds the speaker-disjoint
    validation split. Where `all` is only a card-level union of the dialect files, no `all`
    folder exists and the dialect configs are used.
    """
    dialects = {config: splits for config, splits in found.items()
                if config not in (ALL_CONFIG, PACKED_CONFIG)}
    if ALL_CONFIG in found and not any("validation" in s for s in dialects.values()):
        chosen: Mapping[str, Mapping[str, Sequence[Path]]] = {ALL_CONFIG: found[ALL_CONFIG]}
    else:
        chosen = dialects
    by_split: dict[str, list[Path]] = {}
    for config in sorted(chosen):
        for split, paths in chosen[config].items():
            by_split.setdefault(split, []).extend(as_path(p) for p in paths)
    return {split: by_split[split] for split in sorted(by_split)}


# --- the stage step ----------------------------------------------------------------------------

def _sources_digest(folder: Path, sources: Mapping[str, Sequence[Path]]) -> str:
    """Names, rows and sizes of the source shards: tokenized shards are byte-deterministic, so
    equal digests mean the same examples."""
    entries = [(split, str(path.relative_to(folder)), shard_rows(path),
                path.stat().st_size) for split in sorted(sources) for path in sources[split]]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _settings(pack_length: int, seed: int, digest: str) -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "pack_length": pack_length, "seed": seed,
            "sources": digest}


def _read_examples(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Every example's input_ids of these shards: (flat tokens, offsets), 4 bytes a token."""
    arrays = [read_shard(path, columns=["input_ids"]).column("input_ids") for path in paths]
    chunks = [chunk for array in arrays for chunk in array.chunks]
    if not chunks:
        return np.zeros(0, np.int32), np.zeros(1, np.int64)
    lengths = np.concatenate([pc.list_value_length(c).to_numpy(zero_copy_only=False)
                              for c in chunks]).astype(np.int64)
    tokens = np.concatenate([pc.list_flatten(c).to_numpy(zero_copy_only=False)
                             for c in chunks]).astype(np.int32)
    return tokens, np.concatenate(([0], np.cumsum(lengths)))


def _list_column(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    rows, width = values.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width, pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), value_type))


@dataclass(frozen=True)
class PackTask:
    """One packed shard: rows ``start:stop`` of its split's plan (`SplitPlan`)."""

    split: str
    index: int
    start: int
    stop: int
    output: str
    record: Mapping[str, Any]  # the footer every shard of the split carries

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def inputs(self) -> dict[str, Any]:
        return {}  # the settings name the source shards (their digest)

    def describe(self) -> str:
        return f"shard {PACKED_CONFIG}/{Path(self.output).name}"


@dataclass(frozen=True)
class SplitPlan:
    """A split's examples and which of them go into which packed row."""

    tokens: np.ndarray
    offsets: np.ndarray
    rows: list[list[int]]


def _plan_split(out: Path, split: str, paths: Sequence[Path], pack_length: int, seed: int,
                settings: Mapping[str, Any]) -> tuple[SplitPlan, list[PackTask]]:
    tokens, offsets = _read_examples(paths)
    lengths = np.diff(offsets)
    rows, skipped = plan_rows(lengths, pack_length, seed)
    per_shard = max(1, TOKENS_PER_SHARD // pack_length)
    count = max(1, -(-len(rows) // per_shard))  # an empty split still gets a shard: its counts
    # as a footer gives it back (sorted keys): the statistics file is the same whether the
    # packed shards were written now or trusted from an earlier run
    summary = json.loads(json.dumps(summarize(lengths, rows, skipped, pack_length),
                                    sort_keys=True))
    record = {"config": PACKED_CONFIG, "split": split, "settings": dict(settings),
              "shards": count, "summary": summary}
    tasks = [PackTask(split, index, index * per_shard, min(len(rows), (index + 1) * per_shard),
                      str(shard_path(out, PACKED_CONFIG, split, index, count)), record)
             for index in range(count)]
    return SplitPlan(tokens, offsets, rows), tasks


class SplitPlanner:
    """Each split's packed tasks, and the plans the writer packs from.

    A split whose packed shards on disk are a complete set with this run's settings is taken
    from their footers, without reading its examples; any other split is read and planned here
    (and its plan kept for the writer).
    """

    def __init__(self, out: Path, found: Mapping[str, Mapping[str, Sequence[Path]]],
                 pack_length: int, seed: int, settings: Mapping[str, Any]) -> None:
        self.out, self.found, self.settings = out, found, settings
        self.pack_length, self.seed = pack_length, seed
        self.plans: dict[str, SplitPlan] = {}

    def tasks(self, split: str, paths: Sequence[Path]) -> list[PackTask]:
        record = self._complete_set(split)
        if record is not None:
            return [PackTask(split, index, 0, 0, str(shard_path(self.out, PACKED_CONFIG, split,
                                                                index, record["shards"])),
                             record) for index in range(record["shards"])]
        self.plans[split], tasks = _plan_split(self.out, split, paths, self.pack_length,
                                               self.seed, self.settings)
        return tasks

    def _complete_set(self, split: str) -> dict[str, Any] | None:
        paths = self.found.get(PACKED_CONFIG, {}).get(split, [])
        records = [read_shard_record(path, PACK_STAGE) for path in paths]
        if not records or any(r is None or r.get("settings") != dict(self.settings)
                              or "summary" not in r for r in records):
            return None
        count = records[0]["shards"]
        expected = [shard_path(self.out, PACKED_CONFIG, split, i, count) for i in range(count)]
        return records[0] if list(paths) == expected else None


class PackedShardWriter:
    """Writes packed shards from the plans made in this process (packing runs in the driver)."""

    def __init__(self, plans: Mapping[str, SplitPlan], pack_length: int) -> None:
        self.plans, self.pack_length = plans, pack_length

    def __call__(self, task: PackTask) -> dict[str, Any]:
        plan = self.plans[task.split]
        columns = pack_rows(plan.tokens, plan.offsets, plan.rows[task.start:task.stop],
                            self.pack_length)
        table = pa.table([_list_column(columns[f.name], f.type.value_type) for f in SCHEMA],
                         schema=SCHEMA)
        write_table_atomic(task.output, table, record=task.record, stage=PACK_STAGE)
        return dict(task.record)


def _remove_foreign(packed_dir: Path) -> None:
    """Anything in the packed config that is not a shard file: the card's glob would publish it."""
    if not packed_dir.is_dir():
        return
    for entry in packed_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            remove_tree(entry)
        elif parse_shard_name(entry.name) is None:
            entry.unlink()


def update_packed(out: str | os.PathLike, pack_length: int | None, seed: int
                  ) -> dict[str, Any] | None:
    """Make ``<out>/data/packed`` match the tokenized shards under ``out``; its statistics.

    ``pack_length`` None: no packed config (one left by an earlier run is removed). A packed
    shard made with the same settings from the same shards is trusted; any other there is
    removed and rewritten (packing is deterministic: the same bytes come back).
    """
    out = as_path(out)
    packed_dir = out / DATA_DIR / PACKED_CONFIG
    if pack_length is None:
        if packed_dir.exists():
            log.warning("removing %s, packed by an earlier run: pass --pack_length to keep a "
                        "packed config", packed_dir)
            remove_tree(packed_dir)
        return None
    _remove_foreign(packed_dir)
    found = find_shards(out)
    sources = packing_sources(found)
    settings = _settings(pack_length, seed, _sources_digest(out, sources))
    planner = SplitPlanner(out, found, pack_length, seed, settings)
    tasks = [task for split, paths in sources.items() for task in planner.tasks(split, paths)]
    # packed shards are derived from the tokenized ones beside them: any that do not match
    # are rewritten, never refused
    stage = ShardStage(PACK_STAGE, out, settings, required=("summary",), redo_mismatched=True,
                       progress_bar=False)
    records = run_shards(stage, tasks, shard_paths(found, configs=[PACKED_CONFIG]),
                         lambda rank: PackedShardWriter(planner.plans, pack_length))
    summaries = {record["split"]: record["summary"] for record in records}
    result = combine_summaries(summaries, pack_length, seed)
    log.info("packed %d examples into %d rows of %d tokens (fill %.1f%%, %.2f examples a row; "
             "%d longer than %d skipped)", result["examples"], result["rows"], pack_length,
             100 * (result["fill_ratio"] or 0), result["mean_examples_per_row"] or 0,
             result["examples_skipped_too_long"], pack_length)
    return result


