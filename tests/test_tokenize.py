"""The tokenize stage end to end on CPU: layout, codes, stats, resume (kill -9), failures, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("snac")
pytest.importorskip("tokenizers")

import torch  # noqa: E402

from conftest import NEEDS_CXX, encode, speaker_id, tone, write_prepared_folder  # noqa: E402
from parla import cli  # noqa: E402
from parla.errors import RowRejected, UsageError  # noqa: E402
from parla.options import TokenizeOptions  # noqa: E402
from parla.stages import tokenize as stage  # noqa: E402
from parla.stages import tokenize_worker  # noqa: E402
from parla.stages.runner import ShardGroup, group_tasks  # noqa: E402
from parla.store.layout import TOKENIZATION_STATS_FILE
from parla.store.shards import prepared_table, shard_path, write_table_atomic  # noqa: E402
from parla.tokens import orpheus  # noqa: E402
from parla.tokens.codec import TextTokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def add_bad_rows_shard(folder: Path) -> None:
    """A tortosi shard with one good clip, one undecodable clip and one without audio."""
    good = tone(0.6, 24000, frequency=310)
    rows = [{"audio": encode(good, 24000, "FLAC"), "text": "tortosi: Bon dia a tothom.",
             "dialect": "tortosi", "speaker_id": speaker_id("t0"), "duration": 0.6,
             "source_path": "good.mp3"},
            {"audio": b"fLaC this is not audio", "text": "tortosi: Tinc gana i set.",
             "dialect": "tortosi", "speaker_id": speaker_id("t0"), "duration": 0.7,
             "source_path": "corrupt.mp3"},
            {"audio": None, "text": "tortosi: Plou molt aquesta tarda.", "dialect": "tortosi",
             "speaker_id": speaker_id("t0"), "duration": 0.5, "source_path": "missing.mp3"}]
    write_table_atomic(shard_path(folder, "tortosi", "train", 0, 1), prepared_table(rows, 24000))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """central (1 speaker, 2 clips, held out: an empty train shard and a validation one),
    balear (1 speaker, 2 clips) and a tortosi shard with bad rows: 4 input shards, 7 rows."""
    folder = write_prepared_folder(tmp_path_factory.mktemp("corpus") / "prepared",
                                   {"central": 1, "balear": 1})
    add_bad_rows_shard(folder)
    return folder


@pytest.fixture(scope="module")
def mini_corpus(tmp_path_factory) -> Path:
    """One clip each: central/train, balear/validation (and an empty balear/train)."""
    folder = tmp_path_factory.mktemp("mini") / "prepared"
    return write_prepared_folder(folder, {"central": 1, "balear": 1}, clips_per_speaker=1,
                                 validation_dialect="balear", card=False)


def options(corpus: Path, out: Path, snac_dir: Path, tokenizer: Path, **kwargs) -> TokenizeOptions:
    return TokenizeOptions(input_dir=str(corpus), output_dir=str(out), snac_model=str(snac_dir),
                           text_tokenizer=str(tokenizer), device="cpu", **kwargs)


@pytest.fixture(scope="module")
def reference(corpus, snac_dir, text_tokenizer_file, tmp_path_factory) -> Path:
    """An uninterrupted run over `corpus`: the output every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "tokenized"
    stage.tokenize(options(corpus, out, snac_dir, text_tokenizer_file))
    return out


def output_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# --- layout and content ----------------------------------------------------------------------

def test_configs_limits_the_work_to_the_named_configs(corpus, reference, snac_dir,
                                                      text_tokenizer_file, tmp_path):
    out = tmp_path / "only-central"
    stage.tokenize(options(corpus, out, snac_dir, text_tokenizer_file, configs=("central",)))
    written = output_files(out)
    assert {name for name in written if name.startswith("data/")} == {
        name for name in output_files(reference) if name.startswith("data/central/")}
    for name in written:  # the same shards, byte for byte, as tokenizing every config
        if name.startswith("data/"):
            assert written[name] == (reference / name).read_bytes()
    with pytest.raises(UsageError, match="--configs valencia: not in"):
        stage.tokenize(options(corpus, tmp_path / "bad", snac_dir, text_tokenizer_file,
                               configs=("valencia",)))



def test_each_clip_is_encoded_once_by_default(corpus, reference):
    def rows(folder: Path) -> int:
        return sum(pq.read_metadata(p).num_rows for p in (folder / "data").rglob("*.parquet"))

    stats = json.loads((reference / TOKENIZATION_STATS_FILE).read_text())
    assert not (reference / "data" / "all").exists()
    assert rows(reference) == stats["total"]["rows"] == rows(corpus) - stats["total"][
        "rows_skipped"]


def test_output_mirrors_the_input_layout(corpus, reference):
    inputs = sorted(str(p.relative_to(corpus)) for p in (corpus / "data").rglob("*.parquet"))
    outputs = sorted(str(p.relative_to(reference)) for p in (reference / "data").rglob("*.parquet"))
    assert inputs == outputs and len(inputs) == 4
    names = pq.read_schema(reference / "data/central/train-00000-of-00001.parquet").names
    assert names == ["input_ids", "labels", "attention_mask", "codes_0", "codes_1", "codes_2",
                     "text", "dialect", "speaker_id", "duration"]
    assert (reference / "README.md").is_file()


def test_rows_are_orpheus_examples_of_their_codes(corpus, reference, text_tokenizer_file):
    tokenizer = TextTokenizer(text_tokenizer_file)
    source = read_rows(corpus / "data/central/train-00000-of-00001.parquet")
    rows = read_rows(reference / "data/central/train-00000-of-00001.parquet")
    assert [r["text"] for r in rows] == [r["text"] for r in source]
    assert [r["speaker_id"] for r in rows] == [r["speaker_id"] for r in source]
    for row, src in zip(rows, source, strict=True):
        frames = len(row["codes_0"])
        assert frames == -(-round(src["duration"] * 24000) // 2048)  # ceil(samples / 2048)
        assert (len(row["codes_1"]), len(row["codes_2"])) == (2 * frames, 4 * frames)
        text, audio = orpheus.split_example(row["input_ids"])
        assert text == tokenizer.encode(row["text"])
        assert row["input_ids"].count(128000) == 1 and row["input_ids"][1] == 128000
        codes = tuple(np.array(row[f"codes_{i}"]) for i in range(3))
        expected, _ = orpheus.dedupe_frames(orpheus.interleave_codes(*codes))
        assert audio.tolist() == expected.tolist()
        assert row["labels"] == row["input_ids"]
        assert row["attention_mask"] == [1] * len(row["input_ids"])


def test_codes_equal_encoding_each_clip_alone(corpus, reference, snac_dir):
    import io

    import soundfile as sf
    from snac import SNAC

    model = SNAC.from_pretrained(str(snac_dir)).eval()  # as the original: weight norm unfolded
    source = read_rows(corpus / "data/central/validation-00000-of-00001.parquet")
    rows = read_rows(reference / "data/central/validation-00000-of-00001.parquet")
    for src, row in zip(source, rows, strict=True):
        samples, _ = sf.read(io.BytesIO(src["audio"]["bytes"]), dtype="float32")
        with torch.inference_mode():
            codes = model.encode(torch.from_numpy(samples)[None, None])
        for level in range(3):
            assert row[f"codes_{level}"] == codes[level][0].tolist()


def add_same_length_shards(folder: Path) -> None:
    """valencia and alacanti shards whose clips share padded lengths across the two shards."""
    for d_index, dialect in enumerate(("valencia", "alacanti")):
        rows = []
        for c, seconds in enumerate((0.6, 0.6, 0.9)):
            samples = tone(seconds, 24000, frequency=180 + 60 * c + 25 * d_index)
            rows.append({"audio": encode(samples, 24000, "FLAC"), "dialect": dialect,
                         "text": f"{dialect}: Bon dia a tothom.", "speaker_id": speaker_id(dialect),
                         "duration": seconds, "source_path": f"{dialect}_{c}.mp3"})
        write_table_atomic(shard_path(folder, dialect, "train", 0, 1),
                           prepared_table(rows, 24000))


@pytest.mark.parametrize("dedupe", [True, False])
def test_shards_batched_together_write_the_bytes_of_each_shard_alone(corpus, snac_dir,
                                                                   text_tokenizer_file, tmp_path,
                                                                   dedupe):
    import shutil

    corpus = Path(shutil.copytree(corpus, tmp_path / "input"))
    add_same_length_shards(corpus)
    opts = options(corpus, tmp_path, snac_dir, text_tokenizer_file, dedupe_frames=dedupe)
    snac_files, snac_config, tokenizer_path = stage.resolve_models(opts)
    _, fingerprint = stage._fingerprint(opts, snac_files, snac_config, tokenizer_path)
    settings = stage._worker_settings(opts, snac_files, tokenizer_path, ("cpu",), 1, fingerprint)
    worker = tokenize_worker.ShardTokenizer(settings, 0)
    found = stage.find_shards(corpus)
    written = {}
    batches = {}
    for name in ("alone", "together"):
        tasks = stage._plan(found, corpus, tmp_path / name)
        calls = [[task] for task in tasks] if name == "alone" else [tasks]
        records, batches[name] = [], []
        for call in calls:
            records += worker(ShardGroup(tuple(call)))
            batches[name] += worker.last_profile["batches"]
        assert [r["input_rows"] for r in records] == [t.rows for t in tasks]
        written[name] = output_files(tmp_path / name)
    assert len(written["alone"]) == 6 and written["together"] == written["alone"]
    # clips of different shards shared batches: fewer, fuller batches than shard by shard
    assert sum(b[0] for b in batches["together"]) == sum(b[0] for b in batches["alone"])
    assert len(batches["together"]) < len(batches["alone"])


def test_group_tasks_cuts_the_plan_by_rows_and_gives_every_worker_a_group():
    tasks = [SimpleNamespace(rows=rows, output=str(i)) for i, rows in enumerate([3, 3, 0, 5, 1])]
    sizes = lambda groups: [[t.rows for t in g.tasks] for g in groups]  # noqa: E731
    assert sizes(group_tasks(tasks, 100, 1)) == [[3, 3, 0, 5, 1]]
    assert sizes(group_tasks(tasks, 6, 1)) == [[3, 3, 0], [5, 1]]
    assert sizes(group_tasks(tasks, 100, 2)) == [[3, 3, 0], [5, 1]]
    assert sizes(group_tasks(tasks, 2, 1)) == [[3], [3, 0], [5], [1]]
    group = group_tasks(tasks, 6, 1)[1]
    assert (group.rows, group.output) == (6, "3")


def test_bad_rows_are_skipped_and_counted(reference):
    rows = read_rows(reference / "data/tortosi/train-00000-of-00001.parquet")
    assert [r["text"] for r in rows] == ["tortosi: Bon dia a tothom."]
    stats = json.loads((reference / TOKENIZATION_STATS_FILE).read_text())
    tortosi = stats["dialects"]["tortosi"]
    assert tortosi["rows"] == 1 and tortosi["rows_skipped"] == 2
    assert tortosi["skipped_by_reason"] == {"missing_audio": 1, "undecodable_audio": 1}
    rejects = [json.loads(line) for line in (reference / "rejects.jsonl").read_text().splitlines()]
    assert sorted((r["source_path"], r["reason"]) for r in rejects) == [
        ("corrupt.mp3", "undecodable_audio"), ("missing.mp3", "missing_audio")]


def test_statistics(reference):
    stats = json.loads((reference / TOKENIZATION_STATS_FILE).read_text())
    assert sorted(stats["dialects"]) == ["balear", "central", "tortosi"]
    central = stats["dialects"]["central"]
    assert central["rows"] == 2
    levels = central["mean_tokens_per_level"]
    assert levels["codes_1"] == 2 * levels["codes_0"] and levels["codes_2"] == 4 * levels["codes_0"]
    assert 0 < central["audio_tokens_per_second"] <= 7 * 24000 / 2048 + 1e-9
    assert central["duplicate_frames_removed"] > 0  # a random SNAC repeats codes_0 a lot
    assert central["max_sequence_length"] >= central["mean_sequence_length"] > 0
    assert stats["configs"]["central"]["validation"]["rows"] == 2
    assert stats["configs"]["central"]["train"]["rows"] == 0
    assert stats["total"]["rows"] == 5 and stats["total"]["rows_skipped"] == 2
    assert stats["parameters"]["format"] == "orpheus"


def test_a_bf16_run_records_its_agreement_with_float32_and_exact_runs_do_not(
        corpus, reference, snac_dir, text_tokenizer_file, tmp_path):
    from parla.card.render import read_card_state
    from parla.store.shards import read_shard_record

    out = tmp_path / "bf16"
    stage.tokenize(options(corpus, out, snac_dir, text_tokenizer_file, precision="bf16"))
    records = [read_shard_record(path, "tokenize") for path in sorted(out.rglob("*.parquet"))]
    measured = [r["precision_agreement"] for r in records if r["precision_agreement"]["clips"]]
    # every shard with clips measured up to 4 of them; counts are per level, level 2 the finest
    assert measured and all(0 < a["clips"] <= 4 for a in measured)
    assert all(a["codes"][1] == 2 * a["codes"][0] and a["codes"][2] == 4 * a["codes"][0]
               and all(0 <= e <= c for e, c in zip(a["equal"], a["codes"], strict=True))
               for a in measured)
    stats = json.loads((out / TOKENIZATION_STATS_FILE).read_text())
    run = stats["precision_agreement"]
    assert run["clips"] == sum(a["clips"] for a in measured)
    assert run["equal"] == [sum(a["equal"][level] for a in measured) for level in range(3)]
    card = read_card_state((out / "README.md").read_text(encoding="utf-8"))[1]
    assert card["precision_agreement"] == run["share_equal"] and card["precision"] == "bf16"
    exact = json.loads((reference / TOKENIZATION_STATS_FILE).read_text())
    assert "precision_agreement" not in exact
    assert all("precision_agreement" not in read_shard_record(path, "tokenize")
               for path in reference.rglob("*.parquet"))


@NEEDS_CXX
def test_torch_compile_writes_the_bytes_of_an_eager_run(corpus, reference, snac_dir,
                                                        text_tokenizer_file, tmp_path,
                                                        monkeypatch):
    out, profile = tmp_path / "compiled", tmp_path / "profile.jsonl"
    monkeypatch.setenv("PARLA_TOKENIZE_PROFILE", str(profile))
    stage.tokenize(options(corpus, out, snac_dir, text_tokenizer_file, torch_compile=True))
    assert output_files(out) == output_files(reference)
    calls = [json.loads(line) for line in profile.read_text().splitlines()]
    assert calls and {call["torch_compile"] for call in calls} == {"trusted"}


def test_load_dataset_round_trip(reference, tmp_path):
    from datasets import load_dataset

    train = load_dataset(str(reference), split="train", cache_dir=str(tmp_path / "cache"))
    assert train.num_rows == 3  # the default config, `all`: balear's and tortosi's train rows
    first = train[0]
    assert first["labels"] == first["input_ids"]
    assert len(first["attention_mask"]) == len(first["input_ids"])
    # what Orpheus's finetune/train.py hands the HF Trainer (default collator, batch of one)
    batch = {k: torch.tensor([first[k]]) for k in ("input_ids", "labels", "attention_mask")}
    assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape[0] == 1
    central = load_dataset(str(reference), "central", split="validation",
                           cache_dir=str(tmp_path / "cache"))
    assert central.num_rows == 2 and set(central["dialect"]) == {"central"}


# --- resume ----------------------------------------------------------------------------------

def test_rerun_skips_finished_shards(reference, corpus, snac_dir, text_tokenizer_file,
                                     monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in (reference / "data").rglob("*.parquet")}
    files = output_files(reference)

    def no_worker(*args, **kwargs):
        raise AssertionError("a finished shard was encoded again")

    monkeypatch.setattr(stage, "ShardTokenizer", no_worker)
    stage.tokenize(options(corpus, reference, snac_dir, text_tokenizer_file))
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert output_files(reference) == files


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_uninterrupted_output(reference, corpus, snac_dir,
                                                          text_tokenizer_file, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PARLA_DISABLE_PROGRESS": "1"}
    command = [sys.executable, "-m", "parla", "tokenize", "--input_dir", str(corpus),
               "--output_dir", str(out), "--snac_model", str(snac_dir),
               "--text_tokenizer", str(text_tokenizer_file), "--device", "cpu"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("data/*/*.parquet")):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.01)
    process.kill()  # SIGKILL: no cleanup of any kind
    process.wait()
    assert process.returncode == -9
    done = list(out.glob("data/*/*.parquet"))
    assert 1 <= len(done) < 5 and not (out / TOKENIZATION_STATS_FILE).exists()

    stage.tokenize(options(corpus, out, snac_dir, text_tokenizer_file))
    assert output_files(out) == output_files(reference)


def test_overwrite_redoes_and_other_settings_are_refused(mini_corpus, snac_dir,
                                                         text_tokenizer_file, tmp_path):
    out = tmp_path / "codes"
    # the codes format needs no text tokenizer: a missing one is no error
    first = stage.tokenize(options(mini_corpus, out, snac_dir, "nobody/no-tokenizer",
                                   format="codes"))
    shard = out / "data/central/train-00000-of-00001.parquet"
    assert pq.read_schema(shard).names == ["codes_0", "codes_1", "codes_2", "text", "dialect",
                                           "speaker_id", "duration"]
    assert first.statistics["total"]["rows"] == 2
    assert first.statistics["total"]["mean_sequence_length"] is None
    files, mtime = output_files(out), shard.stat().st_mtime_ns

    with pytest.raises(UsageError, match="other settings.*--overwrite"):
        stage.tokenize(options(mini_corpus, out, snac_dir, text_tokenizer_file))
    assert output_files(out) == files

    stage.tokenize(options(mini_corpus, out, snac_dir, "nobody/no-tokenizer", format="codes",
                           overwrite=True))
    assert shard.stat().st_mtime_ns != mtime
    assert output_files(out) == files


# --- failures --------------------------------------------------------------------------------

class CrashingTokenizer(tokenize_worker.ShardTokenizer):
    """Dies (like an out-of-memory kill) on the central shard, once the others are written."""

    def __call__(self, task):
        tasks = task.tasks if isinstance(task, ShardGroup) else [task]
        if all(one.config != "central" for one in tasks):
            return super().__call__(task)
        out = Path(tasks[0].output_path).parents[2]
        deadline = time.monotonic() + 60
        while len(list(out.glob("data/*/*.parquet"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the other worker's results reach the parent
        os._exit(3)


@pytest.mark.slow
def test_a_dead_worker_names_its_shard_and_keeps_finished_ones(mini_corpus, snac_dir,
                                                               text_tokenizer_file, tmp_path,
                                                               monkeypatch, capsys):
    monkeypatch.setattr(stage, "ShardTokenizer", CrashingTokenizer)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "crashed"
    code = cli.main(["tokenize", "--input_dir", str(mini_corpus), "--output_dir", str(out),
                     "--snac_model", str(snac_dir), "--text_tokenizer", str(text_tokenizer_file),
                     "--device", "cpu", "--num_cpu_workers", "2", "-q"])
    assert code == 1
    message = capsys.readouterr().err
    assert "worker process exited with code 3" in message
    assert "Unfinished: shard central/train-00000-of-00001" in message
    assert sorted(p.name for p in out.glob("data/*/*.parquet")) == [
        "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]  # balear/*
    assert not (out / "data/central").exists() or not any((out / "data/central").iterdir())


def test_missing_model_or_tokenizer_fails_before_reading_data(tmp_path, snac_dir,
                                                              text_tokenizer_file):
    corpus = tmp_path / "corpus"
    broken = shard_path(corpus, "central", "train", 0, 1)
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not parquet: reading it would raise ArrowInvalid")
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="nobody/missing-snac.*--snac_model"):
        stage.tokenize(options(corpus, out, "nobody/missing-snac", text_tokenizer_file))
    with pytest.raises(UsageError, match="--text_tokenizer"):
        stage.tokenize(options(corpus, out, snac_dir, tmp_path / "no-tokenizer.json"))
    assert not out.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no prepared shards.*parla prepare"):
        stage.tokenize(options(tmp_path / "empty", out, snac_dir, text_tokenizer_file))
    with pytest.raises(UsageError, match="not a folder"):
        stage.tokenize(options(tmp_path / "nowhere", out, snac_dir, text_tokenizer_file))


@pytest.mark.parametrize("flag, value", [("--snac_model", "nobody/missing-snac"),
                                         ("--text_tokenizer", "nobody/missing-tokenizer")])
def test_cli_exit_code_2_for_a_missing_model(flag, value, mini_corpus, snac_dir,
                                             text_tokenizer_file, tmp_path, capsys):
    args = {"--snac_model": str(snac_dir), "--text_tokenizer": str(text_tokenizer_file)}
    args[flag] = value
    argv = ["tokenize", "--input-dir", str(mini_corpus), "--output-dir", str(tmp_path / "o"),
            "--device", "cpu", *[item for pair in args.items() for item in pair]]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("parla: error:") and value in error and flag in error


def test_cli_flags_in_both_spellings():
    parser = cli.build_parser()
    dashed = parser.parse_args(["tokenize", "--input-dir", "a", "--output-dir", "b",
                                "--no-dedupe-frames", "--batch-seconds", "30",
                                "--workers-per-gpu", "2", "--format", "codes"])
    underscored = parser.parse_args(["tokenize", "--input_dir", "a", "--output_dir", "b",
                                     "--no_dedupe_frames", "--batch_seconds", "30",
                                     "--workers_per_gpu", "2", "--format", "codes"])
    assert cli.tokenize_options_from_args(dashed) == cli.tokenize_options_from_args(underscored)
    opts = cli.tokenize_options_from_args(dashed)
    assert (opts.dedupe_frames, opts.batch_seconds, opts.workers_per_gpu, opts.format) == (
        False, 30.0, 2, "codes")
    assert cli.tokenize_options_from_args(parser.parse_args(
        ["tokenize", "--input_dir", "a", "--output_dir", "b"])) == TokenizeOptions("a", "b")
    assert cli.main(["tokenize", "--input_dir", "a", "--output_dir", "b",
                     "--device", "tpu"]) == 2


def test_compat_script_accepts_the_original_flags(mini_corpus, snac_dir, text_tokenizer_file,
                                                  tmp_path):
    import runpy

    script = runpy.run_path(str(REPO / "scripts" / "tokenize_with_snac_multiprocess.py"))
    out = tmp_path / "compat"
    code = script["main"](["--input_dir", str(mini_corpus), "--output_dir", str(out),
                           "--num_gpu_workers", "1", "--snac_model", str(snac_dir),
                           "--queue_size", "100", "--batch_size", "4",
                           "--text_tokenizer", str(text_tokenizer_file), "--device", "cpu"])
    assert code == 0
    rows = read_rows(out / "data/central/train-00000-of-00001.parquet")
    assert len(rows) == 1 and rows[0]["input_ids"][0] == orpheus.START_OF_HUMAN


# --- the pure shard builder ------------------------------------------------------------------

def test_build_shard_skips_too_long_and_textless_rows_without_truncating():
    codes = [tuple(np.full(n * f, 7) for n in (1, 2, 4)) for f in (2, 30, 3)]
    rows = {"text": ["central: Bon dia.", "central: Bon dia.", None],
            "dialect": ["central"] * 3, "speaker_id": ["s"] * 3, "duration": [0.1, 2.5, 0.2],
            "source_path": ["a.mp3", "long.mp3", "no-text.mp3"]}
    results = codes[:2] + [RowRejected("undecodable_audio", "x")]
    rows_ok = {k: v[:] for k, v in rows.items()}
    text_ids = [[128000, 1, 2], [128000, 1, 2], [128000]]
    table, stats, rejects = tokenize_worker.build_shard(
        rows_ok, results, text_ids, [4096, 61440, 6144], fmt="orpheus", dedupe=False,
        max_length=40)
    assert table.num_rows == 1
    (kept,) = table.to_pylist()
    assert len(kept["input_ids"]) == orpheus.sequence_length(3, 14) == 24
    assert [(r.source_path, r.reason) for r in rejects] == [("long.mp3", "too_long"),
                                                            ("no-text.mp3", "undecodable_audio")]
    assert "> --max_length 40" in rejects[0].detail
    assert stats["central"].skipped == {"too_long": 1, "undecodable_audio": 1}
    assert stats["central"].audio_samples == 4096
    table, _, rejects = tokenize_worker.build_shard(rows_ok, codes, text_ids, [4096, 61440, 6144],
                                          fmt="orpheus", dedupe=False, max_length=8192)
    assert table.num_rows == 2 and [r.reason for r in rejects] == ["missing_text"]


def test_a_rerun_on_a_changed_input_is_refused(mini_corpus, snac_dir, text_tokenizer_file,
                                                tmp_path):
    import shutil

    corpus = Path(shutil.copytree(mini_corpus, tmp_path / "prepared"))
    out = tmp_path / "tokenized"
    stage.tokenize(options(corpus, out, snac_dir, text_tokenizer_file))
    # prepare ran again with more rows per shard: one shard is now another file
    shard = next((corpus / "data" / "central").glob("train-*.parquet"))
    table = pq.read_table(shard)
    pq.write_table(pa.concat_tables([table, table]), shard)
    with pytest.raises(UsageError, match="another version"):
        stage.tokenize(options(corpus, out, snac_dir, text_tokenizer_file))
    # ... or with more shards: the old output would sit beside the new
    shard.rename(shard.with_name("train-00000-of-00002.parquet"))
    pq.write_table(table, shard.with_name("train-00001-of-00002.parquet"))
    with pytest.raises(UsageError, match="does not have"):
        stage.tokenize(options(corpus, out, snac_dir, text_tokenizer_file))
