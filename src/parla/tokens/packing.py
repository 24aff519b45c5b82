"""Packing whole Orpheus examples into training rows of exactly N tokens: pure planning and layout.

A row holds whole examples in a seeded random order, placed by best fit, then padding; see
`stages.pack` for the stage step that reads and writes the shards, and docs/TRAINING.md.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from parla.tokens.orpheus import PAD_TOKEN

IGNORE_INDEX = -100  # labels value transformers' loss skips


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
