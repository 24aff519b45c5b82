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
writes ``data/packed/<split>-*.parquet``, each shard with its footer record (settings, source
digest, the split's numbers), so a rerun trusts a complete, matching set and rewrites any other.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from parla.dialects import ALL_CONFIG
from parla.progress import get_logger
from parla.store.shards import (
    DATA_DIR,
    find_shards,
    read_shard_record,
    shard_path,
    write_table_atomic,
)
from parla.tokens.orpheus import PAD_TOKEN

log = get_logger("packing")

PACKED_CONFIG = "packed"
STAGE = "packed"  # the footer record of a packed shard is shards.read_shard_record(path, STAGE)
IGNORE_INDEX = -100  # labels value transformers' loss skips
TOKENS_PER_SHARD = 1 << 23  # rows per shard = this // N: ~8M tokens, tens of MB on disk
FORMAT_VERSION = 1  # bump when the row layout changes: older packed shards are rewritten
COLUMNS = ("input_ids", "labels", "attention_mask", "position_ids")
SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                    ("attention_mask", pa.list_(pa.int8())),
                    ("position_ids", pa.list_(pa.int32()))])


# --- planning (pure) ---------------------------------------------------------------------------

def plan_rows(lengths: Sequence[int], pack_length: int, seed: int
              ) -> tuple[list[list[int]], list[int]]:
    """Which examples go into which row: (rows as lists of example indices, skipped indices).

    Examples are visited in a random order drawn from ``seed``; each goes into the open row
    with the least room that still fits it (best fit; ties: the row filled last), else opens a
    new row. An example longer than ``pack_length`` is skipped. Same inputs, same plan.
    """
    if pack_length < 1:
        raise ValueError(f"pack_length must be >= 1, got {pack_length}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(lengths))
    fitting = lengths[lengths <= pack_length]
    shortest = int(fitting.min()) if fitting.size else pack_length + 1
    rows: list[list[int]] = []
    skipped: list[int] = []
    rooms: list[int] = []  # distinct room sizes of open rows, ascending
    open_rows: dict[int, list[int]] = {}  # room -> rows with that much room (a stack)
    for index in order.tolist():
        length = int(lengths[index])
        if length > pack_length:
            skipped.append(index)
            continue
        at = bisect.bisect_left(rooms, length)
        if at < len(rooms):
            room = rooms[at]
            row = open_rows[room].pop()
            if not open_rows[room]:
                del open_rows[room]
                del rooms[at]
        else:
            room, row = pack_length, len(rows)
            rows.append([])
        rows[row].append(index)
        room -= length
        if room >= shortest:  # a row no example fits into is closed
            if room not in open_rows:
                bisect.insort(rooms, room)
                open_rows[room] = []
            open_rows[room].append(row)
    return rows, sorted(skipped)


def pack_rows(tokens: np.ndarray, offsets: np.ndarray, rows: Sequence[Sequence[int]],
              pack_length: int) -> dict[str, np.ndarray]:
    """The four columns of packed rows as (len(rows), pack_length) arrays.

    Example ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``; ``rows`` lists the examples of each
    row in order. Raises ValueError if a row's examples do not fit into ``pack_length``.
    """
    count = len(rows)
    input_ids = np.full((count, pack_length), PAD_TOKEN, dtype=np.int32)
    labels = np.full((count, pack_length), IGNORE_INDEX, dtype=np.int32)
    attention_mask = np.zeros((count, pack_length), dtype=np.int8)
    position_ids = np.empty((count, pack_length), dtype=np.int32)
    ramp = np.arange(pack_length, dtype=np.int32)
    for r, examples in enumerate(rows):
        start = 0
        for index in examples:
            example = tokens[offsets[index]:offsets[index + 1]]
            end = start + len(example)
            if end > pack_length:
                raise ValueError(f"row {r}: examples take more than {pack_length} tokens")
            input_ids[r, start:end] = example
            labels[r, start + 1:end] = example[1:]
            position_ids[r, start:end] = ramp[:len(example)]
            start = end
        attention_mask[r, :start] = 1
        position_ids[r, start:] = ramp[:pack_length - start]  # the padding: a segment of its own
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
            "position_ids": position_ids}


def summarize(lengths: Sequence[int], rows: Sequence[Sequence[int]], skipped: Sequence[int],
              pack_length: int) -> dict[str, Any]:
    """What statistics and the card say about one packed split."""
    lengths = np.asarray(lengths, dtype=np.int64)
    per_row = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    packed = int(sum(int(lengths[r].sum()) for r in rows if r))
    capacity = len(rows) * pack_length
    return {
        "rows": len(rows),
        "examples": int(per_row.sum()),
        "examples_skipped_too_long": len(skipped),
        "tokens": packed,
        "padding_tokens": capacity - packed,
        "fill_ratio": round(packed / capacity, 4) if capacity else None,
        "examples_per_row": {"mean": round(float(per_row.mean()), 2) if len(rows) else None,
                             "min": int(per_row.min()) if len(rows) else None,
                             "max": int(per_row.max()) if len(rows) else None},
    }


def combine_summaries(splits: Mapping[str, Mapping[str, Any]], pack_length: int,
                      seed: int) -> dict[str, Any]:
    """The packed config's numbers: settings, each split's summary and their total."""
    rows = sum(s["rows"] for s in splits.values())
    tokens = sum(s["tokens"] for s in splits.values())
    examples = sum(s["examples"] for s in splits.values())
    return {
        "pack_length": pack_length, "seed": seed,
        "rows": rows, "examples": examples,
        "examples_skipped_too_long": sum(s["examples_skipped_too_long"] for s in splits.values()),
        "fill_ratio": round(tokens / (rows * pack_length), 4) if rows else None,
        "mean_examples_per_row": round(examples / rows, 2) if rows else None,
        "splits": {split: dict(splits[split]) for split in sorted(splits)},
    }


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
            by_split.setdefault(split, []).extend(Path(p) for p in paths)
    return {split: by_split[split] for split in sorted(by_split)}


# --- the stage step ----------------------------------------------------------------------------

def _sources_digest(folder: Path, sources: Mapping[str, Sequence[Path]]) -> str:
    """Names, rows and sizes of the source shards: tokenized shards are byte-deterministic, so
    equal digests mean the same examples."""
    entries = [(split, str(path.relative_to(folder)), pq.ParquetFile(path).metadata.num_rows,
                path.stat().st_size) for split in sorted(sources) for path in sources[split]]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record in a packed shard's footer; None for any other file."""
    record = read_shard_record(path, STAGE)
    return record if record is not None and "summary" in record else None


def _settings(pack_length: int, seed: int, digest: str) -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "pack_length": pack_length, "seed": seed,
            "sources": digest}


def _trusted_summaries(paths_by_split: Mapping[str, Sequence[Path]], splits: Sequence[str],
                       settings: Mapping[str, Any]) -> dict[str, dict] | None:
    """Each split's summary if the packed shards on disk are a complete set made with these
    settings from these sources; None otherwise (they are rewritten)."""
    if sorted(paths_by_split) != sorted(splits):
        return None
    summaries: dict[str, dict] = {}
    for split, paths in paths_by_split.items():
        records = [read_record(path) for path in paths]
        if any(r is None or r.get("settings") != dict(settings) for r in records):
            return None
        count = records[0]["shards"]
        if [p.name for p in paths] != [shard_path(".", PACKED_CONFIG, split, i, count).name
                                       for i in range(count)]:
            return None
        summaries[split] = records[0]["summary"]
    return summaries


def _read_examples(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Every example's input_ids of these shards: (flat tokens, offsets), 4 bytes a token."""
    arrays = [pq.read_table(path, columns=["input_ids"]).column("input_ids") for path in paths]
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


def _write_split(out: Path, split: str, paths: Sequence[Path], pack_length: int, seed: int,
                 settings: Mapping[str, Any]) -> dict[str, Any]:
    tokens, offsets = _read_examples(paths)
    lengths = np.diff(offsets)
    rows, skipped = plan_rows(lengths, pack_length, seed)
    summary = summarize(lengths, rows, skipped, pack_length)
    per_shard = max(1, TOKENS_PER_SHARD // pack_length)
    count = max(1, -(-len(rows) // per_shard))  # an empty split still gets a shard: its counts
    # as a footer gives it back (sorted keys): the statistics file is the same whether the
    # packed shards were written now or trusted from an earlier run
    summary = json.loads(json.dumps(summary, sort_keys=True))
    record = {"config": PACKED_CONFIG, "split": split, "settings": dict(settings),
              "shards": count, "summary": summary}
    for index in range(count):
        columns = pack_rows(tokens, offsets, rows[index * per_shard:(index + 1) * per_shard],
                            pack_length)
        table = pa.table([_list_column(columns[f.name], f.type.value_type) for f in SCHEMA],
                         schema=SCHEMA)
        write_table_atomic(shard_path(out, PACKED_CONFIG, split, index, count), table,
                           record=record, stage=STAGE)
    return summary


def update_packed(out: str | os.PathLike, pack_length: int | None, seed: int
                  ) -> dict[str, Any] | None:
    """Make ``<out>/data/packed`` match the tokenized shards under ``out``; its statistics.

    ``pack_length`` None: no packed config (one left by an earlier run is removed). A complete
    packed set made with the same settings from the same shards is trusted; anything else
    there is removed and rewritten (packing is deterministic: the same bytes come back).
    """
    out = Path(out)
    packed_dir = out / DATA_DIR / PACKED_CONFIG
    if pack_length is None:
        if packed_dir.exists():
            log.warning("removing %s, packed by an earlier run: pass --pack_length to keep a "
                        "packed config", packed_dir)
            shutil.rmtree(packed_dir)
        return None
    found = find_shards(out)
    sources = packing_sources(found)
    settings = _settings(pack_length, seed, _sources_digest(out, sources))
    summaries = _trusted_summaries(found.get(PACKED_CONFIG, {}), list(sources), settings)
    if summaries is None:
        shutil.rmtree(packed_dir, ignore_errors=True)
        summaries = {split: _write_split(out, split, paths, pack_length, seed, settings)
                     for split, paths in sources.items()}
    else:
        log.info("packed config is up to date: kept %s", packed_dir)
    result = combine_summaries(summaries, pack_length, seed)
    log.info("packed %d examples into %d rows of %d tokens (fill %.1f%%, %.2f examples a row; "
             "%d longer than %d skipped)", result["examples"], result["rows"], pack_length,
             100 * (result["fill_ratio"] or 0), result["mean_examples_per_row"] or 0,
             result["examples_skipped_too_long"], pack_length)
    return result


def read_packed_summary(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The packed config's numbers from its shards' footers (for the card); None without one."""
    found = find_shards(folder).get(PACKED_CONFIG)
    if not found:
        return None
    summaries: dict[str, dict] = {}
    settings: Mapping[str, Any] = {}
    for split, paths in found.items():
        record = read_record(paths[0])
        if record is None:
            return None
        summaries[split], settings = record["summary"], record["settings"]
    return combine_summaries(summaries, settings["pack_length"], settings["seed"])
