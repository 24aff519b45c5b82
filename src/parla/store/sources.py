"""Read every kind of input into one metadata table, without decoding audio.

A `--datasets` entry is one of: a Hub dataset id, a local folder in Hub layout (parquet under
``data/``, or anything `datasets.load_dataset` reads), a `save_to_disk` folder, or a raw Common
Voice release (``validated.tsv`` + ``clips/``, optional ``clip_durations.tsv``). ``NAME=SOURCE``
names the group (dialect) explicitly; otherwise it comes from the source's name, else from each
row's accents/variant, matched against the known groups (`store.grouping`: the Catalan dialects
unless the run says otherwise). With ``--group_by`` the groups are found in the rows themselves,
across every source at once (`place_sources`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parla.audio.decode import probe_duration
from parla.errors import Reject, RowRejected, SourceError
from parla.groups import Group, Registry, group_id
from parla.progress import get_logger, progress
from parla.store.clips import ClipReader, read_clip
from parla.store.grouping import Grouping, place_sources
from parla.store.hub_download import HubDownloads, HubUnreachableError
from parla.store.tsv import BadLine, read_cv_tsv, read_tsv_lines
from parla.store.urls import as_path, check_reachable, is_remote

__all__ = ["BadLine", "HubUnreachableError", "LoadedSource", "SourceSpec", "clip_reader",
           "clips_outside", "detect_kind", "load_source", "parse_source_spec", "place_sources",
           "read_cv_tsv", "read_tsv_lines"]

log = get_logger("sources")

# Columns every source is turned into; `row` indexes the source's own rows (or its clip files).
METADATA_COLUMNS = ("source", "row", "client_id", "path", "sentence", "up_votes", "down_votes",
                    "age", "gender", "accents", "variant", "dialect", "duration")
_ALIASES = {"client_id": ("client_id", "speaker_id", "speaker"),
            "sentence": ("sentence", "text", "transcription", "original_text"),
            "path": ("path", "source_path", "file")}


@dataclass(frozen=True)
class SourceSpec:
    location: str
    dialect: Group | None = None  # given explicitly as NAME=SOURCE
    grouping: Grouping = field(default_factory=Grouping, compare=False)

    @property
    def name(self) -> str:
        return Path(self.location.rstrip("/")).name or self.location


def parse_source_spec(text: str, grouping: Grouping | None = None) -> SourceSpec:
    """``"central=/data/cv"`` -> explicit dialect; ``"xaviviro/cv_23_ca_balear"`` -> none yet.

    NAME must be a known group where the grouping has a registry; found in the data, it is a
    group of its own (or the group of the same name in the other sources)."""
    grouping = grouping or Grouping()
    name, sep, location = text.partition("=")
    if sep and name and "/" not in name and not os.path.exists(text):
        if grouping.registry is not None:
            what = "dialect" if grouping.by_name and grouping.language == "ca" else "group"
            return SourceSpec(location, grouping.registry.resolve(name, what), grouping)
        return SourceSpec(location, Group(group_id(name), name, group_id(name)), grouping)
    return SourceSpec(text, grouping=grouping)


@dataclass
class LoadedSource:
    """Metadata of one source plus what is needed to fetch each row's audio bytes."""

    spec: SourceSpec
    kind: str  # hub | folder | disk | cv_release
    metadata: pd.DataFrame
    rejects: list[Reject] = field(default_factory=list)  # rows unreadable before selection
    rows_without_dialect: int = 0
    dataset: Any = None  # datasets.Dataset for hub/folder/disk sources
    clips_dir: Path | None = None  # cv_release
    revision: str | None = None  # hub: the commit read (HubDownloads.fetch)

    def read_bytes(self, rows: list[int]) -> list[bytes | None]:
        import pyarrow as pa

        data = self.dataset.data
        table = data.table if hasattr(data, "table") else data
        column = table.column("audio").take(pa.array(rows, type=pa.int64()))
        return [item["bytes"] if item is not None else None for item in column.to_pylist()]


def detect_kind(location: str) -> str:
    path = as_path(location)
    check_reachable(path, "--datasets")
    if is_remote(path) and not path.is_dir():
        raise SourceError(f"{location}: no such folder on the store")
    if path.is_dir():
        if (path / "validated.tsv").is_file():
            return "cv_release"
        if is_remote(path):
            raise SourceError(f"{location}: from an object store parla reads Common Voice "
                              "release folders (validated.tsv + clips/); for a Hub-layout or "
                              "save_to_disk dataset give its Hub id or a local copy")
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "disk"
        return "folder"
    if path.exists():
        raise SourceError(f"{location}: is a file; give a folder, a Hub dataset id or a Common "
                          "Voice release folder")
    parts = location.split("/")
    if len(parts) == 2 and all(parts) and not location.startswith((".", "~")):
        if Path(parts[0]).is_dir():
            # `data/my_central` next to a folder `data/`: a mistyped path, not a Hub id
            raise SourceError(f"{location}: no such folder ({parts[0]}/ has no {parts[1]})")
        return "hub"
    raise SourceError(f"{location}: no such folder, and not a Hub dataset id (owner/name)")


def load_source(spec: SourceSpec, cache_dir: str | None = None,
                hub: HubDownloads | None = None) -> LoadedSource:
    kind = detect_kind(spec.location)
    if kind == "cv_release":
        source = _load_cv_release(spec)
    else:
        source = _load_datasets_source(spec, kind, cache_dir, hub or HubDownloads())
    _refuse_a_source_with_no_rows_left(source)  # before any dialect is guessed from no rows
    _assign_dialects(source)
    _reject_rows_without_text(source)
    _reject_repeated_paths(source)
    _fill_reject_dialects(source)
    return source


def _refuse_a_source_with_no_rows_left(source: LoadedSource) -> None:
    """A source whose every row was rejected while loading is refused with the count of each
    reason: that says why (every clip path left clips/, say), where the dialect guess that
    would follow blames the accents of rows that are not there."""
    if not source.rejects:
        return
    rejected = [reject.source_path for reject in source.rejects]
    if not source.metadata["path"].isin(rejected).all():
        return
    counts = Counter(reject.reason for reject in source.rejects)
    reasons = ", ".join(f"{count} {reason}" for reason, count in counts.most_common())
    raise SourceError(f"{source.spec.location}: all {len(source.rejects)} rows were rejected: "
                      f"{reasons}")


def _reject_repeated_paths(source: LoadedSource) -> None:
    """A release's clip listed twice is kept once: the later rows are rejects
    (`duplicate_path`). Rows of a dataset are clips of their own even when their file names
    collide (two splits with a `clip_0.mp3` each): a repeated name gets its row number."""
    repeated = source.metadata["path"].duplicated(keep="first").to_numpy()
    if not repeated.any():
        return
    if source.kind != "cv_release":
        metadata = source.metadata
        metadata.loc[repeated, "path"] = [f"{path}#{row}" for path, row in zip(
            metadata.loc[repeated, "path"], metadata.loc[repeated, "row"], strict=True)]
        return
    for path, dialect in source.metadata.loc[repeated, ["path", "dialect"]].itertuples(
            index=False):
        source.rejects.append(Reject(path, dialect, "duplicate_path",
                                     "the clip is listed again in an earlier row"))
    source.metadata = source.metadata[~repeated].reset_index(drop=True)


def _fill_reject_dialects(source: LoadedSource) -> None:
    """Rejects found before the dialects were known get their row's dialect (one lookup table);
    a line that could not be read at all gets the source's dialect, when it has one."""
    if all(reject.dialect for reject in source.rejects):
        return
    fallback = _source_dialect(source.spec)
    dialect_by_path = dict(zip(source.metadata["path"], source.metadata["dialect"], strict=True))
    source.rejects = [replace(reject, dialect=dialect_by_path.get(
        reject.source_path, fallback.id if fallback else "")) if not reject.dialect else reject
        for reject in source.rejects]


# --- raw Common Voice release ----------------------------------------------------------------

def clips_outside(paths: Sequence[str]) -> dict[str, str]:
    """Paths (as written in the TSV) that do not name a file inside the release's clips/ folder,
    each with why. A path is data, not trust: ``../../x.mp3`` or ``/etc/passwd`` must never be
    opened.

    Containment is by name, not by target: a file that sits in clips/ under its own name is the
    release's clip even when it is a symlink to a file elsewhere (git-annex, DVC, a hand-made
    subset). The user put the link there; only the TSV's text is untrusted, so nothing is
    resolved.
    """
    outside: dict[str, str] = {}
    for path in dict.fromkeys(paths):
        if "/" not in path and "\\" not in path and path not in ("", ".", ".."):
            continue  # a plain file name cannot leave the folder
        why = _why_outside(path)
        if why:
            outside[path] = why
    return outside


_SEPARATORS = re.compile(r"[/\\]")  # a backslash too: it separates folders on Windows


def _why_outside(path: str) -> str:
    """Why a TSV path leaves clips/ once normalised, or "" when it stays inside."""
    if path.startswith(("/", "\\")) or os.path.isabs(path):
        return "is absolute"
    if ".." in _SEPARATORS.split(path):
        return "goes up a folder ('..')"
    if os.path.normpath(path) == ".":
        return "names the clips folder itself"
    return ""


def _load_cv_release(spec: SourceSpec) -> LoadedSource:
    folder = as_path(spec.location)
    tsv = folder / "validated.tsv"
    table, bad_lines = read_tsv_lines(tsv)
    missing = [c for c in ("client_id", "path", "sentence") if c not in table.columns]
    if missing:
        raise SourceError(f"{tsv}: missing column(s) {', '.join(missing)}")
    durations: dict[str, float] = {}
    durations_file = folder / "clip_durations.tsv"
    if durations_file.is_file():
        clip_durations = read_cv_tsv(durations_file)  # a bad line here: that clip is probed
        ms_column = next((c for c in clip_durations.columns if c.startswith("duration")), None)
        if ms_column is not None and "clip" in clip_durations.columns:
            values = pd.to_numeric(clip_durations[ms_column], errors="coerce") / 1000.0
            # a listed length of 0 ms means an empty or broken file: probe it, so it is rejected
            # with a reason instead of vanishing in the duration filter
            durations = {clip: value for clip, value in zip(clip_durations["clip"], values,
                                                           strict=True) if value > 0}
    clips_dir = folder / "clips"
    metadata = _standardise(table, spec)
    source = LoadedSource(spec, "cv_release", metadata, clips_dir=clips_dir)
    source.rejects += [Reject(f"{tsv.name}:{line.number}", "", line.reason, line.detail)
                       for line in bad_lines]
    _reject_paths_outside_clips(source)
    metadata = source.metadata
    duration_values = metadata["path"].map(durations).astype(float)
    unknown = np.flatnonzero(np.isnan(duration_values.to_numpy()))
    # counts the clips clip_durations.tsv does not list: their length is read from the file (no
    # bar for fewer than 200, probed in a blink)
    for index in progress(unknown, desc=f"probing {spec.name} (clips not in "
                                        "clip_durations.tsv)", unit="clips",
                          disable=len(unknown) < 200):
        path = metadata.at[index, "path"]
        duration_values.iat[index] = _probe_file(clips_dir / path, path, source)
    metadata["duration"] = duration_values
    return source


def _reject_paths_outside_clips(source: LoadedSource) -> None:
    """Rows whose clip path leaves the release's clips/ folder are rejects, and leave the
    metadata before any file is opened."""
    assert source.clips_dir is not None
    metadata = source.metadata
    outside = clips_outside(metadata["path"].tolist())
    if not outside:
        return
    dialect = _source_dialect(source.spec)
    registry = source.spec.grouping.registry if source.spec.grouping.by_name else None
    bad = metadata["path"].isin(list(outside))
    for path, accents, variant in metadata.loc[bad, ["path", "accents", "variant"]].itertuples(
            index=False):
        found = dialect or (registry.from_accent(f"{accents}|{variant}") if registry else None)
        source.rejects.append(Reject(path, found.id if found else "", "path_outside_clips",
                                     f"the path {outside[path]}; only files in "
                                     f"{source.clips_dir} are read"))
    source.metadata = metadata[~bad].reset_index(drop=True)


def _probe_file(file: Path, path: str, source: LoadedSource) -> float:
    try:
        return probe_duration(read_clip(file))
    except RowRejected as error:
        source.rejects.append(Reject(path, "", error.reason, error.detail))
    return math.nan


# --- datasets-readable sources ---------------------------------------------------------------

def _load_datasets_source(spec: SourceSpec, kind: str, cache_dir: str | None,
                          hub: HubDownloads) -> LoadedSource:
    import datasets

    # a Hub id: one revision downloaded (or found in the cache), then read as a local folder
    snapshot = hub.fetch(spec.location, cache_dir) if kind == "hub" else None
    try:
        with _offline_mode(snapshot is not None):  # the snapshot is complete: no network
            if kind == "disk":
                loaded = datasets.load_from_disk(spec.location)
            else:
                location = str(snapshot.folder) if snapshot else spec.location
                loaded = datasets.load_dataset(location, cache_dir=cache_dir)
    except Exception as error:  # datasets raises many types; all mean "this source is unreadable"
        raise SourceError(f"{spec.location}: cannot load ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''})") from None
    source = _dataset_source(spec, kind, loaded)
    source.revision = snapshot.revision if snapshot else None
    return source


def _dataset_source(spec: SourceSpec, kind: str, loaded: Any) -> LoadedSource:
    """The metadata table of a loaded `datasets` source, its audio left undecoded."""
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        splits = [loaded[name] for name in sorted(loaded)]
        loaded = datasets.concatenate_datasets(splits) if len(splits) > 1 else splits[0]
    if "audio" not in loaded.column_names:
        raise SourceError(f"{spec.location}: no 'audio' column (columns: "
                          f"{', '.join(loaded.column_names)})")
    loaded = loaded.cast_column("audio", datasets.Audio(decode=False))
    if loaded._indices is not None:
        loaded = loaded.flatten_indices()
    meta_columns = [c for c in loaded.column_names if c != "audio"]
    table = loaded.select_columns(meta_columns).to_pandas() if meta_columns else pd.DataFrame(
        index=range(len(loaded)))
    metadata = _standardise(table, spec)
    source = LoadedSource(spec, kind, metadata, dataset=loaded)
    paths = _audio_paths(loaded)
    # bytes-only audio has no file name: name the row after its source and position, so the
    # output and rejects.jsonl can still point at it
    metadata["path"] = [p or m or f"{spec.name}#{row}" for row, (p, m) in
                        enumerate(zip(paths, metadata["path"], strict=True))]
    if "duration" in table.columns:
        metadata["duration"] = pd.to_numeric(table["duration"], errors="coerce").to_numpy()
    else:
        metadata["duration"] = _probe_dataset_durations(source)
    return source


@contextlib.contextmanager
def _offline_mode(on: bool) -> Iterator[None]:
    """Both libraries read HF_HUB_OFFLINE once, at import: switch their copies for one call."""
    if not on:
        yield
        return
    import datasets.config
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def _audio_paths(dataset: Any) -> list[str]:
    column = dataset.data.table.column("audio") if hasattr(dataset.data, "table") else \
        dataset.data.column("audio")
    return [p or "" for p in column.combine_chunks().field("path").to_pylist()]


def _probe_dataset_durations(source: LoadedSource, batch_size: int = 1000) -> np.ndarray:
    total = len(source.metadata)
    durations = np.full(total, np.nan)
    bar = progress(desc=f"probing {source.spec.name}", total=total, unit="clips")
    for start in range(0, total, batch_size):
        rows = list(range(start, min(start + batch_size, total)))
        for row, data in zip(rows, source.read_bytes(rows), strict=True):
            try:
                durations[row] = probe_duration(data or b"")
            except RowRejected as error:
                source.rejects.append(Reject(source.metadata.at[row, "path"], "", error.reason,
                                             error.detail))
        bar.update(len(rows))
    bar.close()
    return durations


# --- shared ----------------------------------------------------------------------------------

def _standardise(table: pd.DataFrame, spec: SourceSpec) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(table)))
    out["source"] = spec.location
    out["row"] = np.arange(len(table), dtype=np.int64)
    for column in ("client_id", "path", "sentence", "age", "gender", "accents", "variant"):
        names = _ALIASES.get(column, (column,))
        found = next((n for n in names if n in table.columns), None)
        out[column] = _text_values(table[found]) if found else [""] * len(table)
    for column in ("up_votes", "down_votes"):
        values = table[column] if column in table.columns else pd.Series([""] * len(table))
        out[column] = pd.to_numeric(values, errors="coerce").fillna(0).astype(np.int64).to_numpy()
    out["dialect"] = ""
    out["duration"] = np.nan
    return out


def _text_values(values: pd.Series) -> np.ndarray:
    """Stripped strings, missing values as "" (pandas < 3 turns None into "None" in astype)."""
    as_objects = values.astype(object)
    return as_objects.where(values.notna(), "").astype(str).str.strip().to_numpy()


def _reject_rows_without_text(source: LoadedSource) -> None:
    """Record rows with no sentence or no speaker: they cannot train a voice.

    They stay in the metadata, so the selection step that drops them still counts them.
    """
    metadata = source.metadata
    already = {reject.source_path for reject in source.rejects}
    for column, reason in (("sentence", "missing_sentence"), ("client_id", "missing_client_id")):
        for path, dialect in metadata.loc[metadata[column] == "", ["path", "dialect"]].itertuples(
                index=False):
            if path not in already:
                already.add(path)
                source.rejects.append(Reject(path, dialect, reason))


def _source_dialect(spec: SourceSpec) -> Group | None:
    """The one group of a whole source, when NAME=SOURCE says it, or (grouping by name) the
    source's name does."""
    grouping = spec.grouping
    if spec.dialect is not None or not grouping.by_name or grouping.registry is None:
        return spec.dialect
    return grouping.registry.find(spec.name)


def _assign_dialects(source: LoadedSource) -> None:
    """Grouping by name: the source's group, else each row's, from its accents/variant. A row
    that names no known group is a reject (``unknown_group``). With --group_by, rows are
    placed later, with every source's (`place_sources`)."""
    metadata = source.metadata
    dialect = _source_dialect(source.spec)
    if dialect is not None:
        metadata["dialect"] = dialect.id
        return
    if not source.spec.grouping.by_name:
        return
    registry = source.spec.grouping.registry
    assert registry is not None  # `grouping_for` refuses grouping by name without one
    accents = (metadata["accents"] + "|" + metadata["variant"]).to_numpy()
    cache: dict[str, str] = {}
    for value in set(accents):
        found = registry.from_accent(value)
        cache[value] = found.id if found else ""
    metadata["dialect"] = [cache[value] for value in accents]
    unknown = metadata["dialect"] == ""
    if unknown.all():
        _refuse_unknown_groups(source.spec, registry)
    if unknown.any():
        log.info("%s: %d rows name no known dialect and are left out (rejects: "
                 "unknown_group)", source.spec.location, int(unknown.sum()))
        for path, accents, variant in metadata.loc[unknown, ["path", "accents", "variant"]
                                                   ].itertuples(index=False):
            source.rejects.append(Reject(path, "", "unknown_group", f"accents {accents!r} and "
                                         f"variant {variant!r} name no known group"))
        source.metadata = metadata[~unknown].reset_index(drop=True)
    source.rows_without_dialect = int(unknown.sum())


def _refuse_unknown_groups(spec: SourceSpec, registry: Registry) -> None:
    known = ", ".join(sorted(registry.groups))
    what = "dialect" if spec.grouping.language == "ca" else "group"
    raise SourceError(f"{spec.location}: cannot tell its {what} from the name or the rows' "
                      f"accents/variant; name it as {what.upper()}={spec.location} (known "
                      f"{what}s: {known}), or find the groups in the data with --group_by "
                      "variant|accents|none (`parla groups` lists them)")


# --- reading clips in the workers ------------------------------------------------------------


def clip_reader(source: LoadedSource) -> ClipReader:
    return ClipReader(clips_dir=source.clips_dir,
                      dataset=None if source.clips_dir is not None else source.dataset)
