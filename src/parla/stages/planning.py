"""Turn the selected candidates into shard tasks: the split, the shards and what each one holds.

Pure functions on the metadata table: every row's shard is fixed here, before any audio is
decoded, so the output does not depend on the number of workers or the engine. A shard is one
dialect's split; it holds whole speakers (each with its quota and its spare clips, so that
back-fill never needs another shard), except a speaker with no spares, whose clips may be cut
across shards. Rows are not shuffled across dialects: training shuffles them anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from parla.options import PrepareOptions
from parla.stages.selection import rng_for, split_by_speaker
from parla.store.shards import shard_path

SPLITS = ("train", "validation")
# what a worker needs of each candidate clip; `source` with `row` or `path` finds its bytes
CANDIDATE_FIELDS = ("source", "row", "path", "sentence", "client_id", "gender", "age",
                    "dialect", "duration", "nominal_duration", "selected")


@dataclass(frozen=True)
class SpeakerGroup:
    """One speaker's clips in one shard: keep ``quota`` of ``candidates``, in their order."""

    speaker_id: str
    quota: int
    candidates: tuple[dict[str, Any], ...]  # first choices first, then spares, seeded order


@dataclass(frozen=True)
class PrepareTask:
    """One output shard of prepare: where it goes and the clips it is made from."""

    config: str
    split: str
    index: int
    count: int
    path: str
    groups: tuple[SpeakerGroup, ...]

    @property
    def rows(self) -> int:
        return sum(group.quota for group in self.groups)

    def digest(self) -> str:
        """Identifies the shard's planned input: a changed clip list, sentence, speaker field or
        length gives another digest; a source folder named another way gives the same."""
        planned = [[group.speaker_id, group.quota,
                    [[_source_identity(c["source"]), *(c[name] for name in CANDIDATE_FIELDS
                                                        if name != "source")]
                     for c in group.candidates]]
                   for group in self.groups]
        return hashlib.sha256(json.dumps(planned, default=str).encode()).hexdigest()

    @property
    def output(self) -> str:
        return self.path

    def inputs(self) -> dict[str, Any]:
        """What the shard's footer records of its planned input (`runner.mismatch`)."""
        return {"task": self.digest()}

    def describe(self) -> str:
        return f"shard {self.config}/{Path(self.path).name}"


def _source_identity(location: str) -> str:
    """A local source by its real path (`~/cv` and `/home/me/cv` are one), a Hub id as it is."""
    path = os.path.expanduser(location)
    return os.path.realpath(path) if os.path.exists(path) else location


def split_dialects(candidates: Mapping[str, pd.DataFrame],
                   options: PrepareOptions) -> pd.DataFrame:
    """Every candidate with its ``split``: speaker-disjoint train/validation per dialect.

    Each dialect aims at the fraction of all rows so far less what is already held out, so
    whole-speaker rounding does not add up across small dialects. A speaker recorded under two
    dialects is held out in both, or the union of the dialects would not be speaker-disjoint.
    """
    held_out: set[str] = set()
    rows_so_far = held_out_rows = 0
    for dialect, table in candidates.items():
        chosen = table[table["selected"]]
        rows_so_far += len(chosen)
        _, validation = split_by_speaker(
            chosen, options.validation_fraction, rng_for(options.seed, "split", dialect),
            target_rows=options.validation_fraction * rows_so_far - held_out_rows)
        held_out_rows += len(validation)
        held_out.update(validation["client_id"])
    parts = [table.assign(split="train") for table in candidates.values()]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(table):
        table.loc[table["client_id"].isin(held_out), "split"] = "validation"
    return table


def _pieces(positions: list[int], quota: int, rows_per_shard: int,
            room: int) -> list[tuple[int, list[int]]]:
    """(quota, candidate positions) pieces of one speaker: whole if it has spares or fits the
    room left in the current shard, else cut into shard-sized pieces."""
    if len(positions) > quota or quota <= room:
        return [(quota, positions)]
    sizes = [room] if room > 0 else []
    while sum(sizes) < len(positions):
        sizes.append(rows_per_shard)
    pieces, start = [], 0
    for size in sizes:
        piece = positions[start:start + size]
        pieces.append((len(piece), piece))
        start += size
    return pieces


def plan_shards(table: pd.DataFrame, options: PrepareOptions,
                out_dir: str | Path) -> list[PrepareTask]:
    """Every shard task of the run, in a fixed order (dialect, split, index).

    Speakers are taken in a seeded order and packed into shards of about ``rows_per_shard``
    kept rows. Vectorised where it counts: the driver plans millions of rows.
    """
    table = table.reset_index(drop=True)
    records = table[list(CANDIDATE_FIELDS)].to_dict("records")
    selected = table["selected"].to_numpy(dtype=bool)
    ranks = table["rank"].to_numpy()
    speakers_column = table["client_id"].to_numpy()
    limit = options.candidates_per_speaker
    tasks: list[PrepareTask] = []
    for (dialect, split), rows in sorted(table.groupby(["dialect", "split"]).indices.items()):
        by_speaker: dict[str, list[int]] = {}
        for position in rows:
            by_speaker.setdefault(speakers_column[position], []).append(int(position))
        speakers = sorted(by_speaker)
        order = rng_for(options.seed, "order", dialect, split).permutation(len(speakers))
        shards: list[list[SpeakerGroup]] = [[]]
        filled = 0
        for speaker in (speakers[i] for i in order):
            # first choices first, then spares, each in the speaker's seeded order
            positions = sorted(by_speaker[speaker], key=lambda i: (not selected[i], ranks[i]))
            quota = int(selected[positions].sum())
            if quota == 0:
                continue  # every clip of this speaker was dropped by the dialect cap
            positions = positions[:max(quota, limit)]  # spares past the limit are not carried
            for piece_quota, piece in _pieces(positions, quota, options.rows_per_shard,
                                              options.rows_per_shard - filled):
                if filled and filled + piece_quota > options.rows_per_shard:
                    shards.append([])
                    filled = 0
                shards[-1].append(SpeakerGroup(speaker, piece_quota,
                                               tuple(records[i] for i in piece)))
                filled += piece_quota
        shards = [groups for groups in shards if groups]
        for index, groups in enumerate(shards):
            path = shard_path(out_dir, dialect, split, index, len(shards))
            tasks.append(PrepareTask(dialect, split, index, len(shards), str(path), tuple(groups)))
    return tasks
