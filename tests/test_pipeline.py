"""`parla run` (config file, flag precedence, fail-fast login check, chained stages) and the
`scripts/prepare_all_catalan_datasets.sh` wrapper, end to end on the demo corpus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pytest

import parla.stages.prepare
import parla.stages.tokenize
from parla import cli
from parla.card.folder import write_dataset_card
from parla.card.render import read_card_state
from parla.dialects import DIALECTS
from parla.errors import UsageError
from parla.hub.client import HubError
from parla.options import PrepareOptions, PublishOptions, TokenizeOptions
from parla.stages import run as pipeline
from parla.stages.result import StageResult
from parla.store.shards import find_shards, read_shard, shard_path, write_table_atomic

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "prepare_all_catalan_datasets.sh"
REPO = "tester/cv_demo"


def files_of(folder: Path) -> dict[str, bytes]:
    """The files of a folder that publish uploads (its ignore patterns left out)."""
    from fnmatch import fnmatch

    from parla.hub.client import UPLOAD_IGNORE_PATTERNS

    files = {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return {name: path.read_bytes() for name, path in files.items()
            if not any(fnmatch(name, pattern) or fnmatch(path.name, pattern)
                       for pattern in UPLOAD_IGNORE_PATTERNS)}


def loads_every_config(folder: Path, cache: Path) -> None:
    for config, splits in find_shards(folder).items():
        loaded = datasets.load_dataset(str(folder), config, cache_dir=str(cache / config))
        assert set(loaded) == set(splits)
        assert loaded["train"].num_rows > 0


# --- config file -----------------------------------------------------------------------------

TOML = """\
datasets = ["a/b", "c/d"]
output-dir = "out"
[prepare]
max_samples_per_speaker = 9
min_duration = 2
trim_silence = false
[tokenize]
tokenize = true
max_length = 4096
[publish]
hf_repo = "me/corpus"
hf_private = true
"""

YAML = """\
datasets: [a/b, c/d]
output_dir: out
max_samples_per_speaker: 9
min_duration: 2
trim_silence: false
tokenize: {tokenize: true, max_length: 4096}
publish:
  hf_repo: me/corpus
  hf_private: true
"""


def test_toml_and_yaml_configs_read_the_same(tmp_path):
    (tmp_path / "run.toml").write_text(TOML)
    (tmp_path / "run.yaml").write_text(YAML)
    expected = {"datasets": ("a/b", "c/d"), "output_dir": "out", "max_samples_per_speaker": 9,
                "min_duration": 2.0, "trim_silence": False, "tokenize": True,
                "max_length": 4096, "hf_repo": "me/corpus", "hf_private": True}
    assert pipeline.load_config(tmp_path / "run.toml") == expected
    assert pipeline.load_config(tmp_path / "run.yaml") == expected


@pytest.mark.parametrize(("text", "message"), [
    ("max_samples = 5\n", r"unknown option\(s\) max_samples"),
    ("seed = \"42\"\n", r"'seed' must be an integer"),
    ("balance_speakers = 1\n", r"'balance_speakers' must be true or false"),
    ("datasets = [1, 2]\n", r"'datasets' must be a list of strings"),
    ("seed = 1\n[prepare]\nseed = 2\n", r"sets 'seed' twice"),
    ("seed = \n", r"not valid TOML"),
])
def test_bad_config_is_one_clear_usage_error(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        pipeline.load_config(path)


def test_config_must_exist_and_be_toml_or_yaml(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        pipeline.load_config(tmp_path / "missing.toml")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(UsageError, match=r"use a \.toml, \.yaml or \.yml file"):
        pipeline.load_config(tmp_path / "run.json")


def test_run_options_default_to_the_seven_catalan_datasets(tmp_path):
    prepare, tokenize, publish = pipeline.build_run_options({"output_dir": str(tmp_path / "o")})
    assert prepare.datasets == tuple(d.hub_id for d in DIALECTS.values())
    assert len(prepare.datasets) == 7
    assert prepare == PrepareOptions(datasets=prepare.datasets, output_dir=str(tmp_path / "o"))
    assert tokenize is None and publish is None


def test_run_options_chain_the_folders(tmp_path):
    out = str(tmp_path / "processed")
    prepare, tokenize, publish = pipeline.build_run_options(
        {"output_dir": out, "tokenize": True, "hf_repo": REPO, "overwrite": True,
         "max_length": 2048, "hf_commit_message": "v1"})
    assert tokenize.input_dir == out and tokenize.output_dir == out + "_tokenized"
    assert tokenize.overwrite and tokenize.max_length == 2048
    assert publish.folder == tokenize.output_dir and publish.repo_id == REPO
    assert publish.commit_message == "v1" and not publish.private
    _, _, publish = pipeline.build_run_options({"output_dir": out, "hf_repo": REPO})
    assert publish.folder == out


@pytest.mark.parametrize(("values", "message"), [
    ({}, "--output_dir is required"),
    ({"output_dir": "o", "hf_private": True}, "need --hf_repo"),
    ({"output_dir": "o", "tokenized_dir": "t"}, "--tokenize is not"),
    ({"output_dir": "o", "hf_repo": "no-slash"}, "--repo_id must look like"),
    ({"output_dir": "o", "max_samples_per_speaker": 0}, "--max_samples_per_speaker must be"),
])
def test_bad_run_options(values, message):
    with pytest.raises(UsageError, match=message):
        pipeline.build_run_options(values)


def test_flags_given_explicitly_override_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "run.toml").write_text(
        'output_dir = "from-config"\nseed = 1\nmax_samples_per_speaker = 9\n'
        'balance_speakers = true\nmin_snr_db = 5.0\ntokenize = true\n')
    seen = {}

    def fake_run(*options, on_step=None):
        seen["options"] = options
        return StageResult("run", "unused")

    monkeypatch.setattr(pipeline, "run", fake_run)
    # --seed 42 is the default value, given explicitly: it still wins over the file's 1
    code = cli.main(["run", "--config", str(tmp_path / "run.toml"), "--seed", "42",
                     "--no_balance_speakers", "--datasets", "x/y", "--no-tokenize"])
    assert code == 0
    prepare, tokenize, publish = seen["options"]
    assert prepare.seed == 42 and prepare.balance_speakers is False
    assert prepare.max_samples_per_speaker == 9 and prepare.output_dir == "from-config"
    assert prepare.conditioning.min_snr_db == 5.0 and prepare.datasets == ("x/y",)
    assert prepare.min_duration == 1.0  # in neither: the stage default
    assert tokenize is None and publish is None


# --- fail fast -------------------------------------------------------------------------------

def test_run_without_login_fails_before_processing(fake_hub, demo_corpus, tmp_path, monkeypatch,
                                                   capsys):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    out = tmp_path / "out"
    code = cli.main(["run", "--datasets", str(demo_corpus), "--output_dir", str(out),
                     "--hf_repo", REPO])
    assert code == 2
    assert "not logged in to the Hugging Face Hub" in capsys.readouterr().err
    assert not out.exists() and fake_hub.calls == []


def test_run_with_the_hub_down_fails_before_processing(fake_hub, demo_corpus, tmp_path):
    fake_hub.fail["whoami"] = 503
    prepare, _, publish = pipeline.build_run_options(
        {"datasets": (str(demo_corpus),), "output_dir": str(tmp_path / "out"), "hf_repo": REPO})
    with pytest.raises(HubError, match=r"HTTP 503\) while checking the login"):
        pipeline.run(prepare, None, publish)
    assert not (tmp_path / "out").exists()


def test_run_checks_that_stages_read_each_others_output(tmp_path):
    prepare, _, _ = pipeline.build_run_options({"output_dir": str(tmp_path / "a")})
    with pytest.raises(UsageError, match="final output"):
        pipeline.run(prepare, None, PublishOptions(folder=str(tmp_path / "b"), repo_id=REPO))
    tokenize = TokenizeOptions(input_dir=str(tmp_path / "b"), output_dir=str(tmp_path / "c"))
    with pytest.raises(UsageError, match="must read the prepare stage's output_dir"):
        pipeline.run(prepare, tokenize, None)
    assert not (tmp_path / "a").exists()


# --- whole runs ------------------------------------------------------------------------------

def test_run_prepares_tokenizes_and_publishes_the_tokenized_folder(fake_hub, prepared_folder,
                                                                    tmp_path, monkeypatch):
    """The chain's wiring, with stand-ins for the two stages (they have their own tests)."""
    order = []

    def fake_prepare(options):
        order.append("prepare")
        prepared_folder({"central": 2, "balear": 1}, name=Path(options.output_dir).name)
        # a dry run's shape: the CLI prints only selection counts, here none
        return StageResult("prepare", options.output_dir, {"dialects": {}}, dry_run=True)

    def fake_tokenize(options):
        order.append("tokenize")
        for config, splits in find_shards(options.input_dir).items():
            for split, paths in splits.items():
                rows = read_shard(paths[0], ["text", "dialect", "speaker_id", "duration"])
                ids = pa.array([[1, 2, 3]] * rows.num_rows, pa.list_(pa.int32()))
                write_table_atomic(shard_path(options.output_dir, config, split, 0, 1),
                                   rows.append_column("input_ids", ids))
        write_dataset_card(options.output_dir, kind="tokenized",
                           parameters={"snac_model": options.snac_model})
        return StageResult("tokenize", options.output_dir)

    monkeypatch.setattr(parla.stages.prepare, "prepare", fake_prepare)
    monkeypatch.setattr(parla.stages.tokenize, "tokenize", fake_tokenize)
    # no torch needed
    monkeypatch.setattr("parla.stages.run.require_tokenize_extra", lambda: None)
    out = tmp_path / "processed"
    code = cli.main(["run", "--output_dir", str(out), "--tokenize", "--hf_repo", REPO])
    assert code == 0 and order == ["prepare", "tokenize"]
    assert fake_hub.calls[:2] == ["whoami", "auth_check"]
    tokenized = tmp_path / "processed_tokenized"
    assert fake_hub.repos[REPO] == files_of(tokenized)
    card = fake_hub.repos[REPO]["README.md"].decode()
    assert read_card_state(card)[0] == "tokenized" and f'"{REPO}"' in card


def test_run_on_the_demo_corpus_from_a_config_file_publishes(fake_hub, demo_corpus, tmp_path,
                                                             capsys):
    out = tmp_path / "processed"
    config = tmp_path / "run.yaml"
    config.write_text(f"datasets: [{demo_corpus}]\noutput_dir: {out}\nnum_workers: 2\n"
                      f"max_samples_per_speaker: 4\nsamples_per_dialect: 4\n"
                      f"publish:\n  hf_repo: {REPO}\n")
    code = cli.main(["run", "--config", str(config), "--max_samples_per_speaker", "8"])
    assert code == 0
    assert capsys.readouterr().out.strip().endswith(f"{fake_hub.url}/datasets/{REPO}")
    assert fake_hub.repos[REPO] == files_of(out)
    state = read_card_state((out / "README.md").read_text(encoding="utf-8"))
    assert state[1]["max_samples_per_speaker"] == 8  # the flag won over the file's 4
    loads_every_config(out, tmp_path / "cache")


# --- the wrapper script ----------------------------------------------------------------------

def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    environment = os.environ | {"PARLA": f"{sys.executable} -m parla"} | env
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_wrapper_script_runs_on_the_demo_corpus_without_uploading(fake_hub, demo_corpus,
                                                                  tmp_path):
    out = tmp_path / "processed"
    # the arguments after the five are handed to `parla run`: fewer clips keep the test short
    done = run_script(str(out), "8", REPO, "no", "2", "--samples_per_dialect", "4",
                      env={"DATASETS": str(demo_corpus)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    config_at = lines.index("Configuration:")
    assert lines[config_at + 1:config_at + 6] == [
        f"  Output dir:          {out}", "  Max samples/speaker: 8",
        f"  HF repo:             {REPO}", "  Upload to HF:        no", "  Workers:             2"]
    assert f"  - {demo_corpus}" in lines
    assert done.stdout.index("Configuration:") < done.stdout.index("wrote ")  # printed first
    assert fake_hub.calls == []  # UPLOAD_TO_HF=no: the Hub is never asked
    state = read_card_state((out / "README.md").read_text(encoding="utf-8"))
    assert state[1]["max_samples_per_speaker"] == 8 and state[1]["balance_speakers"] is True
    assert state[1]["samples_per_dialect"] == 4
    assert set(find_shards(out)) == set(DIALECTS)
    loads_every_config(out, tmp_path / "cache")


@pytest.mark.parametrize(("args", "expected"), [
    ((), ["run", "--datasets", *(d.hub_id for d in DIALECTS.values()),
          "--output_dir", "/workspace/data/processed", "--balance_speakers",
          "--max_samples_per_speaker", "50", "--num_workers",
          subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
          "--hf_repo", "xaviviro/cv_23_ca_distilled"]),
    (("out", "7", "me/x", "no", "3", "--seed", "1"),
     ["run", "--datasets", *(d.hub_id for d in DIALECTS.values()), "--output_dir", "out",
      "--balance_speakers", "--max_samples_per_speaker", "7", "--num_workers", "3",
      "--seed", "1"]),
])
def test_wrapper_script_defaults_and_arguments(tmp_path, args, expected):
    record = tmp_path / "args.txt"
    fake_parla = tmp_path / "fake-parla.sh"
    fake_parla.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake_parla.chmod(0o755)
    done = run_script(*args, env={"PARLA": str(fake_parla)})
    assert done.returncode == 0, done.stderr
    assert record.read_text().splitlines() == expected


def test_wrapper_script_without_login_stops_before_processing(fake_hub, demo_corpus, tmp_path):
    out = tmp_path / "processed"
    env = {"DATASETS": str(demo_corpus), "HF_TOKEN": "", "HF_TOKEN_PATH": str(tmp_path / "none")}
    done = run_script(str(out), "8", REPO, "yes", "2", env=env)
    assert done.returncode == 2
    assert "not logged in to the Hugging Face Hub" in done.stderr
    assert not out.exists()


def test_wrapper_script_rejects_a_bad_upload_switch(tmp_path):
    done = run_script(str(tmp_path / "o"), "8", REPO, "maybe", "2", env={})
    assert done.returncode == 2 and "UPLOAD_TO_HF must be yes or no" in done.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_run_with_tokenize_writes_what_tokenize_alone_writes(demo_corpus, snac_dir,
                                                             text_tokenizer_file, tmp_path):
    """`parla run --tokenize` with the real stages (stand-in models): its tokenized folder holds
    the bytes `parla tokenize` writes from the same prepared folder."""
    out = tmp_path / "processed"
    models = ["--snac_model", str(snac_dir), "--text_tokenizer", str(text_tokenizer_file),
              "--device", "cpu", "--no_dedupe_frames", "--pack_length", "512"]
    assert cli.main(["run", "--datasets", str(demo_corpus), "--output_dir", str(out),
                     "--samples_per_dialect", "2", "--max_samples_per_speaker", "2",
                     "--num_workers", "1", "--tokenize", *models]) == 0
    alone = tmp_path / "alone"
    assert cli.main(["tokenize", "--input_dir", str(out), "--output_dir", str(alone),
                     *models]) == 0
    chained = tmp_path / "processed_tokenized"

    def outputs(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
                if p.is_file() and (p.suffix == ".parquet" or p.name in (
                    "tokenization_stats.json", "rejects.jsonl"))}

    made = outputs(chained)
    assert any(name.startswith("data/packed/") for name in made)
    assert sum(name.endswith(".parquet") for name in made) >= 8  # the dialects' and packed
    assert made == outputs(alone)
