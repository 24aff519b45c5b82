"""The prepare stage end to end: layout, round trip through `load_dataset`, determinism, rejects,
statistics, output folder rules, and the demo corpus."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import (
    append_cv_rows,
    encode,
    link_cv_release,
    load_prepared,
    raw_conditioning,
    speaker_id,
    speech,
    write_cv_release,
)
from parla import cli
from parla.errors import UsageError
from parla.options import ConditioningOptions, PrepareOptions
from parla.stages.planning import split_dialects
from parla.stages.prepare import prepare
from parla.stages.prepare_worker import process_clip
from parla.store.layout import REJECTS_FILE, SPEAKERS_FILE, STATISTICS_FILE
from parla.store.shards import find_shards, read_shard_record, write_table_atomic

SPEAKERS = {"ana": ("Central", 3), "bernat": ("Central", 3), "carla": ("Central|Barceloní", 5),
            "dani": ("Central", 3), "eva": ("Balear", 3), "ferran": ("Balear|Mallorquí", 4),
            "gina": ("Balear", 3)}
QUOTED = '"Bon dia", va dir la Maria.'  # a CSV reader that honours quotes would mangle it
BALANCED = {"max_samples_per_speaker": 4}  # carla's 5 clips are cut to 4


def options(release: Path | str, out: Path, **kwargs) -> PrepareOptions:
    values = {"num_workers": 1, "validation_fraction": 0.25, "conditioning": raw_conditioning()}
    return PrepareOptions(datasets=(str(release),), output_dir=str(out), **values | kwargs)


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for splits in find_shards(folder).values() for paths in splits.values()
            for path in paths}


def read_config(folder: Path, config: str, split: str = "train") -> pa.Table:
    """One config's split; ``all`` is the union of the dialect configs, as the card defines it."""
    shards = find_shards(folder)
    configs = sorted(shards) if config == "all" else [config]
    return pa.concat_tables([pq.read_table(p) for c in configs
                             for p in shards[c].get(split, [])])


def read_rejects(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / REJECTS_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def base_release(tmp_path_factory) -> Path:
    """Speech clips of two dialects, plus one sentence that starts with a quote."""
    folder = write_cv_release(tmp_path_factory.mktemp("release") / "cv", SPEAKERS,
                              use_speech=True)
    samples = speech("Bon dia, va dir la Maria.", seed=99)
    (folder / "clips" / "quoted.mp3").write_bytes(encode(samples))
    append_cv_rows(folder, [{"client_id": speaker_id("ana"), "path": "quoted.mp3",
                             "sentence": QUOTED, "accents": "Central", "age": "thirties",
                             "gender": "female_feminine"}],
                   {"quoted.mp3": round(samples.size / 48)})
    return folder


@pytest.fixture
def release(base_release, tmp_path) -> Path:
    """A private copy, free to add bad rows to."""
    return Path(shutil.copytree(base_release, tmp_path / "cv"))


@pytest.fixture(scope="module")
def prepared(base_release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARLA_DISABLE_PROGRESS", "1")
        prepare(options(base_release, out, **BALANCED))
    return out


# --- the output ------------------------------------------------------------------------------

def test_layout(prepared: Path) -> None:
    shards = find_shards(prepared)
    assert set(shards) == {"balear", "central"}  # each clip stored once: no `all` folder
    assert all(set(splits) <= {"train", "validation"} for splits in shards.values())
    assert any("validation" in splits for splits in shards.values())
    assert all(len(paths) == 1 and paths[0].name.endswith("-00000-of-00001.parquet")
               for splits in shards.values() for paths in splits.values())
    visible = {p.name for p in prepared.iterdir() if not p.name.startswith(".")}
    assert visible == {"data", "README.md", REJECTS_FILE, STATISTICS_FILE, "report.html",
                       "report"}
    card = (prepared / "README.md").read_text()
    assert "config_name: central" in card and "config_name: all" in card
    assert read_rejects(prepared) == []
    assert not list(prepared.rglob("*.tmp"))


def test_load_dataset_round_trip(prepared: Path, base_release: Path, tmp_path: Path) -> None:
    validated = pd.read_csv(base_release / "validated.tsv", sep="\t", quoting=csv.QUOTE_NONE,
                            dtype=str,
                            keep_default_na=False).set_index("path")
    listed = pd.read_csv(base_release / "clip_durations.tsv", sep="\t").set_index("clip")
    rows = {config: [row for split in ("train", "validation")
                     for row in load_prepared(prepared, config, split, tmp_path / "cache")]
            for config in ("central", "balear", "all")}
    everything = rows["all"]
    assert len(everything) == len(validated) - 1 == 24
    assert set(r["source_path"] for r in everything) < set(validated.index)
    per_speaker = Counter(r["speaker_id"] for r in everything)
    assert per_speaker[speaker_id("carla")] == 4 and len(per_speaker) == 7
    for row in everything:
        source = validated.loc[row["source_path"]]
        assert row["sample_rate"] == 24000 and row["samples"].ndim == 1
        assert row["duration"] == pytest.approx(row["samples"].size / 24000, abs=1e-5)
        # conditioning is off: the clip is the source clip, resampled
        assert row["duration"] == pytest.approx(listed.loc[row["source_path"]].iloc[0] / 1000,
                                                abs=0.03)
        assert row["original_text"] == source["sentence"]
        assert row["text"] == f"{row['dialect']}: {source['sentence']}"
        assert row["voice_name"] == row["dialect"]
        assert row["speaker_id"] == source["client_id"]
        assert (row["gender"], row["age"]) == (source["gender"], source["age"])
        assert row["audio"]["path"] == Path(row["source_path"]).stem + ".flac"
    quoted = [r for r in everything if r["source_path"] == "quoted.mp3"]
    assert [r["text"] for r in quoted] == [f"central: {QUOTED}"]
    for dialect in ("central", "balear"):
        mine = sorted(r["source_path"] for r in everything if r["dialect"] == dialect)
        assert sorted(r["source_path"] for r in rows[dialect]) == mine


def test_all_config_is_speaker_disjoint(prepared: Path) -> None:
    train = set(read_config(prepared, "all", "train")["speaker_id"].to_pylist())
    validation = set(read_config(prepared, "all", "validation")["speaker_id"].to_pylist())
    assert validation and train and train.isdisjoint(validation)


def assert_statistics_match_shards(folder: Path, worker_rejects: dict[str, int]) -> None:
    statistics = json.loads((folder / STATISTICS_FILE).read_text())
    shards = find_shards(folder)
    assert set(statistics["dialects"]) == set(shards)
    for dialect, entry in statistics["dialects"].items():
        table = pd.concat([read_config(folder, dialect, split).to_pandas()
                           for split in shards[dialect]])
        output = entry["output"]
        assert output["rows"] == len(table)
        assert output["speakers"] == table["speaker_id"].nunique()
        assert output["hours"] == pytest.approx(table["duration"].sum() / 3600, abs=1e-4)
        assert output["mean_duration"] == pytest.approx(table["duration"].mean(), abs=1e-3)
        assert entry["steps"][0]["step"] == "input"
        # every selected row is in the output or rejected by a worker and replaced by a spare
        # of its speaker when it has one (back-fill)
        assert entry["steps"][-1]["rows"] - len(table) == (worker_rejects.get(dialect, 0)
                                                           - output["backfilled"])
    train = read_config(folder, "all", "train").to_pandas()
    validation = read_config(folder, "all", "validation").to_pandas()
    total = statistics["total"]
    assert total["rows"] == len(train) + len(validation)
    assert (total["train_rows"], total["validation_rows"]) == (len(train), len(validation))
    assert total["validation_speakers"] == validation["speaker_id"].nunique()
    assert total["speakers"] == pd.concat([train, validation])["speaker_id"].nunique()
    assert total["rejected"] == len(read_rejects(folder))
    rejected = Counter(r["dialect"] for r in read_rejects(folder))
    assert {d: sum(e["rejected"].values()) for d, e in statistics["dialects"].items()} == {
        d: rejected.get(d, 0) for d in statistics["dialects"]}


def test_statistics_match_the_shards(prepared: Path) -> None:
    assert_statistics_match_shards(prepared, {})


def test_rows_per_shard(base_release: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(options(base_release, out, rows_per_shard=4))
    shards = find_shards(out)
    total = 0
    for splits in shards.values():
        for split, paths in splits.items():
            sizes = [pq.read_metadata(p).num_rows for p in paths]
            assert [p.name for p in paths] == [f"{split}-{i:05d}-of-{len(paths):05d}.parquet"
                                               for i in range(len(paths))]
            assert max(sizes) <= 4 and len(paths) == -(-sum(sizes) // 4)
            total += sum(sizes)
    assert total == 25 and len(shards["central"]["train"]) >= 3


# --- determinism -----------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_shards(base_release: Path, prepared: Path,
                                               tmp_path: Path) -> None:
    prepare(options(base_release, tmp_path / "again", **BALANCED))
    first, again = shard_bytes(prepared), shard_bytes(tmp_path / "again")
    assert first.keys() == again.keys() and first == again
    prepare(options(base_release, tmp_path / "other", seed=7, **BALANCED))
    assert shard_bytes(tmp_path / "other") != first


def test_worker_count_does_not_change_the_bytes(base_release: Path, prepared: Path,
                                                tmp_path: Path) -> None:
    prepare(options(base_release, tmp_path / "two", num_workers=2, **BALANCED))
    assert shard_bytes(tmp_path / "two") == shard_bytes(prepared)


@pytest.mark.ray
def test_the_ray_engine_writes_the_same_bytes(base_release: Path, prepared: Path,
                                              tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        prepare(options(base_release, tmp_path / "ray", num_workers=2, engine="ray",
                        **BALANCED))
    finally:
        ray.shutdown()
    assert shard_bytes(tmp_path / "ray") == shard_bytes(prepared)
    assert (tmp_path / "ray" / REJECTS_FILE).read_bytes() == (prepared / REJECTS_FILE).read_bytes()


@pytest.mark.parametrize("seed", range(12))
def test_a_speaker_in_two_dialects_is_on_one_side_only(seed: int) -> None:
    def rows(dialect: str, speakers: dict[str, int]) -> pd.DataFrame:
        return pd.DataFrame([{"source": "s", "row": i, "client_id": name, "dialect": dialect,
                              "path": f"{dialect}{i}.mp3"}
                             for i, name in enumerate(n for n, k in speakers.items()
                                                      for _ in range(k))]).assign(selected=True)
    selected = {"central": rows("central", {"shared": 3, "c1": 3, "c2": 4, "c3": 3}),
                "balear": rows("balear", {"shared": 3, "b1": 3, "b2": 5})}
    order = split_dialects(selected, PrepareOptions(datasets=("x",), output_dir="o", seed=seed,
                                                    validation_fraction=0.3))
    by_split = order.groupby("split")["client_id"].agg(set)
    assert by_split["train"].isdisjoint(by_split["validation"])
    assert len(order) == 24



@pytest.mark.parametrize("seed", range(5))
def test_many_small_dialects_still_get_the_validation_fraction(seed: int) -> None:
    """Seven dialects of 3 speakers x 4 clips: 10% of one dialect is under one speaker, yet the
    `all` config must hold about 10% of the rows out, not none."""
    selected = {dialect: pd.DataFrame([{"source": "s", "row": i, "client_id": f"{dialect}{i % 3}",
                                        "dialect": dialect, "path": f"{dialect}{i}.mp3",
                                        "selected": True}
                                       for i in range(12)])
                for dialect in ("alacanti", "balear", "central", "nord_occidental",
                                "septentrional", "tortosi", "valencia")}
    order = split_dialects(selected, PrepareOptions(datasets=("x",), output_dir="o", seed=seed,
                                                    validation_fraction=0.1))
    validation = order[order["split"] == "validation"]
    assert 4 <= len(validation) <= 12  # 8.4 wanted, in whole speakers of 4 rows
    by_split = order.groupby("split")["client_id"].agg(set)
    assert by_split["train"].isdisjoint(by_split["validation"])

# --- bad inputs ------------------------------------------------------------------------------

def _float_wav_with_nan() -> bytes:
    import io

    import soundfile as sf

    samples = speech("Hola.", seed=5)
    samples[2000:2100] = np.nan
    buffer = io.BytesIO()
    sf.write(buffer, samples, 48000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.mark.parametrize("durations_tsv", [True, False])
def test_bad_inputs_become_rejects_and_the_run_goes_on(release: Path, tmp_path: Path,
                                                       durations_tsv: bool) -> None:
    if not durations_tsv:
        (release / "clip_durations.tsv").unlink()
    good = encode(speech("Tinc gana i set.", seed=7))
    clips = {
        "truncated.mp3": good[:len(good) // 2 + 11],
        "zero_length.mp3": b"",
        "wav_named.mp3": encode(speech("Tinc gana.", seed=8), fmt="WAV"),
        "silence.mp3": encode(np.zeros(96000, dtype=np.float32)),
        "nan.wav": _float_wav_with_nan(),
        "garbage.mp3": b"this is not an mp3 file at all " * 40,
        "no_sentence.mp3": good,
        "no_speaker.mp3": good,
    }
    for name, data in clips.items():
        (release / "clips" / name).write_bytes(data)
    names = [*clips, "not_on_disk.mp3"]
    rows = [{"client_id": speaker_id("carla"), "path": name, "sentence": "Tinc gana i set.",
             "accents": "Central"} for name in names]
    rows[names.index("no_sentence.mp3")]["sentence"] = ""
    rows[names.index("no_speaker.mp3")]["client_id"] = ""
    listed = {name: 2000 for name in names} | {"zero_length.mp3": 0}
    append_cv_rows(release, rows, listed)
    out = tmp_path / "out"
    prepare(options(release, out, max_samples_per_speaker=50))

    expected = {"truncated.mp3": "truncated", "zero_length.mp3": "empty_file",
                "wav_named.mp3": "format_mismatch", "silence.mp3": "silent",
                "nan.wav": "non_finite", "no_sentence.mp3": "missing_sentence",
                "no_speaker.mp3": "missing_client_id", "not_on_disk.mp3": "missing_file",
                "garbage.mp3": "undecodable" if durations_tsv else "unreadable_header"}
    rejects = read_rejects(out)
    assert {r["source_path"]: r["reason"] for r in rejects} == expected
    assert len(rejects) == len(expected) and {r["dialect"] for r in rejects} == {"central"}
    kept = [path for split in find_shards(out)["central"]
            for path in read_config(out, "central", split)["source_path"].to_pylist()]
    assert len(kept) == 15 and not set(kept) & set(expected)
    # rejected before selection (no usable length or no text) or by a worker (decoding)
    before = {"missing_sentence", "missing_client_id", "empty_file"} | (
        set() if durations_tsv else {"missing_file", "unreadable_header"})
    assert_statistics_match_shards(out, {"central": sum(r not in before
                                                         for r in expected.values())})


def test_a_clip_that_decodes_out_of_range_is_rejected(release: Path, tmp_path: Path) -> None:
    samples = speech("Plou molt aquesta tarda.", seed=3)
    (release / "clips" / "lying.mp3").write_bytes(encode(samples))
    append_cv_rows(release, [{"client_id": speaker_id("ana"), "path": "lying.mp3",
                              "sentence": "Plou molt aquesta tarda.", "accents": "Central"}],
                   {"lying.mp3": 1500})  # listed within range; decodes at ~2.2 s
    prepare(options(release, tmp_path / "out", max_duration=1.8, min_samples_per_speaker=1))
    reasons = {r["source_path"]: r["reason"] for r in read_rejects(tmp_path / "out")}
    assert reasons["lying.mp3"] == "duration_out_of_range"


# --- dry run and the output folder -----------------------------------------------------------

def test_dry_run_prints_counts_and_writes_nothing(base_release: Path, tmp_path: Path,
                                                  capsys) -> None:
    result = prepare(options(base_release, tmp_path / "out", dry_run=True,
                             max_samples_per_speaker=3))
    assert capsys.readouterr().out == ""  # the library prints nothing; the CLI does
    assert cli.main(["prepare", "--datasets", str(base_release), "--output_dir",
                     str(tmp_path / "out"), "--dry_run", "--max_samples_per_speaker", "3"]) == 0
    printed = capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    assert "central (dry run: nothing written)" in printed and "balear" in printed
    for step in ("input", "duration", "sentence_and_speaker", "min_samples_per_speaker",
                 "balance_speakers"):
        assert step in printed
    steps = result.statistics["dialects"]["central"]["steps"]
    assert [s["rows"] for s in steps] == [15, 15, 15, 15, 12]


def test_a_non_empty_output_needs_overwrite(base_release: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = out / "data" / "tortosi" / "train-00000-of-00001.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an older run")
    (out / "README.md").write_text("an older card")
    with pytest.raises(UsageError, match="did not write.*pass --overwrite"):
        prepare(options(base_release, out))
    assert stale.read_bytes() == b"from an older run"
    prepare(options(base_release, out, overwrite=True, max_samples_per_speaker=3))
    assert not stale.parent.exists()
    assert set(find_shards(out)) == {"central", "balear"}
    assert "an older card" not in (out / "README.md").read_text()


def test_overwrite_refuses_a_folder_parla_did_not_write(base_release: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    with pytest.raises(UsageError, match="did not write.*chapter1.tex"):
        prepare(options(base_release, out, overwrite=True))
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"]


def test_bad_sources_and_outputs_write_nothing(base_release: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        prepare(options(tmp_path / "nowhere", tmp_path / "out"))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UsageError, match="not a folder"):
        prepare(options(base_release, tmp_path / "a_file" / "out"))
    with pytest.raises(UsageError, match="no clips are left"):
        prepare(options(base_release, tmp_path / "out", min_duration=30, max_duration=40))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_speaker_metadata(base_release: Path, tmp_path: Path) -> None:
    prepare(options(base_release, tmp_path / "out", save_speaker_metadata=True))
    speakers = json.loads((tmp_path / "out" / SPEAKERS_FILE).read_text())
    assert set(speakers) == {speaker_id(name) for name in SPEAKERS}
    ana = speakers[speaker_id("ana")]
    assert (ana["dialect"], ana["clips"]) == ("central", 4)
    validation = set(read_config(tmp_path / "out", "all", "validation")["speaker_id"]
                     .to_pylist())
    assert {s for s, entry in speakers.items() if entry["split"] == "validation"} == validation


# --- other sources ---------------------------------------------------------------------------

def test_a_hub_layout_folder_with_nameless_audio(tmp_path: Path) -> None:
    import datasets

    sentences = ["Bon dia a tothom.", "Plou molt aquesta tarda.", "Tinc gana i set.", None]
    audio = [{"bytes": encode(speech(s or "Hola.", seed=i)), "path": None}
             for i, s in enumerate(sentences)]
    dataset = datasets.Dataset.from_dict({"audio": audio, "sentence": sentences,
                                          "client_id": ["spk"] * 4, "age": [None] * 4})
    dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
    folder = tmp_path / "cv_23_ca_septentrional"
    (folder / "data").mkdir(parents=True)
    dataset.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    out = tmp_path / "out"
    prepare(options(folder, out, validation_fraction=0.0, cache_dir=str(tmp_path / "cache")))
    rows = load_prepared(out, "septentrional", "train", tmp_path / "cache2")
    assert sorted(r["source_path"] for r in rows) == [f"cv_23_ca_septentrional#{i}"
                                                       for i in range(3)]
    assert {r["text"] for r in rows} == {f"septentrional: {s}" for s in sentences[:3]}
    assert {r["age"] for r in rows} == {""}
    assert read_rejects(out) == [{"source_path": "cv_23_ca_septentrional#3",
                                  "dialect": "septentrional", "reason": "missing_sentence",
                                  "detail": ""}]
    # two workers each read their rows' bytes from the datasets cache themselves
    for workers in (1, 2):
        prepare(options(folder, tmp_path / f"w{workers}", validation_fraction=0.0,
                        num_workers=workers, rows_per_shard=1, cache_dir=str(tmp_path / "cache")))
    assert len(shard_bytes(tmp_path / "w2")) == 3
    assert shard_bytes(tmp_path / "w2") == shard_bytes(tmp_path / "w1")


def test_a_release_whose_clips_are_symlinks_prepares_like_a_copy(base_release: Path,
                                                                  release: Path,
                                                                  tmp_path: Path) -> None:
    """git-annex, DVC or a hand-made subset: clips/ holds links to the files elsewhere."""
    prepare(options(release, tmp_path / "copied", **BALANCED))
    # the same folder (its real path is part of each shard's task digest), now with links
    shutil.rmtree(release)
    link_cv_release(base_release, release)
    assert all(clip.is_symlink() for clip in (release / "clips").iterdir())
    prepare(options(release, tmp_path / "linked", **BALANCED))
    copied, linked = shard_bytes(tmp_path / "copied"), shard_bytes(tmp_path / "linked")
    rows = sum(len(read_config(tmp_path / "linked", "all", split))
               for split in ("train", "validation"))
    assert rows == 24 and linked == copied  # 25 clips, carla's 5 cut to 4
    assert (tmp_path / "linked" / REJECTS_FILE).read_bytes() == (
        tmp_path / "copied" / REJECTS_FILE).read_bytes()


def test_a_release_whose_every_row_is_rejected_is_refused_with_the_counts(
        base_release: Path, tmp_path: Path, capsys) -> None:
    from parla.cli import main

    folder = tmp_path / "cv"
    (folder / "clips").mkdir(parents=True)
    header, *lines = (base_release / "validated.tsv").read_text().splitlines()
    escaping = []
    for line in lines:  # every path climbs out of clips/, to the very files of the release
        fields = line.split("\t")
        fields[1] = os.path.relpath(base_release / "clips" / fields[1], folder / "clips")
        escaping.append("\t".join(fields))
    (folder / "validated.tsv").write_text("\n".join([header, *escaping]) + "\n")
    line = f"{folder}: all {len(lines)} rows were rejected: {len(lines)} path_outside_clips"
    with pytest.raises(UsageError) as raised:
        prepare(options(folder, tmp_path / "out"))
    assert str(raised.value) == line
    code = main(["prepare", "--datasets", str(folder), "--output_dir", str(tmp_path / "out"),
                 "--no_condition_audio"])
    assert (code, capsys.readouterr().err) == (2, f"parla: error: {line}\n")
    assert not (tmp_path / "out").exists()


# --- the per-clip function -------------------------------------------------------------------

@pytest.mark.parametrize("resampler", ["soxr", "scipy"])
def test_process_clip_with_each_resampler(resampler: str) -> None:
    from parla.audio.decode import decode_flac
    from parla.conditioning.policy import Conditioner

    item = {"path": "clips/x.mp3", "dialect": "valencia", "sentence": "Bon dia.",
            "client_id": "spk", "gender": "", "age": "", "nominal_duration": None}
    opts = PrepareOptions(datasets=("x",), output_dir="o", resampler=resampler,
                          conditioning=raw_conditioning())
    row = process_clip(encode(speech("Bon dia.", seed=1)), item, opts,
                       Conditioner(opts.conditioning))
    samples, rate = decode_flac(row["audio"])
    assert rate == 24000 and row["duration"] == samples.size / 24000
    assert row["duration"] == pytest.approx(speech("Bon dia.", seed=1).size / 48000, abs=1e-3)
    assert (row["text"], row["audio_path"]) == ("valencia: Bon dia.", "x.flac")


# --- the demo corpus -------------------------------------------------------------------------

DEMO_BAD = {"common_voice_ca_40474485.mp3": "truncated",
            "common_voice_ca_41442110.mp3": "empty_file",
            "common_voice_ca_41319752.mp3": "missing_sentence"}
DEMO_TOO_SHORT = "common_voice_ca_40477196.mp3"


@pytest.fixture(scope="module")
def prepared_demo(tmp_path_factory) -> Path:
    from parla.demo import demo_corpus_path

    out = tmp_path_factory.mktemp("demo") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARLA_DISABLE_PROGRESS", "1")
        prepare(options(demo_corpus_path(), out, validation_fraction=0.1,
                        max_samples_per_speaker=8))
    return out


def test_demo_bad_rows_are_rejected_with_reasons(prepared_demo: Path) -> None:
    rejects = read_rejects(prepared_demo)
    assert {r["source_path"]: r["reason"] for r in rejects} == DEMO_BAD
    assert all(r["dialect"] in ("central", "valencia") for r in rejects)
    output = set(read_config(prepared_demo, "all", "train")["source_path"].to_pylist()) | set(
        read_config(prepared_demo, "all", "validation")["source_path"].to_pylist())
    assert not output & (set(DEMO_BAD) | {DEMO_TOO_SHORT})
    statistics = json.loads((prepared_demo / STATISTICS_FILE).read_text())
    assert set(statistics["dialects"]) == {"alacanti", "balear", "central", "nord_occidental",
                                           "septentrional", "tortosi", "valencia"}
    # the empty clip (listed at 0 ms) and the 0.67 s one go in the duration step
    dropped = [entry["steps"][0]["rows"] - entry["steps"][1]["rows"]
               for entry in statistics["dialects"].values()]
    assert sum(dropped) == 2


def test_demo_statistics_match_the_shards(prepared_demo: Path) -> None:
    assert_statistics_match_shards(prepared_demo, {"central": 1})


def test_demo_round_trip(prepared_demo: Path, tmp_path: Path) -> None:
    rows = load_prepared(prepared_demo, "valencia", "train", tmp_path / "cache")
    assert rows and all(r["sample_rate"] == 24000 for r in rows)
    assert all(r["text"].startswith("valencia: ") and r["original_text"] for r in rows)
    np.testing.assert_allclose([r["duration"] for r in rows],
                               [r["samples"].size / 24000 for r in rows], atol=1e-5)


def test_the_prepare_path_does_not_import_torch() -> None:
    code = ("import sys, parla.cli, parla.stages.prepare, parla.store.sources, "
            "parla.stages.selection, parla.audio.decode, parla.store.shards, parla.hub.client; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- resume ----------------------------------------------------------------------------------

def _prepare_command(out: Path) -> list[str]:
    from parla.demo import demo_corpus_path

    return [sys.executable, "-m", "parla", "prepare", "--datasets", str(demo_corpus_path()),
            "--output_dir", str(out), "--rows_per_shard", "5", "--num_workers", "1", "-q"]


def test_a_killed_run_resumes_to_identical_output(tmp_path: Path) -> None:
    import os
    import signal
    import time

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run(_prepare_command(reference), check=True, capture_output=True)
    process = subprocess.Popen(_prepare_command(resumed), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (len(list((resumed / "data").rglob("*.parquet"))) < 6
           and process.poll() is None and time.monotonic() < deadline):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # no chance to clean up, as with a power cut
    process.wait()
    finished_before = set(shard_bytes(resumed))
    assert finished_before, "the run was killed before it finished a shard"
    assert len(finished_before) < len(shard_bytes(reference)), "the run finished before the kill"

    rerun = subprocess.run(_prepare_command(resumed), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert shard_bytes(resumed) == shard_bytes(reference)
    for report in (REJECTS_FILE, STATISTICS_FILE, "README.md", "report.html"):
        assert (resumed / report).read_bytes() == (reference / report).read_bytes(), report
    statistics = [json.loads((folder / STATISTICS_FILE).read_text())
                  for folder in (reference, resumed)]
    assert statistics[0] == statistics[1]  # conditioning figures of earlier shards included
    assert statistics[0]["total"]["conditioning"]["hours_removed"]["truncated"] > 0
    assert not list(resumed.rglob("*.tmp"))


def test_rerunning_a_finished_run_keeps_its_statistics(tmp_path: Path) -> None:
    out = tmp_path / "out"
    subprocess.run(_prepare_command(out), check=True, capture_output=True)
    first = json.loads((out / STATISTICS_FILE).read_text())
    before = shard_bytes(out)
    subprocess.run(_prepare_command(out), check=True, capture_output=True)
    second = json.loads((out / STATISTICS_FILE).read_text())
    assert second == first and shard_bytes(out) == before


def test_a_different_run_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    subprocess.run(_prepare_command(out), check=True, capture_output=True)
    before = shard_bytes(out)
    changed = subprocess.run(_prepare_command(out) + ["--seed", "7"], capture_output=True,
                             text=True)
    assert changed.returncode == 2
    assert "other settings" in changed.stderr and "seed (42 -> 7)" in changed.stderr
    assert shard_bytes(out) == before


def test_a_resume_names_the_settings_that_differ_and_the_footer_records_them(
        tmp_path: Path) -> None:
    from parla.audio.decode import flac_encoder
    from parla.conditioning.vad import resolve_vad

    out = tmp_path / "out"
    subprocess.run(_prepare_command(out) + ["--resampler", "soxr", "--vad", "auto"],
                   check=True, capture_output=True)
    shard = next(path for splits in find_shards(out).values() for paths in splits.values()
                 for path in paths)
    settings = read_shard_record(shard, "prepare")["settings"]
    assert settings["resampler"] == "soxr" and settings["flac_encoder"] == flac_encoder()
    assert settings["conditioning"]["vad"] == resolve_vad("auto")  # what made the trims
    assert settings["seed"] == 42 and "output_dir" not in settings
    # as when the default resampler of an older parla made the folder
    changed = subprocess.run(_prepare_command(out) + ["--resampler", "scipy"],
                             capture_output=True, text=True)
    assert changed.returncode == 2
    assert "resampler ('soxr' -> 'scipy')" in changed.stderr
    # a footer of an older parla, which kept a digest of the settings, not the settings
    record = read_shard_record(shard, "prepare")
    table = pq.read_table(shard)
    write_table_atomic(shard, table.replace_schema_metadata(None),
                       record=record | {"settings": "3f2a9c"}, stage="prepare")
    older = subprocess.run(_prepare_command(out) + ["--resampler", "soxr"],
                           capture_output=True, text=True)
    assert older.returncode == 2 and "written by an older parla" in older.stderr


# --- each clip once, one run per folder (issue 8) ---------------------------------------------

def test_each_clip_is_stored_once_and_split_train_gives_every_dialect(tmp_path: Path) -> None:
    from parla.testing import DIALECT_ACCENTS, write_demo_release

    release = write_demo_release(tmp_path / "cv", list(DIALECT_ACCENTS), 97)  # 679 clips
    out = tmp_path / "out"
    result = prepare(options(release, out, num_workers=2, max_samples_per_speaker=50,
                             conditioning=ConditioningOptions(condition_audio=False)))
    stored = [path for splits in find_shards(out).values() for paths in splits.values()
              for p in paths for path in pq.read_table(p, columns=["source_path"])
              ["source_path"].to_pylist()]
    # the one bad clip among the demo's good ones (1.5 s and longer, with a sentence) is the
    # truncated MP3 (src/parla/demo/README.md): its copies, found by their bytes, are the only
    # clips that may be rejected with conditioning off
    from parla.demo import demo_corpus_path

    truncated = (demo_corpus_path() / "clips" / "common_voice_ca_40474485.mp3").read_bytes()
    copies = sum(clip.read_bytes() == truncated for clip in (release / "clips").iterdir())
    assert copies > 0
    rejects = read_rejects(out)
    assert Counter(r["reason"] for r in rejects) == {"truncated": copies}
    assert len(stored) == len(set(stored)) == 679 - copies  # every clip once, or a reject
    assert result.statistics["total"]["rows"] == len(stored)
    import datasets

    train = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert train.num_rows == result.statistics["total"]["train_rows"]
    assert set(train["dialect"]) == set(DIALECT_ACCENTS)


def test_a_second_run_into_the_same_folder_is_refused_and_the_first_finishes(
        tmp_path: Path) -> None:
    import time

    from parla.testing import DIALECT_ACCENTS, write_demo_release

    release = write_demo_release(tmp_path / "cv", list(DIALECT_ACCENTS), 40)  # ~8 s of work

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "parla", "prepare", "--datasets", str(release),
                "--output_dir", str(out), "--rows_per_shard", "20", "--num_workers", "1", "-q"]

    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run(command(reference), check=True, capture_output=True)
    first = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not list((out / "data").rglob("*.parquet")) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.01)
    second = subprocess.run(command(out), capture_output=True, text=True)
    assert first.poll() is None, "the first run ended before the second one asked"
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"parla: error: {out} is in use by another parla run (pid {first.pid} on "
        f"{os.uname().nodename}); wait for it to finish or choose another output folder")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert shard_bytes(out) == shard_bytes(reference)
    assert (out / REJECTS_FILE).read_bytes() == (reference / REJECTS_FILE).read_bytes()
