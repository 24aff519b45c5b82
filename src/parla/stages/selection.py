"""Pure selection steps on the metadata table, applied before any audio is decoded.

Each step takes a DataFrame (columns from `sources.METADATA_COLUMNS`) and returns the rows it
keeps, in their original order. Random choices use a generator derived from the seed and the
dialect, so two runs select the same rows and one dialect's choices do not depend on another's.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from parla.options import PrepareOptions


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (stable across Python runs)."""
    digest = hashlib.sha256("\x1f".join((str(seed), *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class StepCount:
    step: str
    rows: int
    speakers: int
    hours: float

    def to_dict(self) -> dict:
        return asdict(self)


def count(table: pd.DataFrame, step: str) -> StepCount:
    durations = table["duration"].to_numpy(dtype=float)
    return StepCount(step, len(table), int(table["client_id"].nunique()),
                     round(float(np.nansum(durations)) / 3600.0, 4))


def filter_duration(table: pd.DataFrame, min_duration: float, max_duration: float) -> pd.DataFrame:
    """Keep clips whose duration is known and within [min, max] seconds."""
    durations = table["duration"].to_numpy(dtype=float)
    keep = ~np.isnan(durations) & (durations >= min_duration) & (durations <= max_duration)
    return table[keep]


def filter_votes(table: pd.DataFrame, min_up_votes: int | None,
                 max_down_votes: int | None) -> pd.DataFrame:
    keep = np.ones(len(table), dtype=bool)
    if min_up_votes is not None:
        keep &= table["up_votes"].to_numpy() >= min_up_votes
    if max_down_votes is not None:
        keep &= table["down_votes"].to_numpy() <= max_down_votes
    return table[keep]


def filter_text(table: pd.DataFrame) -> pd.DataFrame:
    """Keep rows with a sentence and a speaker: without either a row cannot train a voice."""
    sentence = table["sentence"].astype(str).str.strip()
    speaker = table["client_id"].astype(str).str.strip()
    return table[(sentence != "") & (speaker != "")]


def filter_min_samples_per_speaker(table: pd.DataFrame, min_samples: int) -> pd.DataFrame:
    sizes = table.groupby("client_id", sort=False)["client_id"].transform("size")
    return table[sizes.to_numpy() >= min_samples]


def speaker_ranks(table: pd.DataFrame, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Each row's place in its speaker's seeded order of candidates (0 = first choice).

    Only a speaker with more than ``max_samples`` clips is shuffled; the others keep their
    order (every one of their clips is chosen). Speakers are drawn in sorted order, each one's
    positions ascending, so the draws do not depend on how rows are grouped.
    """
    ranks = np.zeros(len(table), dtype=np.int64)
    for _, positions in sorted(table.groupby("client_id", sort=False).indices.items()):
        positions = np.sort(positions)
        order = rng.permutation(positions) if len(positions) > max_samples else positions
        ranks[order] = np.arange(len(order))
    return ranks


def balance_speakers(table: pd.DataFrame, max_samples: int,
                     rng: np.random.Generator) -> pd.DataFrame:
    """Keep at most ``max_samples`` randomly chosen clips per speaker."""
    return table[speaker_ranks(table, max_samples, rng) < max_samples]


def cap_rows(table: pd.DataFrame, max_rows: int | None, rng: np.random.Generator) -> pd.DataFrame:
    """At most ``max_rows`` rows chosen at random, kept in their original order."""
    if max_rows is None or len(table) <= max_rows:
        return table
    chosen = np.sort(rng.choice(len(table), size=max_rows, replace=False))
    return table.iloc[chosen]


def select_candidates(table: pd.DataFrame, options: PrepareOptions,
                      dialect: str) -> tuple[pd.DataFrame, list[StepCount]]:
    """Every selection step, in the original scripts' order, with the counts after each.

    Returns every clip that may be used, with ``selected`` (the first choices, what the counts
    describe) and ``rank`` (the clip's place in its speaker's seeded order). A speaker's other
    clips are its spares: when a chosen clip is rejected while processing, the next spare takes
    its place (back-fill), so a speaker with enough good clips ends with its full quota.
    """
    # a stable order first, so the random steps see the same rows in the same order every run
    table = table.sort_values(["source", "row"], kind="stable")
    counts = [count(table, "input")]
    table = filter_duration(table, options.min_duration, options.max_duration)
    counts.append(count(table, "duration"))
    if options.min_up_votes is not None or options.max_down_votes is not None:
        table = filter_votes(table, options.min_up_votes, options.max_down_votes)
        counts.append(count(table, "votes"))
    table = filter_text(table)
    counts.append(count(table, "sentence_and_speaker"))
    table = filter_min_samples_per_speaker(table, options.min_samples_per_speaker)
    counts.append(count(table, "min_samples_per_speaker"))
    table = table.assign(rank=np.arange(len(table)), selected=True)
    if options.balance_speakers:
        ranks = speaker_ranks(table, options.max_samples_per_speaker,
                              rng_for(options.seed, "balance", dialect))
        table = table.assign(rank=ranks, selected=ranks < options.max_samples_per_speaker)
        counts.append(count(table[table["selected"]], "balance_speakers"))
    if options.samples_per_dialect is not None:
        chosen = table[table["selected"]]
        capped = cap_rows(chosen, options.samples_per_dialect,
                          rng_for(options.seed, "samples_per_dialect", dialect))
        table = table.assign(selected=table.index.isin(capped.index))
        counts.append(count(capped, "samples_per_dialect"))
    return table, counts


def select_dialect(table: pd.DataFrame, options: PrepareOptions,
                   dialect: str) -> tuple[pd.DataFrame, list[StepCount]]:
    """The first-choice rows of a dialect (no spares) and the counts after each step."""
    candidates, counts = select_candidates(table, options, dialect)
    return candidates[candidates["selected"]].drop(columns=["rank", "selected"]), counts


def split_by_speaker(table: pd.DataFrame, validation_fraction: float,
                     rng: np.random.Generator,
                     target_rows: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/validation split in which no speaker is on both sides.

    Speakers are taken in random order into validation while that brings its size closer to
    ``target_rows`` (default: ``validation_fraction`` of the rows); at least one speaker always
    stays in train.
    """
    if validation_fraction <= 0 or table.empty:
        return table, table.iloc[0:0]
    sizes = table.groupby("client_id", sort=True).size()
    target = validation_fraction * len(table) if target_rows is None else target_rows
    speakers = sizes.index.to_numpy()[rng.permutation(len(sizes))]
    chosen: list[str] = []
    held_out = 0
    for speaker in speakers:
        if held_out >= target or len(chosen) == len(sizes) - 1:
            break
        size = int(sizes[speaker])
        if abs(held_out + size - target) <= abs(held_out - target):
            chosen.append(speaker)
            held_out += size
    in_validation = table["client_id"].isin(chosen).to_numpy()
    return table[~in_validation], table[in_validation]
