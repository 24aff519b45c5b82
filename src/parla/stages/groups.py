"""`parla groups`: the groups a run would make of its sources, and the rows it cannot place.

Reads the sources' metadata only (no audio is decoded), places every row as prepare would
(`store.grouping`) and counts each group's clips and speakers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from parla.options import PrepareOptions
from parla.stages.prepare import grouped_sources
from parla.store.grouping import grouping_for


@dataclass(frozen=True)
class GroupRow:
    id: str
    display_name: str
    voice_name: str
    clips: int
    speakers: int


@dataclass(frozen=True)
class GroupTable:
    language: str
    group_by: str  # variant | accents | none | name (the groups file or built-in groups)
    groups: tuple[GroupRow, ...]
    unplaced: dict[str, int]  # reason -> rows (rejects found before any audio is read)

    def format(self) -> str:
        width = max([len(row.id) for row in self.groups] + [5])
        names = max([len(row.display_name) for row in self.groups] + [4])
        voices = max([len(row.voice_name) for row in self.groups] + [5])
        lines = [f"{len(self.groups)} groups (language {self.language}, by {self.group_by})",
                 f"{'group':<{width}}  {'name':<{names}}  {'voice':<{voices}}  {'clips':>7}  "
                 f"{'speakers':>8}"]
        lines += [f"{row.id:<{width}}  {row.display_name:<{names}}  {row.voice_name:<{voices}}  "
                  f"{row.clips:>7}  {row.speakers:>8}" for row in self.groups]
        if self.unplaced:
            lines.append("rejected before any audio is read (rejects.jsonl): " + ", ".join(
                f"{count} {reason}" for reason, count in
                sorted(self.unplaced.items(), key=lambda item: (-item[1], item[0]))))
        return "\n".join(lines)


def group_table(options: PrepareOptions) -> GroupTable:
    """The groups of ``options.datasets`` under the options' grouping, with their counts."""
    grouping = grouping_for(options)
    sources, registry = grouped_sources(options, grouping)
    clips: Counter = Counter()
    speakers: dict[str, set[str]] = {}
    for source in sources.values():
        metadata = source.metadata
        clips.update(metadata["dialect"].tolist())
        for gid, speaker in zip(metadata["dialect"], metadata["client_id"], strict=True):
            speakers.setdefault(gid, set()).add(speaker)
    rows = tuple(GroupRow(g.id, g.display_name, g.voice_name, clips[g.id],
                          len(speakers.get(g.id, ()))) for g in registry.groups.values()
                 if clips[g.id])
    unplaced = Counter(reject.reason for source in sources.values() for reject in source.rejects)
    return GroupTable(str(grouping.language), options.group_by or "name", rows, dict(unplaced))
