"""The prepare stage: sources -> selection -> shard plan -> workers write shards -> reports.

Selection and planning run on metadata only, in this process, and fix every shard's clips
before any audio is decoded. A task is one output shard; the worker reads its own clips,
writes the shard atomically with a footer record, and returns the record (`prepare_worker`).
A rerun trusts every shard whose record matches the run, processes only the others, and
rebuilds every report from the records: resume after any interruption, byte for byte.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd

from parla.audio.decode import flac_encoder, resolve_resampler
from parla.conditioning.vad import resolve_vad
from parla.demo import demo_corpus_path
from parla.errors import RowRejected, UsageError
from parla.groups import Registry
from parla.options import GROUPING_DEFAULTS, PrepareOptions
from parla.progress import get_logger
from parla.report.build import SAMPLES_PER_DIALECT, collect_samples, report_clips, write_report
from parla.report.statistics import build_statistics, speaker_metadata, write_rejects
from parla.stages.planning import PrepareTask, plan_shards, split_dialects
from parla.stages.prepare_worker import ShardPreparer, require_resampler
from parla.stages.result import StageResult
from parla.stages.runner import ShardStage, run_shards
from parla.stages.selection import StepCount, select_candidates
from parla.store.clips import ClipReader
from parla.store.files import remove_stale_tmp, remove_tree, write_json
from parla.store.grouping import Grouping, grouping_for
from parla.store.hub_download import HubDownloads
from parla.store.layout import (
    PREPARE_STAGE,
    REJECTS_FILE,
    REPORT_FILES,
    SOURCES_FILE,
    SPEAKERS_FILE,
    STATISTICS_FILE,
)
from parla.store.lock import lock_folder
from parla.store.shards import (
    DATA_DIR,
    find_shards,
    group_shards,
    shard_paths,
)
from parla.store.sources import (
    LoadedSource,
    clip_reader,
    load_source,
    parse_source_spec,
    place_sources,
)
from parla.store.urls import AnyPath, as_path, check_reachable, is_remote, use_storage_options

log = get_logger("prepare")

# options that say how and where a run goes, not what it writes: not in the card or fingerprint
_RUN_SETTINGS = ("output_dir", "overwrite", "dry_run", "cache_dir", "num_workers", "engine",
                 "allow_stale_cache", "storage_options", "break_lock")


def _check_output_dir(options: PrepareOptions) -> Path:
    """Refuse an output folder that cannot or must not be written, creating nothing yet: a bad
    source found after this check must leave no trace. A folder holding only what parla writes
    may be resumed; its shards' records then decide."""
    out = as_path(options.output_dir)
    if options.dry_run:
        return out
    if is_remote(out):
        check_reachable(out, "--output_dir")
        if out.is_file():
            raise UsageError(f"--output_dir {out} exists and is not a folder")
        return _check_contents(out, options) if out.is_dir() else out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} exists and is not a folder")
    if not out.exists():
        parent = out.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"--output_dir {out} cannot be created: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"--output_dir {out} cannot be created: {parent} is not writable")
        return out
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--output_dir {out} is not writable")
    return _check_contents(out, options)


def _check_contents(out: AnyPath, options: PrepareOptions) -> AnyPath:
    """An existing output folder may hold only what parla writes; reports without shards are
    no run to continue (a run killed before its first shard leaves nothing visible but the
    data folder)."""
    unknown = [p.name for p in out.iterdir()
               if p.name not in (DATA_DIR, *REPORT_FILES) and not p.name.startswith(".")]
    if unknown:
        raise UsageError(f"--output_dir {out} holds files parla did not write "
                         f"({', '.join(sorted(unknown)[:5])}); refusing to write there")
    if not options.overwrite and not find_shards(out) and any(
            not p.name.startswith(".") and p.name != DATA_DIR for p in out.iterdir()):
        raise UsageError(f"--output_dir {out} is not empty; pass --overwrite to replace it")
    return out


def _clear_output(out: AnyPath) -> None:
    for name in (DATA_DIR, *REPORT_FILES):
        remove_tree(out / name)


def recorded_options(options: PrepareOptions) -> dict[str, Any]:
    """The options as data, less the grouping options at the values of parla's first rule (the
    Catalan dialects by name and accents): such a run records what it always did."""
    values = asdict(options)
    for name, legacy in GROUPING_DEFAULTS.items():
        if values.get(name) in legacy:
            values.pop(name)
    return values


def shard_settings(options: PrepareOptions, voices: dict[str, str] | None = None
                   ) -> dict[str, Any]:
    """What changes the bytes a run writes: its options (as JSON data), the voice names of its
    groups when they are not the Catalan dialects', and this machine's FLAC encoder. Every
    shard's record carries them, so a resume can say what differs."""
    settings = recorded_options(options)
    for irrelevant in (*_RUN_SETTINGS, "save_speaker_metadata", "datasets"):
        settings.pop(irrelevant, None)
    if settings.get("groups"):  # the file by its name: its effect is in the plan and the voices
        settings["groups"] = Path(settings["groups"]).name
    if voices is not None:
        settings["voices"] = voices
    settings["flac_encoder"] = flac_encoder()
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def load_sources(options: PrepareOptions, grouping: Grouping | None = None
                 ) -> dict[str, LoadedSource]:
    """Every source, its rows in their groups (`grouped_sources` also gives the groups)."""
    return grouped_sources(options, grouping)[0]


def grouped_sources(options: PrepareOptions, grouping: Grouping | None = None
                    ) -> tuple[dict[str, LoadedSource], Registry]:
    """Every source with each row's group, and the registry of the run's groups: the groups
    file's or the language's built-in groups, or, with --group_by, those found in the rows."""
    grouping = grouping or grouping_for(options)
    specs = [parse_source_spec(text, grouping) for text in options.datasets]
    hub = HubDownloads(allow_stale_cache=options.allow_stale_cache)  # shared: a dead Hub once
    sources: dict[str, LoadedSource] = {}
    seen: dict[str, str] = {}
    for spec in specs:
        # one folder named two ways (`~/cv` and `/home/me/cv`) is still one source
        same = os.path.realpath(os.path.expanduser(spec.location))
        if same in seen:
            raise UsageError(f"source {spec.location} is given twice"
                             + (f" (as {seen[same]})" if seen[same] != spec.location else ""))
        seen[same] = spec.location
        sources[spec.location] = load_source(spec, options.cache_dir, hub)
    if grouping.by_name:
        assert grouping.registry is not None
        return sources, grouping.registry
    return sources, place_sources(list(sources.values()))


def select(options: PrepareOptions, sources: dict[str, LoadedSource]
           ) -> tuple[dict[str, pd.DataFrame], dict[str, list[StepCount]]]:
    """Per dialect: the candidate rows (first choices and spares) and the counts per step."""
    # clip_durations.tsv gives a nominal length to check decoding against; header lengths are
    # checked inside the decoder itself
    metadata = pd.concat([s.metadata.assign(from_header=s.kind != "cv_release")
                          for s in sources.values()], ignore_index=True)
    nominal = metadata["duration"].astype(object).where(~metadata["from_header"], None)
    metadata = metadata.assign(nominal_duration=nominal)
    candidates, counts = {}, {}
    for dialect in sorted(set(metadata["dialect"])):
        candidates[dialect], counts[dialect] = select_candidates(
            metadata[metadata["dialect"] == dialect], options, dialect)
    return candidates, counts


def _engine_cpus(engine: str) -> int:
    """Every core: this machine's, or on Ray the whole cluster's."""
    if engine == "ray":
        from parla.engines.ray import cluster_cpus

        return cluster_cpus()
    return os.cpu_count() or 1


def prepare(options: PrepareOptions) -> StageResult:
    """Run the prepare stage; returns where the output is and its statistics.

    Rerunning the same command on a folder left by an interrupted run resumes it: finished
    shards are kept and only the others are processed. The output is the same, byte for byte,
    as that of an uninterrupted run.
    """
    started = time.monotonic()
    use_storage_options(options.storage_options)
    # what "auto" means on this machine is part of the settings: the card, the statistics and
    # the shard records say which resampler and detector made the audio, and a resume must use
    # the same
    options = replace(options, resampler=resolve_resampler(options.resampler),
                      conditioning=replace(options.conditioning,
                                           vad=resolve_vad(options.conditioning.vad)))
    require_resampler(options)
    out = _check_output_dir(options)
    grouping = grouping_for(options)
    options = replace(options, language=grouping.language)
    sources, registry = grouped_sources(options, grouping)
    candidates, counts = select(options, sources)
    if options.dry_run:
        return StageResult("prepare", str(out), _selection_statistics(counts),
                           time.monotonic() - started, dry_run=True)
    if not any(table["selected"].any() for table in candidates.values()):
        raise UsageError("no clips are left after selection, so there is nothing to write; "
                         "--dry_run shows the rows left after each step")
    tasks = plan_shards(split_dialects(candidates, options), options, out)
    voices = _voices(registry, candidates)
    settings = shard_settings(options, None if _is_catalan_preset(options) else voices)
    readers = {name: clip_reader(source) for name, source in sources.items()}
    with lock_folder(out, break_lock=options.break_lock):
        if options.overwrite:
            _clear_output(out)
        remove_stale_tmp(out)
        records = run_shards(ShardStage(PREPARE_STAGE, out, settings), tasks,
                             shard_paths(find_shards(out)),
                             functools.partial(ShardPreparer, options, readers, settings,
                                               voices=voices),
                             engine=options.engine,
                             num_workers=options.num_workers or _engine_cpus(options.engine),
                             unit="clips")
        statistics = _write_reports(out, options, counts, tasks, records, sources, readers,
                                    registry)
    seconds = time.monotonic() - started
    log.debug("wrote %s in %.1f s (rejects: %d in %s)", out, seconds,
             statistics["total"]["rejected"], out / REJECTS_FILE)
    return StageResult("prepare", str(out), statistics, seconds)


def _selection_statistics(counts: dict[str, list[StepCount]]) -> dict[str, Any]:
    """A dry run's numbers: each dialect's rows after every selection step, in the shape of
    dialect_statistics.json's ``steps``."""
    return {"dialects": {dialect: {"steps": [step.to_dict() for step in steps]}
                         for dialect, steps in counts.items()}}


def _write_reports(out: Path, options: PrepareOptions, counts: dict[str, list[StepCount]],
                   tasks: list[PrepareTask], records: list[dict],
                   sources: dict[str, LoadedSource], readers: dict[str, ClipReader],
                   registry: Registry) -> dict[str, Any]:
    """Every report, rebuilt from the shards' records and the sources' early rejects."""
    shards = group_shards(as_path(task.path) for task in tasks)  # the folder now: the plan's
    rejects = [reject.to_dict() for source in sources.values() for reject in source.rejects]
    rejects += [reject for record in records for reject in record["rejects"]]
    write_rejects(out / REJECTS_FILE, rejects)
    statistics = build_statistics(
        _statistics_parameters(options), counts, records, rejects,
        sum(s.rows_without_dialect for s in sources.values()))
    write_json(out / STATISTICS_FILE, statistics)
    if options.save_speaker_metadata:
        write_json(out / SPEAKERS_FILE, speaker_metadata(records))
    write_report(out, statistics, report_clips(records), rejects,
                 collect_samples(out, SAMPLES_PER_DIALECT, _source_reader(tasks, readers), shards))
    _write_card(out, options, registry, set(counts), shards, sources)
    return statistics


def _source_reader(tasks: list[PrepareTask], readers: dict[str, ClipReader]) -> Any:
    """Reads a sampled row's original clip (the report plays it beside the conditioned one).

    Where each clip comes from is looked up in the plan, one dialect at a time and only for the
    dialects asked about (a few samples each)."""
    where: dict[str, dict[str, tuple[str, int]]] = {}

    def read(row: dict[str, Any]) -> bytes | None:
        dialect = row["dialect"]
        if dialect not in where:
            where[dialect] = {c["path"]: (c["source"], int(c["row"])) for task in tasks
                              if task.config == dialect for group in task.groups
                              for c in group.candidates}
        found = where[dialect].get(row["source_path"])
        if found is None:
            return None
        try:
            return readers[found[0]].read(found[1], row["source_path"])
        except RowRejected:
            return None

    return read


def _statistics_parameters(options: PrepareOptions) -> dict[str, Any]:
    names = ("seed", "target_sample_rate", "resampler", "min_duration", "max_duration",
             "min_samples_per_speaker", "balance_speakers", "max_samples_per_speaker",
             "samples_per_dialect", "select_by", "validation_fraction")
    return {name: getattr(options, name) for name in names}


def _is_catalan_preset(options: PrepareOptions) -> bool:
    """A run of parla's first rule: the built-in Catalan dialects, matched by name and accents."""
    return all(getattr(options, name) in legacy for name, legacy in GROUPING_DEFAULTS.items())


def _voices(registry: Registry, candidates: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Group id -> voice name (the text prefix) of every group the run writes."""
    return {gid: registry.groups[gid].voice_name if gid in registry.groups else gid
            for gid in sorted(candidates)}


def card_groups(registry: Registry, written: set[str]) -> dict[str, dict[str, str]]:
    """What the card says of each group written: its display name and voice name."""
    return {group.id: {"display_name": group.display_name, "voice_name": group.voice_name}
            for group in registry.groups.values() if group.id in written}


def _write_card(out: Path, options: PrepareOptions, registry: Registry, written: set[str],
                shards: dict[str, Any], sources: dict[str, LoadedSource]) -> None:
    """The card (its sources by name, Hub ones with their revision, the groups written) and,
    beside it, where the local sources are on this machine."""
    from parla.card.folder import write_dataset_card
    from parla.card.render import GROUPS_KEY

    parameters = recorded_options(options)
    for private in _RUN_SETTINGS:
        parameters.pop(private, None)
    if not _is_catalan_preset(options):
        parameters["language"] = options.language
        parameters[GROUPS_KEY] = card_groups(registry, written)
    revisions = {name: source.revision for name, source in sources.items() if source.revision}
    if revisions:  # which commit of each Hub dataset the corpus was made from
        parameters["source_revisions"] = revisions
    write_dataset_card(out, kind="prepared", parameters=parameters, shards=shards)
    # the sources as loaded (keyed by location): parsing the names again would take them as
    # Catalan dialects
    local = [str(Path(location).expanduser().absolute()) for location in sources
             if Path(location).expanduser().is_dir()]
    write_json(out / SOURCES_FILE, {"datasets": local})


# --- demo ------------------------------------------------------------------------------------

def run_demo(output_dir: str = "parla_demo_output", overwrite: bool = False,
             num_workers: int | None = None) -> StageResult:
    """Prepare the embedded demo corpus (8 clips per speaker, speaker metadata saved)."""
    options = PrepareOptions(datasets=(str(demo_corpus_path()),), output_dir=output_dir,
                             overwrite=overwrite, num_workers=num_workers,
                             max_samples_per_speaker=8, save_speaker_metadata=True)
    return prepare(options)
