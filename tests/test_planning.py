"""The shard plan: speaker-disjoint splits, whole speakers with their spares, shard sizes."""

from __future__ import annotations

import pandas as pd
import pytest

from parla.options import PrepareOptions
from parla.stages.planning import plan_shards, split_dialects


def candidates(dialect: str, speakers: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """``speakers = {name: (first choices, spares)}`` as select_candidates gives them."""
    rows = []
    for name, (chosen, spares) in speakers.items():
        for rank in range(chosen + spares):
            rows.append({"source": "s", "row": len(rows), "path": f"{dialect}-{name}-{rank}.mp3",
                         "sentence": "Bon dia.", "client_id": name, "gender": "", "age": "",
                         "dialect": dialect, "duration": 2.0, "nominal_duration": None,
                         "rank": rank, "selected": rank < chosen})
    return pd.DataFrame(rows)


def options(**kwargs) -> PrepareOptions:
    return PrepareOptions(datasets=("x",), output_dir="out", **kwargs)


def test_a_speaker_with_spares_stays_whole_and_carries_them_in_order() -> None:
    table = split_dialects({"central": candidates("central", {f"s{i}": (5, 3)
                                                              for i in range(9)})},
                           options(validation_fraction=0.0))
    tasks = plan_shards(table, options(rows_per_shard=12, validation_fraction=0.0), "out")
    assert sum(task.rows for task in tasks) == 45
    assert all(task.rows <= 12 for task in tasks)
    assert [t.path.split("/")[-1] for t in tasks] == [
        f"train-{i:05d}-of-{len(tasks):05d}.parquet" for i in range(len(tasks))]
    for task in tasks:
        for group in task.groups:
            assert group.quota == 5 and len(group.candidates) == 8
            assert [c["selected"] for c in group.candidates] == [True] * 5 + [False] * 3
            assert [c["path"].rsplit("-", 1)[1] for c in group.candidates] == [
                f"{rank}.mp3" for rank in range(8)]
    speakers = [g.speaker_id for t in tasks for g in t.groups]
    assert sorted(speakers) == [f"s{i}" for i in range(9)]  # each speaker in one shard only


def test_a_speaker_without_spares_is_cut_to_fill_shards() -> None:
    table = split_dialects({"balear": candidates("balear", {"big": (25, 0)})},
                           options(validation_fraction=0.0))
    tasks = plan_shards(table, options(rows_per_shard=10, validation_fraction=0.0), "out")
    assert [task.rows for task in tasks] == [10, 10, 5]


def test_spares_beyond_the_candidate_limit_are_not_carried() -> None:
    table = split_dialects({"central": candidates("central", {"a": (4, 20)})},
                           options(validation_fraction=0.0))
    [task] = plan_shards(table, options(max_candidates_per_speaker=6, validation_fraction=0.0),
                         "out")
    assert len(task.groups[0].candidates) == 6 and task.groups[0].quota == 4


@pytest.mark.parametrize("seed", range(4))
def test_the_plan_depends_only_on_the_seed_and_the_rows(seed: int) -> None:
    table = split_dialects({"central": candidates("central", {f"s{i}": (3, 1) for i in range(12)}),
                            "valencia": candidates("valencia", {f"v{i}": (4, 0)
                                                                for i in range(5)})},
                           options(seed=seed, validation_fraction=0.2))
    first = plan_shards(table, options(seed=seed, rows_per_shard=8), "out")
    again = plan_shards(table.sample(frac=1, random_state=seed), options(seed=seed,
                                                                         rows_per_shard=8), "out")
    assert [t.digest() for t in first] == [t.digest() for t in again]
    validation = {g.speaker_id for t in first if t.split == "validation" for g in t.groups}
    train = {g.speaker_id for t in first if t.split == "train" for g in t.groups}
    assert validation and train.isdisjoint(validation)
