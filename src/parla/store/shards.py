"""The one module that names, writes and finds output shards (Hub layout).

Layout: ``<out>/data/<config>/<split>-00000-of-00004.parquet``. Every shard is written atomically
(`files.atomic_path`) with a self-describing record in its footer, so a shard that exists is
complete and a rerun can trust it (resume); an interrupted write leaves only a temporary file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from parla.store.files import atomic_path
from parla.store.urls import AnyPath, as_path, forget_listings, is_remote, open_ranges

DATA_DIR = "data"
_SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def shard_path(out_dir: str | os.PathLike, config: str, split: str, index: int, count: int
               ) -> AnyPath:
    return as_path(out_dir) / DATA_DIR / config / shard_name(split, index, count)


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
    data = as_path(folder) / DATA_DIR
    forget_listings(data)  # on a store: the workers wrote there, not this process
    if not data.is_dir():
        return {}
    return group_shards(path for config_dir in data.iterdir() if config_dir.is_dir()
                        for path in config_dir.iterdir())


def group_shards(paths: Iterable[Path]) -> dict[str, dict[str, list[Path]]]:
    """Shard files (``.../<config>/<split>-i-of-n.parquet``) as `find_shards` gives them: configs
    and paths in name order; anything that is not a shard name is left out."""
    found: dict[str, dict[str, list[Path]]] = {}
    for path in sorted(paths, key=lambda p: (p.parent.name, p.name)):
        parsed = parse_shard_name(path.name)
        if parsed is not None:
            found.setdefault(path.parent.name, {}).setdefault(parsed[0], []).append(path)
    return found


def shard_paths(found: Mapping[str, Mapping[str, Iterable[Path]]],
                configs: Iterable[str] | None = None) -> list[Path]:
    """The paths of a `find_shards` result, of every config or only of ``configs``."""
    wanted = found if configs is None else [c for c in configs if c in found]
    return [path for config in wanted for paths in found[config].values() for path in paths]


def write_table_atomic(path: str | os.PathLike, table: pa.Table, row_group_size: int = 64,
                       record: Mapping[str, Any] | None = None, stage: str = "") -> AnyPath:
    """Write a parquet shard so that it either exists whole or not at all.

    ``record`` (with ``stage``) is the shard's self-description, stored in the parquet footer:
    the settings that made it, its statistics and its rejects. A rerun trusts a shard whose
    record matches, and rebuilds every report from the records.
    """
    if record is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[record_key(stage)] = json.dumps(record, sort_keys=True).encode()
        table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        if table.num_rows:
            pq.write_table(table, tmp, row_group_size=max(row_group_size, 1),
                           **_encodings(table.schema))
        else:  # no row group at all: `datasets` cannot read a row group of 0 rows
            pq.ParquetWriter(tmp, table.schema, compression="zstd").close()
    return as_path(path)


def _encodings(schema: pa.Schema) -> dict[str, Any]:
    """zstd and dictionaries for every column but encoded audio (FLAC bytes): neither shrinks
    it, and trying costs half of the shard's write."""
    columns = [path for field in schema for path in _leaf_paths(field.name, field.type)]
    if "audio.bytes" not in columns:
        return {"compression": "zstd"}
    return {"compression": {name: "none" if name == "audio.bytes" else "zstd" for name in columns},
            "use_dictionary": [name for name in columns if name != "audio.bytes"]}


def _leaf_paths(name: str, kind: pa.DataType) -> list[str]:
    """Parquet's column paths under one field: a struct's fields, a list's elements, a map's
    keys and values are columns of their own."""
    if pa.types.is_struct(kind):
        return [path for child in kind for path in _leaf_paths(f"{name}.{child.name}", child.type)]
    if pa.types.is_map(kind):
        return (_leaf_paths(f"{name}.key_value.key", kind.key_type)
                + _leaf_paths(f"{name}.key_value.value", kind.item_type))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _leaf_paths(f"{name}.list.element", kind.value_type)
    return [name]


def record_key(stage: str) -> bytes:
    return f"parla_{stage}".encode()


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"conditioning.target_lufs": -20.0, ...}``."""
    flat: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{name}.")
        else:
            flat[prefix + name] = value
    return flat


def _shown(value: Any, absent: object) -> str:
    text = "not recorded" if value is absent else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def settings_difference(found: Any, wanted: Mapping[str, Any], shown: int = 3) -> str:
    """How the settings in a shard's record (`found`) differ from this run's (`wanted`), as
    ``name (old -> new), ...`` for the first `shown` (nested settings named with dots, long
    values cut short); empty when they are the same."""
    if not isinstance(found, Mapping):
        return "none recorded"
    old, new, absent = _flat(found), _flat(wanted), object()
    differ = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, absent), new.get(name, absent)
        if before != after:
            differ.append(f"{name} ({_shown(before, absent)} -> {_shown(after, absent)})")
    return ", ".join(differ[:shown]) + (", ..." if len(differ) > shown else "")


def parquet_source(path: str | os.PathLike) -> Any:
    """What pyarrow reads a shard from: a local path as it is; on a store a file object that
    fetches exactly the byte ranges pyarrow asks for (a footer, some column chunks)."""
    if is_remote(path):
        return open_ranges(path)
    return os.fspath(as_path(path))


def read_shard_record(path: str | os.PathLike, stage: str) -> dict[str, Any] | None:
    """The record in a shard's footer; None for a file that ``stage`` did not write."""
    try:
        metadata = read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = metadata.get(record_key(stage))
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_schema(path: str | os.PathLike) -> pa.Schema:
    source = parquet_source(path)
    try:
        return pq.read_schema(source)
    finally:
        _close(source)


@contextlib.contextmanager
def parquet_file(path: str | os.PathLike) -> Iterator[pq.ParquetFile]:
    """A shard opened for its metadata and row groups (on a store: read by ranges), closed on
    leaving the block, its store file included."""
    source = parquet_source(path)
    try:
        # on a store, pre_buffer coalesces the column chunks a read needs into few requests
        parquet = pq.ParquetFile(source, pre_buffer=is_remote(path))
    except BaseException:
        _close(source)
        raise
    try:
        yield parquet
    finally:
        parquet.close(force=True)  # without force pyarrow leaves a file object it was given open


def shard_rows(path: str | os.PathLike) -> int:
    """A shard's row count, from its footer."""
    with parquet_file(path) as parquet:
        return parquet.metadata.num_rows


def read_shard(path: str | os.PathLike, columns: Iterable[str] | None = None) -> pa.Table:
    source = parquet_source(path)
    try:
        return pq.read_table(source, columns=list(columns) if columns is not None else None,
                             pre_buffer=True)
    finally:
        _close(source)


def _close(source: Any) -> None:
    if hasattr(source, "close"):
        source.close()


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


# with --dnsmos, every row also carries its scores
DNSMOS_COLUMNS: dict[str, pa.DataType] = {"dnsmos_sig": pa.float32(), "dnsmos_bak": pa.float32(),
                                          "dnsmos_ovrl": pa.float32()}


def _value_feature(dtype: pa.DataType) -> dict[str, str]:
    return {"dtype": "float32" if dtype == pa.float32() else "string", "_type": "Value"}


def _prepared_columns(dnsmos: bool) -> dict[str, pa.DataType]:
    return PREPARED_COLUMNS | DNSMOS_COLUMNS if dnsmos else PREPARED_COLUMNS


@functools.lru_cache(maxsize=8)
def prepared_schema(sample_rate: int, dnsmos: bool = False) -> pa.Schema:
    features: dict[str, dict] = {}
    columns = _prepared_columns(dnsmos)
    for name, dtype in columns.items():
        if name == "audio":
            features[name] = {"sampling_rate": sample_rate, "_type": "Audio"}
        else:
            features[name] = _value_feature(dtype)
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(list(columns.items()), metadata=metadata)


def prepared_table(rows: list[Mapping], sample_rate: int, dnsmos: bool = False) -> pa.Table:
    """A prepared shard from row dicts (``audio`` given as FLAC bytes; with ``dnsmos``, the
    scores are read from each row's ``measurements``)."""
    schema = prepared_schema(sample_rate, dnsmos)
    columns: dict[str, list] = {name: [] for name in schema.names}
    for row in rows:
        for name in schema.names:
            if name == "audio":
                columns[name].append({"bytes": row["audio"], "path": row.get("audio_path")})
            elif name in DNSMOS_COLUMNS:
                columns[name].append(row["measurements"].get(name))
            else:
                columns[name].append(row.get(name))
    return pa.table(columns, schema=schema)
