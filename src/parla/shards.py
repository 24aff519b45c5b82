"""The one module that names, writes and finds output shards (Hub layout).

Layout: ``<out>/data/<config>/<split>-00000-of-00004.parquet``. Every shard is written to a
temporary name in the same folder and renamed into place, so a shard that exists is complete and a
rerun can skip it (resume); an interrupted write leaves only a ``.tmp`` file, which is ignored.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATA_DIR = "data"
_SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")
TMP_SUFFIX = ".tmp"


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def shard_path(out_dir: str | os.PathLike, config: str, split: str, index: int, count: int) -> Path:
    return Path(out_dir) / DATA_DIR / config / shard_name(split, index, count)


def shard_glob(config: str, split: str) -> str:
    """The `data_files` pattern of one config and split, relative to the dataset folder."""
    return f"{DATA_DIR}/{config}/{split}-*"


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """(split, index, count) of a shard file name, or None for anything else."""
    match = _SHARD_RE.match(name)
    if match is None:
        return None
    return match["split"], int(match["index"]), int(match["count"])


def find_shards(folder: str | os.PathLike) -> dict[str, dict[str, list[Path]]]:
    """Every finished shard under ``folder/data``: ``{config: {split: [paths in order]}}``."""
    found: dict[str, dict[str, list[Path]]] = {}
    data = Path(folder) / DATA_DIR
    if not data.is_dir():
        return found
    for config_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        for path in sorted(config_dir.iterdir()):
            parsed = parse_shard_name(path.name)
            if parsed is not None:
                found.setdefault(config_dir.name, {}).setdefault(parsed[0], []).append(path)
    return found


def write_table_atomic(path: str | os.PathLike, table: pa.Table, row_group_size: int = 256) -> Path:
    """Write a parquet file so that it either exists whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
    with open(tmp, "rb") as handle:  # the data must be on disk before the name says it is done
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete temporary files left by an interrupted run; returns how many."""
    count = 0
    data = Path(folder) / DATA_DIR
    if data.is_dir():
        for tmp in data.rglob(f".*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            count += 1
    return count


def read_shard(path: str | os.PathLike, columns: Iterable[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=list(columns) if columns is not None else None)


# --- schemas ---------------------------------------------------------------------------------

# Columns of a prepared shard, in order, with their `datasets` feature types; written into the
# parquet metadata so `load_dataset` sees `audio` as Audio(sampling_rate=...) without a cast.
PREPARED_COLUMNS: dict[str, pa.DataType] = {
    "audio": pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    "text": pa.string(),
    "original_text": pa.string(),
    "voice_name": pa.string(),
    "dialect": pa.string(),
    "speaker_id": pa.string(),
    "gender": pa.string(),
    "age": pa.string(),
    "duration": pa.float32(),
    "source_path": pa.string(),
}


def _value_feature(dtype: pa.DataType) -> dict[str, str]:
    return {"dtype": "float32" if dtype == pa.float32() else "string", "_type": "Value"}


@functools.lru_cache(maxsize=8)
def prepared_schema(sample_rate: int) -> pa.Schema:
    features: dict[str, dict] = {}
    for name, dtype in PREPARED_COLUMNS.items():
        if name == "audio":
            features[name] = {"sampling_rate": sample_rate, "_type": "Audio"}
        else:
            features[name] = _value_feature(dtype)
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(list(PREPARED_COLUMNS.items()), metadata=metadata)


def prepared_table(rows: list[Mapping], sample_rate: int) -> pa.Table:
    """A prepared shard from row dicts (``audio`` given as FLAC bytes)."""
    schema = prepared_schema(sample_rate)
    columns: dict[str, list] = {name: [] for name in PREPARED_COLUMNS}
    for row in rows:
        for name in PREPARED_COLUMNS:
            if name == "audio":
                columns[name].append({"bytes": row["audio"], "path": row.get("audio_path")})
            else:
                columns[name].append(row.get(name))
    return pa.table(columns, schema=schema)


class ShardWriter:
    """Writes one shard in row groups as rows arrive (bounded memory), then renames it into place.

    Until `close` the data sits under a temporary name, so an interrupted run never leaves a
    shard that looks finished.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema,
                 row_group_size: int = 64) -> None:
        self.path = Path(path)
        self.schema = schema
        self.row_group_size = row_group_size
        self.rows_written = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}{TMP_SUFFIX}")
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        if self._pending:
            table = pa.concat_tables(self._pending)
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
            self.rows_written += table.num_rows
        self._pending, self._pending_rows = [], 0

    def close(self) -> Path:
        self._flush()
        assert self._writer is not None
        self._writer.close()
        with open(self._tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)
