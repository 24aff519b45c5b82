"""The prepare worker: back-fill keeps every speaker's quota, --select_by quality keeps the best
clips, --dnsmos scores every row."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import encode, speaker_id, tone, write_cv_release
from parla.options import ConditioningOptions, PrepareOptions
from parla.stages.prepare import prepare
from parla.store.layout import PREPARE_STAGE, STATISTICS_FILE
from parla.store.shards import find_shards, read_shard_record

K = 5


def options(release: Path, out: Path, **kwargs) -> PrepareOptions:
    values = {"num_workers": 1, "validation_fraction": 0.0,
              "conditioning": ConditioningOptions(condition_audio=False),
              "max_samples_per_speaker": K, "min_samples_per_speaker": 1}
    return PrepareOptions(datasets=(str(release),), output_dir=str(out), **values | kwargs)


def kept_per_speaker(out: Path) -> Counter:
    return Counter(speaker for splits in find_shards(out).values() for paths in splits.values()
                   for path in paths
                   for speaker in pq.read_table(path, columns=["speaker_id"])["speaker_id"]
                   .to_pylist())


def records(out: Path) -> list[dict]:
    return [read_shard_record(path, PREPARE_STAGE) for splits in find_shards(out).values()
            for paths in splits.values() for path in paths]


def spoil(release: Path, speaker: str, count: int) -> None:
    """Make ``count`` of a speaker's clips unusable (silent, or cut short), listed as before."""
    rows = (release / "validated.tsv").read_text().splitlines()[1:]
    paths = [row.split("\t")[1] for row in rows if row.split("\t")[0] == speaker_id(speaker)]
    for index, path in enumerate(paths[:count]):
        clip = release / "clips" / path
        data = encode(np.zeros(72000, np.float32)) if index % 2 else clip.read_bytes()[:300]
        clip.write_bytes(data)


@pytest.fixture
def spoiled_release(tmp_path: Path) -> Path:
    speakers = {"ana": ("Central", 8), "bernat": ("Central", 8), "carla": ("Central", 4),
                "eva": ("Balear", 8), "ferran": ("Balear", 7)}
    release = write_cv_release(tmp_path / "cv", speakers)
    spoil(release, "ana", 3)     # 5 good of 8: exactly K after back-fill
    spoil(release, "bernat", 5)  # 3 good of 8: all three, short of K
    spoil(release, "eva", 2)     # 6 good
    return release


def test_every_speaker_with_enough_good_clips_ends_with_exactly_k(spoiled_release, tmp_path):
    out = tmp_path / "out"
    prepare(options(spoiled_release, out))
    kept = kept_per_speaker(out)
    assert kept == {speaker_id("ana"): K, speaker_id("bernat"): 3, speaker_id("carla"): 4,
                    speaker_id("eva"): K, speaker_id("ferran"): K}
    statistics = json.loads((out / STATISTICS_FILE).read_text())
    backfilled = sum(sum(r["clips"]["backfilled"]) for r in records(out))
    assert backfilled > 0 and statistics["total"]["backfilled"] == backfilled
    assert statistics["dialects"]["central"]["output"]["speakers_short_of_quota"] == 1
    assert statistics["dialects"]["balear"]["output"]["speakers_short_of_quota"] == 0
    # each spoiled clip that was tried is rejected once; bernat's spares were all tried
    assert statistics["total"]["rejected"] == 3 + 5 + 2


def test_back_fill_is_the_same_for_any_worker_count_and_after_resume(spoiled_release, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    prepare(options(spoiled_release, one, rows_per_shard=6))
    prepare(options(spoiled_release, two, rows_per_shard=6, num_workers=2))
    shards = {p.relative_to(one): p.read_bytes() for p in one.rglob("*.parquet")}
    assert shards == {p.relative_to(two): p.read_bytes() for p in two.rglob("*.parquet")}
    first = sorted(one.rglob("*.parquet"))[0]
    first.unlink()  # as if the run had been killed before this shard
    prepare(options(spoiled_release, one, rows_per_shard=6))
    assert first.read_bytes() == shards[first.relative_to(one)]


def noisy_release(folder: Path) -> Path:
    """One speaker's six clips of the same sentence, each with more noise than the last."""
    release = write_cv_release(folder, {"ana": ("Central", 6)})
    rows = (release / "validated.tsv").read_text().splitlines()[1:]
    rng = np.random.default_rng(0)
    for index, row in enumerate(rows):
        samples = tone(1.5 + 0.1 * (index % 5)) * np.float32(0.3)  # as listed
        samples[:9600] = 0  # a silent lead-in whose noise the SNR estimate measures
        noise = rng.normal(0, 10 ** ((-60 + 3 * index) / 20), samples.size).astype(np.float32)
        (release / "clips" / row.split("\t")[1]).write_bytes(encode(samples + noise))
    return release


def test_select_by_quality_keeps_the_best_scored_clips(tmp_path):
    release = noisy_release(tmp_path / "cv")
    conditioning = ConditioningOptions(min_snr_db=None, min_chars_per_sec=None,
                                       max_chars_per_sec=None, trim_silence=False,
                                       reject_foreign_text=False)
    out = tmp_path / "out"
    prepare(options(release, out, max_samples_per_speaker=3, select_by="quality",
                    conditioning=conditioning))
    [record] = [r for r in records(out) if r["rows"]]
    kept, dropped = record["clips"]["snr_db"], [d["score"] for d in record["quality_dropped"]]
    assert len(kept) == 3 and len(dropped) == 3
    assert min(kept) >= max(dropped)
    statistics = json.loads((out / STATISTICS_FILE).read_text())
    assert statistics["dialects"]["central"]["output"]["quality_dropped"] == 3
    # the quietest three: clips 0-2 had the least noise
    assert sorted(record["clips"]["source_path"]) == sorted(
        row.split("\t")[1] for row in (release / "validated.tsv").read_text().splitlines()[1:4])


def test_dnsmos_scores_every_row_and_min_dnsmos_rejects(tmp_path):
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    release = write_cv_release(tmp_path / "cv", {"ana": ("Central", 2)}, use_speech=True)
    out = tmp_path / "out"
    prepare(options(release, out, dnsmos=True))
    table = pq.read_table(next(out.rglob("train-*.parquet")))
    for column in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
        values = table[column].to_pylist()
        assert len(values) == 2 and all(1.0 <= v <= 5.0 for v in values)
    statistics = json.loads((out / STATISTICS_FILE).read_text())
    assert 1.0 <= statistics["total"]["mean_dnsmos_ovrl"] <= 5.0
    strict = tmp_path / "strict"  # no clip of synthetic speech reaches 4.99
    prepare(options(release, strict, dnsmos=True, min_dnsmos=4.99))
    reasons = [json.loads(line)["reason"] for line in (strict / "rejects.jsonl").read_text()
               .splitlines()]
    assert reasons == ["low_dnsmos", "low_dnsmos"]


def test_a_worker_with_another_flac_encoder_than_the_run_refuses(monkeypatch) -> None:
    from parla.audio import decode as audio
    from parla.errors import UsageError
    from parla.stages.prepare_worker import ShardPreparer

    options = PrepareOptions(datasets=("x",), output_dir="o", resampler="soxr")
    ShardPreparer(options, {}, {"flac_encoder": audio.flac_encoder()})  # the same: accepted
    ShardPreparer(options, {}, {})  # nothing to match (the API without a run): accepted
    monkeypatch.setattr(audio, "flac_encoder", lambda: "libsndfile 1.0.31")
    with pytest.raises(UsageError, match="libsndfile 1.0.31, the run.s driver with libFLAC"):
        ShardPreparer(options, {}, {"flac_encoder": "libFLAC 1.4.2"})
