"""Packing Orpheus examples into fixed-length rows: the pure planner and row layout, the choice
of source shards for both corpus layouts, and the packed shards written next to tokenized ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parla.card.folder import read_packed_summary
from parla.stages import pack
from parla.store.shards import shard_path, write_table_atomic
from parla.tokens import packing
from parla.tokens.orpheus import PAD_TOKEN


def examples(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat tokens and offsets of examples with these lengths; every token value is unique, so
    a test can tell exactly where each token went."""
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    tokens = np.arange(1000, 1000 + offsets[-1], dtype=np.int32)
    return tokens, offsets


LENGTHS = [5, 3, 9, 2, 7, 4, 4, 1, 8, 6, 10, 3]


def test_plan_puts_every_fitting_example_in_exactly_one_row_and_skips_the_too_long():
    lengths = [*LENGTHS, 11, 25]
    rows, skipped = packing.plan_rows(lengths, 10, seed=1)
    assert skipped == [12, 13]
    placed = [index for row in rows for index in row]
    assert sorted(placed) == list(range(12))  # none lost, none twice
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert all(row for row in rows)
    # best fit leaves little room: 62 tokens need at least 7 rows of 10
    assert len(rows) <= 8


def test_plan_is_deterministic_from_the_seed():
    lengths = list(np.random.default_rng(5).integers(1, 40, 300))
    first = packing.plan_rows(lengths, 64, seed=3)
    assert packing.plan_rows(lengths, 64, seed=3) == first
    assert packing.plan_rows(lengths, 64, seed=4) != first


def test_plan_fill_ratio_on_speech_like_lengths():
    # Orpheus examples of 3-20 s clips: 250-1700 tokens, into 2048-token rows
    lengths = list(np.random.default_rng(0).integers(250, 1700, 2000))
    rows, skipped = packing.plan_rows(lengths, 2048, seed=0)
    summary = packing.summarize(lengths, rows, skipped, 2048)
    assert summary["examples"] == 2000 and summary["examples_skipped_too_long"] == 0
    assert summary["fill_ratio"] > 0.9
    assert summary["tokens"] + summary["padding_tokens"] == 2048 * summary["rows"]


def test_rows_are_exactly_n_tokens_with_the_padding_masked():
    tokens, offsets = examples([4, 3, 2])
    columns = packing.pack_rows(tokens, offsets, [[1, 0], [2]], 8)
    assert {name: array.shape for name, array in columns.items()} == {
        name: (2, 8) for name in pack.COLUMNS}
    ids, labels = columns["input_ids"], columns["labels"]
    mask, positions = columns["attention_mask"], columns["position_ids"]
    # row 0: example 1 (3 tokens) then example 0 (4 tokens), one pad
    assert ids[0].tolist() == [1004, 1005, 1006, 1000, 1001, 1002, 1003, PAD_TOKEN]
    assert labels[0].tolist() == [-100, 1005, 1006, -100, 1001, 1002, 1003, -100]
    assert mask[0].tolist() == [1, 1, 1, 1, 1, 1, 1, 0]
    assert positions[0].tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
    assert ids[1].tolist() == [1007, 1008] + [PAD_TOKEN] * 6
    assert labels[1].tolist() == [-100, 1008] + [-100] * 6
    assert mask[1].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert positions[1].tolist() == [0, 1, 0, 1, 2, 3, 4, 5]  # the padding: its own segment


def test_no_example_is_split_across_rows():
    tokens, offsets = examples(LENGTHS)
    rows, _ = packing.plan_rows(LENGTHS, 12, seed=7)
    columns = packing.pack_rows(tokens, offsets, rows, 12)
    for r, row in enumerate(rows):
        expected = np.concatenate([tokens[offsets[i]:offsets[i + 1]] for i in row])
        real = columns["attention_mask"][r] == 1
        assert columns["input_ids"][r][real].tolist() == expected.tolist()
        assert (columns["input_ids"][r][~real] == PAD_TOKEN).all()
        # every example starts at position 0 where its first token sits
        starts = np.flatnonzero(columns["position_ids"][r][real] == 0)
        assert [int(columns["input_ids"][r][s]) for s in starts] == [
            int(tokens[offsets[i]]) for i in row]


def test_a_row_that_does_not_fit_is_refused():
    tokens, offsets = examples([6, 6])
    with pytest.raises(ValueError, match="more than 10"):
        packing.pack_rows(tokens, offsets, [[0, 1]], 10)


def test_summary_and_its_combination():
    rows, skipped = [[0, 1], [2]], [3]
    summary = packing.summarize([4, 3, 2, 30], rows, skipped, 8)
    assert summary == {"rows": 2, "examples": 3, "examples_skipped_too_long": 1, "tokens": 9,
                       "padding_tokens": 7, "fill_ratio": 0.5625,
                       "examples_per_row": {"mean": 1.5, "min": 1, "max": 2}}
    total = packing.combine_summaries({"train": summary, "validation": summary}, 8, 42)
    assert (total["rows"], total["examples"], total["examples_skipped_too_long"]) == (4, 6, 2)
    assert total["fill_ratio"] == 0.5625 and total["mean_examples_per_row"] == 1.5


# --- which shards are packed -----------------------------------------------------------------

def test_sources_of_the_layout_with_a_physical_all_config():
    # dialect configs are train-only copies of `all`, which holds the validation split
    found = {"all": {"train": [Path("data/all/train-0")], "validation": [Path("data/all/val-0")]},
             "central": {"train": [Path("data/central/train-0")]},
             "balear": {"train": [Path("data/balear/train-0")]}}
    assert pack.packing_sources(found) == {"train": [Path("data/all/train-0")],
                                              "validation": [Path("data/all/val-0")]}


def test_sources_of_the_layout_with_dialect_splits_and_no_all_folder():
    found = {"central": {"train": [Path("c/t")], "validation": [Path("c/v")]},
             "balear": {"train": [Path("b/t")], "validation": [Path("b/v")]},
             "packed": {"train": [Path("p/t")]}}
    assert pack.packing_sources(found) == {"train": [Path("b/t"), Path("c/t")],
                                              "validation": [Path("b/v"), Path("c/v")]}
    # dialect configs with splits win even over a stray `all` folder
    assert pack.packing_sources(found | {"all": {"train": [Path("a/t")]}}) == (
        pack.packing_sources(found))


def test_sources_when_only_some_dialects_or_only_all_were_tokenized():
    assert pack.packing_sources({"central": {"train": [Path("c/t")]}}) == {
        "train": [Path("c/t")]}
    assert pack.packing_sources({"all": {"train": [Path("a/t")]}}) == {"train": [Path("a/t")]}


# --- the packed shards -----------------------------------------------------------------------

def write_tokenized_shard(path: Path, lengths: list[int], start: int = 0) -> None:
    ids = [list(range(start + sum(lengths[:i]), start + sum(lengths[:i + 1])))
           for i in range(len(lengths))]
    table = pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())),
                      "labels": pa.array(ids, pa.list_(pa.int32())),
                      "text": [f"t{i}" for i in range(len(lengths))]})
    write_table_atomic(path, table)


@pytest.fixture
def tokenized(tmp_path) -> Path:
    """A dialect-split layout: central and balear, train and validation."""
    write_tokenized_shard(shard_path(tmp_path, "central", "train", 0, 1), [5, 9, 3, 12, 7], 0)
    write_tokenized_shard(shard_path(tmp_path, "balear", "train", 0, 1), [4, 4, 11], 100)
    write_tokenized_shard(shard_path(tmp_path, "central", "validation", 0, 1), [6, 2], 200)
    write_tokenized_shard(shard_path(tmp_path, "balear", "validation", 0, 1), [3], 300)
    return tmp_path


def test_update_packed_writes_train_and_validation_and_counts(tokenized):
    result = pack.update_packed(tokenized, 10, seed=42)
    train = pq.read_table(shard_path(tokenized, "packed", "train", 0, 1)).to_pylist()
    validation = pq.read_table(shard_path(tokenized, "packed", "validation", 0, 1)).to_pylist()
    assert all(len(row[c]) == 10 for row in train + validation for c in pack.COLUMNS)
    assert result["splits"]["train"]["examples_skipped_too_long"] == 2  # 12 and 11 tokens
    assert result["splits"]["train"]["examples"] == 6
    assert result["splits"]["validation"]["examples"] == 3
    kept = sorted(t for row in train for t, m in zip(row["input_ids"], row["attention_mask"],
                                                     strict=True) if m)
    assert kept == [*range(0, 17), *range(29, 36), *range(100, 108)]
    assert read_packed_summary(tokenized) == result


def test_update_packed_trusts_a_matching_set_and_rewrites_any_other(tokenized):
    first = pack.update_packed(tokenized, 10, seed=42)
    shard = shard_path(tokenized, "packed", "train", 0, 1)
    written = shard.read_bytes()
    stamp = shard.stat().st_mtime_ns
    assert pack.update_packed(tokenized, 10, seed=42) == first
    assert shard.stat().st_mtime_ns == stamp  # trusted, not rewritten
    pack.update_packed(tokenized, 16, seed=42)
    assert len(pq.read_table(shard).column("input_ids")[0]) == 16
    # a changed source makes the packed set stale: rewritten, same bytes as a fresh packing
    write_tokenized_shard(shard_path(tokenized, "balear", "train", 0, 1), [4, 11], 100)
    second = pack.update_packed(tokenized, 10, seed=42)
    assert second["splits"]["train"]["examples"] == 5
    write_tokenized_shard(shard_path(tokenized, "balear", "train", 0, 1), [4, 4, 11], 100)
    assert pack.update_packed(tokenized, 10, seed=42) == first
    assert shard.read_bytes() == written
    # an interrupted write (a missing shard) is not trusted either
    shard.unlink()
    assert pack.update_packed(tokenized, 10, seed=42) == first and shard.is_file()


def test_update_packed_without_a_length_removes_an_earlier_packed_config(tokenized):
    pack.update_packed(tokenized, 10, seed=42)
    assert pack.update_packed(tokenized, None, seed=42) is None
    assert not (tokenized / "data" / "packed").exists()
    assert read_packed_summary(tokenized) is None
