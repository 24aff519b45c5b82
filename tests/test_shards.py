"""Shard writing: encoded audio is stored as it is, everything else with zstd and dictionaries."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from parla.store.shards import (
    prepared_table,
    read_shard,
    read_shard_record,
    settings_difference,
    write_table_atomic,
)


def _row(index: int) -> dict:
    return {"audio": bytes([index]) * 3000, "audio_path": f"{index}.flac", "text": "Central: Hola.",
            "original_text": "Hola.", "voice_name": "central", "dialect": "central",
            "speaker_id": "s", "gender": "", "age": "", "duration": 1.0,
            "source_path": f"{index}.mp3", "measurements": {}}


def test_audio_bytes_are_neither_compressed_nor_dictionary_encoded(tmp_path) -> None:
    table = prepared_table([_row(i) for i in range(5)], 24000)
    path = write_table_atomic(tmp_path / "train-00000-of-00001.parquet", table,
                              record={"rows": 5}, stage="prepare")
    group = pq.ParquetFile(path).metadata.row_group(0)
    columns = {column.path_in_schema: column for column in
               (group.column(i) for i in range(group.num_columns))}
    assert columns["audio.bytes"].compression == "UNCOMPRESSED"
    assert "RLE_DICTIONARY" not in columns["audio.bytes"].encodings
    assert columns["dialect"].compression == "ZSTD"
    assert "RLE_DICTIONARY" in columns["dialect"].encodings
    assert read_shard(path).equals(table.replace_schema_metadata(read_shard(path).schema.metadata))
    assert read_shard_record(path, "prepare") == {"rows": 5}


def test_tables_without_audio_are_all_zstd(tmp_path) -> None:
    path = write_table_atomic(tmp_path / "t.parquet", pa.table({"codes": [[1, 2], [3]]}))
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_every_column_but_the_audio_bytes_is_zstd(tmp_path) -> None:
    table = pa.table({
        "audio": pa.array([{"bytes": b"x" * 100, "path": "a.flac"}] * 3),
        "input_ids": pa.array([[1, 2], [3], []], pa.list_(pa.int32())),
        "tags": pa.array([[("a", 1)], [], [("b", 2)]], pa.map_(pa.string(), pa.int64())),
        "nested": pa.array([{"inner": {"values": [1.0]}}] * 3),
    })
    group = pq.ParquetFile(write_table_atomic(tmp_path / "t.parquet", table)).metadata.row_group(0)
    compression = {group.column(i).path_in_schema: group.column(i).compression
                   for i in range(group.num_columns)}
    assert compression.pop("audio.bytes") == "UNCOMPRESSED"
    assert len(compression) == 5 and set(compression.values()) == {"ZSTD"}


def test_settings_difference_names_each_changed_setting_with_both_values() -> None:
    found = {"seed": 42, "resampler": "soxr", "gone": None}
    assert settings_difference(found, dict(found)) == ""
    assert settings_difference(found, {"seed": 7, "resampler": "soxr", "new": True}) == (
        "gone (None -> not recorded), new (not recorded -> True), seed (42 -> 7)")
    assert settings_difference({"a": 1, "b": 1, "c": 1, "d": 1}, {}, shown=2).endswith(", ...")
    assert settings_difference("3f2a...", {"seed": 42}) == "none recorded"  # an older footer


def test_settings_difference_names_a_nested_setting_and_cuts_long_values() -> None:
    found = {"conditioning": {"target_lufs": -20.0, "trim_silence": True}, "code": "a" * 64}
    wanted = {"conditioning": {"target_lufs": -23.0, "trim_silence": True}, "code": "b" * 64}
    assert settings_difference(found, wanted) == (
        f"code ('{'a' * 36}... -> '{'b' * 36}...), conditioning.target_lufs (-20.0 -> -23.0)")


def test_a_shard_opened_on_a_store_is_closed_with_its_block(memory_store, monkeypatch):
    """pyarrow leaves a file object it was given open unless closed with force=True."""
    from parla.store import shards

    path = f"{memory_store}/data/central/train-00000-of-00001.parquet"
    write_table_atomic(path, pa.table({"a": [1, 2, 3]}))
    closes: list[object] = []

    def recorded(opened_path):
        handle = real(opened_path)
        handle.close = lambda: closes.append(handle)  # a memory file's own close does nothing
        return handle

    real = shards.open_ranges
    monkeypatch.setattr(shards, "open_ranges", recorded)
    assert shards.shard_rows(path) == 3
    assert len(closes) == 1
    with shards.parquet_file(path) as parquet:
        assert parquet.read().num_rows == 3 and len(closes) == 1
    assert len(closes) == 2
