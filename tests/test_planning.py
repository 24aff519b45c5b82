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


def test_a_quota_larger_than_the_candidate_limit_is_carried_whole() -> None:
    # 10 first choices and 3 spares against a limit of 4: every first choice is carried (the
    # quota cannot be met from fewer), the spares past the quota are not
    table = split_dialects({"central": candidates("central", {"a": (10, 3)})},
                           options(validation_fraction=0.0))
    [task] = plan_shards(table, options(max_candidates_per_speaker=4, validation_fraction=0.0),
                         "out")
    [group] = task.groups
    assert group.quota == 10 and task.rows == 10
    assert len(group.candidates) == 10 and all(c["selected"] for c in group.candidates)


def test_balancing_off_with_a_cap_set_keeps_every_clip_of_the_speaker() -> None:
    # --no_balance_speakers --max_samples_per_speaker 2: nothing caps the quota (10), while the
    # candidate limit is 2 x 2 = 4; the plan must still carry all 10 clips
    from parla.stages.selection import select_candidates

    raw = candidates("central", {"a": (10, 0), "b": (3, 0)}).drop(columns=["rank", "selected"])
    opts = options(balance_speakers=False, max_samples_per_speaker=2, validation_fraction=0.0)
    assert opts.candidates_per_speaker == 4
    selected, _ = select_candidates(raw, opts, "central")
    tasks = plan_shards(split_dialects({"central": selected}, opts), opts, "out")
    groups = {g.speaker_id: g for t in tasks for g in t.groups}
    assert (groups["a"].quota, len(groups["a"].candidates)) == (10, 10)
    assert (groups["b"].quota, len(groups["b"].candidates)) == (3, 3)
    assert sum(t.rows for t in tasks) == 13
    assert sorted(c["path"] for c in groups["a"].candidates) == sorted(
        f"central-a-{rank}.mp3" for rank in range(10))


def test_later_dialects_aim_at_the_fraction_less_what_is_already_held_out() -> None:
    # three dialects of ten one-clip speakers, half held out: each dialect's target is half of
    # all rows so far less the rows already held out, so every dialect holds out 5 (the
    # running total stays at half); aiming at half of all rows so far would hold out 9 of the
    # second dialect's 10 (one speaker always stays in train)
    dialects = ("balear", "central", "valencia")
    table = split_dialects({d: candidates(d, {f"{d}{i}": (1, 0) for i in range(10)})
                            for d in dialects}, options(validation_fraction=0.5))
    held_out = table[table["split"] == "validation"]
    assert held_out.groupby("dialect").size().to_dict() == {d: 5 for d in dialects}


def test_small_dialects_do_not_each_round_up_to_a_whole_speaker() -> None:
    # 10 %: the first dialect (12 rows, target 1.2) holds out nobody, the second (target 2.4)
    # one 4-row speaker, the third (target 3.6 - 4 < 0) nobody again: 4 of 36 rows in all
    table = split_dialects({d: candidates(d, {f"{d}{i}": (4, 0) for i in range(3)})
                            for d in ("balear", "central", "valencia")},
                           options(validation_fraction=0.1))
    held_out = table[table["split"] == "validation"]
    assert len(held_out) == 4 and held_out["client_id"].nunique() == 1


def test_a_speaker_held_out_in_one_dialect_is_held_out_in_every_dialect() -> None:
    both = {"shared": (4, 0)}
    held_out_shared = 0
    for seed in range(8):
        table = split_dialects(
            {"central": candidates("central", {f"c{i}": (4, 0) for i in range(4)} | both),
             "balear": candidates("balear", both | {"b0": (4, 0)})},
            options(validation_fraction=0.4, seed=seed))
        splits = table.groupby("client_id")["split"].agg(set)
        assert all(len(sides) == 1 for sides in splits)  # no speaker on both sides
        held_out_shared += splits["shared"] == {"validation"}
    assert 0 < held_out_shared < 8  # the case was exercised, both ways


def test_speakers_that_exactly_fill_a_shard_share_it() -> None:
    # two whole speakers of 5 (with spares) and rows_per_shard 10: 5 + 5 == 10 fits one shard;
    # a third speaker starts the next
    table = split_dialects({"central": candidates("central", {f"s{i}": (5, 2) for i in range(3)})},
                           options(validation_fraction=0.0))
    tasks = plan_shards(table, options(rows_per_shard=10, validation_fraction=0.0), "out")
    assert [task.rows for task in tasks] == [10, 5]
    assert [len(task.groups) for task in tasks] == [2, 1]


def test_a_speaker_one_row_over_the_room_left_starts_a_new_shard() -> None:
    table = split_dialects({"central": candidates("central", {"a": (5, 1), "b": (6, 1)})},
                           options(validation_fraction=0.0))
    tasks = plan_shards(table, options(rows_per_shard=10, validation_fraction=0.0), "out")
    assert sorted(task.rows for task in tasks) == [5, 6]


def test_a_speaker_without_spares_that_exactly_fits_the_room_is_not_cut() -> None:
    table = split_dialects({"central": candidates("central", {"a": (4, 0), "b": (6, 0)})},
                           options(validation_fraction=0.0))
    [task] = plan_shards(table, options(rows_per_shard=10, validation_fraction=0.0), "out")
    assert sorted((g.speaker_id, g.quota) for g in task.groups) == [("a", 4), ("b", 6)]


def test_a_speaker_without_spares_first_fills_the_room_left_by_others() -> None:
    # 4 whole rows and 25 to cut, shards of 10: the cut fills what the first shard has left,
    # so 29 rows take three shards, whichever speaker the seeded order takes first
    table = split_dialects({"central": candidates("central", {"a": (4, 1), "big": (25, 0)})},
                           options(validation_fraction=0.0))
    firsts = set()
    for seed in range(6):
        tasks = plan_shards(table, options(seed=seed, rows_per_shard=10,
                                           validation_fraction=0.0), "out")
        assert sorted(task.rows for task in tasks) == [9, 10, 10]
        firsts.add(tasks[0].groups[0].speaker_id)
    assert firsts == {"a", "big"}  # both orders were planned


def test_a_speaker_with_one_first_choice_is_planned_and_one_with_none_is_not() -> None:
    table = split_dialects({"central": candidates("central", {"one": (1, 2), "none": (0, 3)})},
                           options(validation_fraction=0.0))
    [task] = plan_shards(table, options(validation_fraction=0.0), "out")
    assert [(g.speaker_id, g.quota, len(g.candidates)) for g in task.groups] == [("one", 1, 3)]


def test_the_seed_changes_the_speaker_order_and_the_split() -> None:
    speakers = {f"s{i}": (2, 0) for i in range(12)}
    orders, held_out = set(), set()
    for seed in range(4):
        rows = candidates("central", speakers)
        table = split_dialects({"central": rows}, options(seed=seed, validation_fraction=0.0))
        tasks = plan_shards(table, options(seed=seed, validation_fraction=0.0), "out")
        orders.add(tuple(g.speaker_id for t in tasks for g in t.groups))
        table = split_dialects({"central": rows}, options(seed=seed, validation_fraction=0.25))
        held_out.add(frozenset(table.loc[table["split"] == "validation", "client_id"]))
    assert len(orders) > 1 and len(held_out) > 1
