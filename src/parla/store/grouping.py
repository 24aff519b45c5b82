"""Which group (config) each row belongs to: by name, by a groups file, or found in the data.

`grouping_for` turns the prepare options into a `Grouping`; `place_rows` applies it to the
rows' ``accents`` or ``variant`` values. The rule for free text (``--group_by accents``, the
column Common Voice fills with ``|``-separated, self-described accents):

1. A value is split on ``|``; each part is trimmed, empty and repeated parts dropped.
2. Without a groups file, a group is a part that at least ``--min_group_clips`` rows give
   alone; its id is the part's slug (``España: Norte peninsular`` -> ``espana_norte_peninsular``),
   its display name the part's most common spelling, its voice name its id. With a groups file
   (or the language's built-in groups), a part means the group whose id, name, alias or
   absorbed accent string it is, and the file's groups with fewer clips are left out.
3. A row joins the one group among its parts; its other parts (qualifiers no row gives alone,
   groups too small to keep, strings the file does not list) are ignored.
4. A row it cannot place is a reject, with its value in the detail: ``no_group`` (nothing
   given), ``ambiguous_group`` (its parts name two or more groups), ``small_group`` (its group
   has fewer than ``--min_group_clips`` clips), ``unknown_group`` (no part names a group).

``--group_by variant`` applies the same rule to the ``variant`` column; ``--group_by none``
puts every row in one group named after the language.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from parla.dialects import CATALAN
from parla.errors import Reject, UsageError
from parla.groups import Group, Registry, group_id, locale_from_name, preset, preset_languages
from parla.groups import read_groups_file as read_groups_file
from parla.options import PrepareOptions

if TYPE_CHECKING:
    from parla.store.sources import LoadedSource


@dataclass(frozen=True)
class Grouping:
    """How rows find their group. ``group_by`` None is parla's first rule: a source's name,
    else the first of its rows' accents/variant parts that names a group of ``registry``."""

    registry: Registry | None = CATALAN  # the curated groups; None: found in the data
    group_by: str | None = None  # variant | accents | none
    min_group_clips: int = 1
    language: str | None = "ca"

    @property
    def by_name(self) -> bool:
        return self.group_by is None


def resolve_language(options: PrepareOptions, registry: Registry | None = None) -> str:
    """--language; else the groups file's; else the first source whose name gives a locale
    (a release folder ``es``, a dataset ``cv_23_ca_central``); else ca."""
    if options.language:
        return options.language
    if registry is not None and registry.language:
        return registry.language
    for text in options.datasets:
        location = text.partition("=")[2] if "=" in text.split("/")[0] else text
        found = locale_from_name(location)
        if found:
            return found
    return "ca"


def grouping_for(options: PrepareOptions) -> Grouping:
    """The grouping a run's options ask for (UsageError for one that cannot work)."""
    registry = read_groups_file(options.groups) if options.groups else None
    language = resolve_language(options, registry)
    if registry is None:
        registry = preset(language)
        if registry is None and options.group_by is None:
            raise UsageError(
                f"parla has no built-in groups for language {language!r} (it has: "
                f"{', '.join(preset_languages())}); find them in the data with --group_by "
                "variant|accents|none, or name them in a --groups FILE")
    if options.group_by == "none":
        registry = None
    return Grouping(registry, options.group_by, options.min_group_clips, language)


@dataclass
class Placement:
    """Each row's group id ("" where it has none), why each unplaced row is unplaced, and the
    registry of the groups found (in the groups file's order, else by id)."""

    ids: list[str]
    reasons: dict[int, tuple[str, str]] = field(default_factory=dict)
    registry: Registry = field(default_factory=lambda: Registry({}))


def split_parts(value: str) -> list[str]:
    """A Common Voice accents value's parts: split on '|', trimmed, no empty or repeated part."""
    return list(dict.fromkeys(part.strip() for part in (value or "").split("|") if part.strip()))


def place_rows(values: Sequence[str], grouping: Grouping, column: str = "accents") -> Placement:
    """Place every row by its value of ``column`` (the module's rule; `--group_by` is not None)."""
    if grouping.group_by == "none":
        name = grouping.language or "speech"
        group = Group(group_id(name), name, group_id(name))
        return Placement([group.id] * len(values), {}, Registry.of([group], grouping.language))
    distinct = list(dict.fromkeys(values))
    if grouping.registry is not None:
        meaning = {v: [g.id for g in dict.fromkeys(
            filter(None, (grouping.registry.match(p) for p in split_parts(v))))]
            for v in distinct}
        groups = dict(grouping.registry.groups)
    else:
        meaning, groups = _groups_from_data(values, grouping.min_group_clips)
    return _place(values, meaning, groups, grouping, column)


def _groups_from_data(values: Sequence[str], min_clips: int
                      ) -> tuple[dict[str, list[str]], dict[str, Group]]:
    """(each value's group ids, the groups): a group is a part rows give alone."""
    alone: Counter = Counter()
    spellings: dict[str, Counter] = {}
    for value, count in Counter(values).items():
        parts = split_parts(value)
        if len(parts) == 1:
            alone[group_id(parts[0])] += count
            spellings.setdefault(group_id(parts[0]), Counter())[parts[0]] += count
    groups = {gid: Group(gid, spellings[gid].most_common(1)[0][0], gid) for gid in sorted(alone)}
    meaning: dict[str, list[str]] = {}
    for value in dict.fromkeys(values):
        ids = list(dict.fromkeys(group_id(part) for part in split_parts(value)))
        kept = [gid for gid in ids if alone[gid] >= min_clips]
        # a lone value of a small group means it still, so that it is rejected as small_group
        meaning[value] = kept if kept or len(ids) != 1 or ids[0] not in groups else ids
    return meaning, groups


def _place(values: Sequence[str], meaning: dict[str, list[str]], groups: dict[str, Group],
           grouping: Grouping, column: str) -> Placement:
    ids: list[str] = []
    reasons: dict[int, tuple[str, str]] = {}
    for index, value in enumerate(values):
        found = meaning[value]
        if len(found) == 1:
            ids.append(found[0])
            continue
        ids.append("")
        if not split_parts(value):
            reasons[index] = ("no_group", f"no {column} given")
        elif found:
            reasons[index] = ("ambiguous_group", f"{column} {value!r} name {len(found)} groups "
                              f"({', '.join(found)}); a --groups file can absorb one")
        else:
            reasons[index] = ("unknown_group", f"{column} {value!r} name no group"
                              + ("" if grouping.registry is None else " of the groups file"))
    counts = Counter(ids)
    small = {gid for gid, count in counts.items() if gid and count < grouping.min_group_clips}
    for index, gid in enumerate(ids):
        if gid in small:
            reasons[index] = ("small_group", f"{column} {values[index]!r}: group {gid} has "
                              f"{counts[gid]} clips, fewer than --min_group_clips "
                              f"{grouping.min_group_clips}")
            ids[index] = ""
    present = [groups[gid] for gid in groups if counts.get(gid) and gid not in small]
    return Placement(ids, reasons, Registry.of(present, grouping.language))


def place_sources(sources: Sequence[LoadedSource]) -> Registry:
    """--group_by: every row of every source placed by one rule (`store.grouping`); the rows
    it cannot place become rejects and leave the metadata. Returns the groups found."""
    grouping = sources[0].spec.grouping
    column = "variant" if grouping.group_by == "variant" else "accents"
    values = [value for source in sources for value in (
        [source.spec.dialect.display_name] * len(source.metadata) if source.spec.dialect
        else source.metadata[column].tolist())]
    placement = place_rows(values, grouping, column)
    start = 0
    for source in sources:
        end = start + len(source.metadata)
        _apply_placement(source, placement.ids[start:end], {
            index - start: why for index, why in placement.reasons.items()
            if start <= index < end})
        start = end
    return placement.registry


def _apply_placement(source: LoadedSource, ids: list[str],
                     reasons: dict[int, tuple[str, str]]) -> None:
    metadata = source.metadata
    metadata["dialect"] = ids
    already = {reject.source_path for reject in source.rejects}
    for index, (reason, detail) in sorted(reasons.items()):
        path = metadata.at[index, "path"]
        if path not in already:
            source.rejects.append(Reject(path, "", reason, detail))
    by_path = dict(zip(metadata["path"], metadata["dialect"], strict=True))
    source.rejects = [reject if reject.dialect else replace(
        reject, dialect=by_path.get(reject.source_path, "")) for reject in source.rejects]
    source.metadata = metadata[metadata["dialect"] != ""].reset_index(drop=True)
