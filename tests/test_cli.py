"""`parla prepare` and `parla demo` from the command line: flags, errors, dry run, outputs."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RAW_CONDITIONING_FLAGS, write_cv_release
from parla.cli import build_parser, main, prepare_options_from_args
from parla.failures import EXIT_USAGE, run_command
from parla.store.layout import REJECTS_FILE
from parla.store.shards import find_shards

SPEAKERS = {"ana": ("Central", 3), "bernat": ("Central", 3), "eva": ("Balear", 3),
            "ferran": ("Balear", 4)}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree(folder: Path) -> list[str]:
    """Every path under ``folder`` (what a failed command must leave untouched)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """Tone clips: enough for everything that stops before decoding (read only)."""
    return write_cv_release(tmp_path_factory.mktemp("release") / "cv", SPEAKERS)


@pytest.fixture
def speech_release(cv_release) -> Path:
    return cv_release(SPEAKERS, use_speech=True)


def parse_prepare(*args: str):
    return prepare_options_from_args(build_parser().parse_args(["prepare", *args]))


# --- bad arguments: one line on stderr, exit 2, nothing written ------------------------------

BAD_ARGUMENTS = {
    "min_over_max": (["--min_duration", "5", "--max_duration", "2"],
                     "--min_duration (5.0) must not exceed --max_duration (2.0)"),
    "unknown_source": (["--datasets", "{tmp}/nowhere"], "no such folder"),
    "unknown_dialect": (["--datasets", "gascon={release}"], "unknown dialect 'gascon'"),
    "output_under_a_file": (["--output_dir", "{tmp}/a_file/out"], "not a folder"),
    "non_empty_output": (["--output_dir", "{tmp}/full"], "not empty; pass --overwrite"),
    "unknown_flag": (["--frobnicate"], "unrecognized arguments for `parla prepare`: --frobnicate"),
    "misspelled_flag": (["--max_sample_per_speaker", "5"], "unrecognized arguments for `parla "
                        "prepare`: --max_sample_per_speaker 5 (did you mean "
                        "--max_samples_per_speaker?)"),
    "bad_choice": (["--resampler", "linear"], "invalid choice: 'linear'"),
    "bad_number": (["--num_workers", "0"], "--num_workers must be >= 1"),
    "not_a_number": (["--min_duration", "short"], "invalid float value: 'short'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_bad_arguments(case: str, release: Path, tmp_path: Path, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "a_file").write_text("")
    (work / "full").mkdir()
    (work / "full" / "README.md").write_text("a card from an older run")
    extra, message = BAD_ARGUMENTS[case]
    extra = [a.format(tmp=work, release=release) for a in extra]
    args = ["prepare", "--datasets", str(release), "--output_dir", str(work / "out")]
    before = tree(work)
    code, out, err = run(capsys, *args, *extra)
    assert code == EXIT_USAGE == 2
    assert err.startswith("parla: error: ") and err.endswith("\n") and err.count("\n") == 1
    assert message in err
    assert tree(work) == before


def test_missing_required_arguments(capsys) -> None:
    code, _, err = run(capsys, "prepare", "--output_dir", "somewhere")
    assert code == 2 and err.count("\n") == 1 and "--datasets" in err
    code, _, err = run(capsys)
    assert code == 2 and err.count("\n") == 1


def test_the_installed_command_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "parla", "prepare", "--datasets", "x/y",
                           "--output_dir", str(tmp_path / "out"), "--min-duration", "9",
                           "--max-duration", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "parla: error: --min_duration (9.0) must not exceed --max_duration (3.0)"]
    assert not (tmp_path / "out").exists()


# --- flag spellings --------------------------------------------------------------------------

@pytest.mark.parametrize(("underscored", "dashed"), [
    (["--min_duration", "1.7"], ["--min-duration", "1.7"]),
    (["--max_samples_per_speaker", "7"], ["--max-samples-per-speaker", "7"]),
    (["--no_balance_speakers"], ["--no-balance-speakers"]),
    (["--target_sample_rate", "16000", "--dry_run"], ["--target-sample-rate", "16000",
                                                      "--dry-run"]),
    (["--no_trim_silence", "--min_snr_db", "3"], ["--no-trim-silence", "--min-snr-db", "3"]),
])
def test_both_spellings_of_every_flag(underscored: list[str], dashed: list[str]) -> None:
    base = ["--datasets", "central=/data/cv", "--output_dir", "out"]
    first = parse_prepare(*base, *underscored)
    assert first == parse_prepare("--datasets", "central=/data/cv", "--output-dir", "out",
                                  *dashed)
    assert first != parse_prepare(*base)


def test_every_dashed_flag_has_its_underscored_twin() -> None:
    parser = build_parser()
    prepare_parser = parser._subparsers._group_actions[0].choices["prepare"]
    spellings = {s for action in prepare_parser._actions for s in action.option_strings}
    dashed = {s for s in spellings if s.startswith("--") and "-" in s[2:]}
    assert dashed and all(s.replace("-", "_").replace("__", "--", 1) in spellings
                          for s in dashed)


def test_flags_reach_the_options() -> None:
    options = parse_prepare("--datasets", "a", "b", "--output_dir", "o", "--seed", "3",
                            "--min_up_votes", "2", "--samples_per_dialect", "100",
                            "--resampler", "scipy", "--no_loudness_norm", "--overwrite")
    assert options.datasets == ("a", "b") and options.seed == 3
    assert (options.min_up_votes, options.samples_per_dialect) == (2, 100)
    assert options.resampler == "scipy" and options.overwrite
    assert options.conditioning.loudness_norm is False
    assert options.conditioning.trim_silence is True  # untouched defaults stay


def test_the_api_the_cli_and_a_config_give_the_same_numbers() -> None:
    from parla.options import ConditioningOptions, PrepareOptions

    api = PrepareOptions(datasets=("a",), output_dir="o", min_duration=2,
                         conditioning=ConditioningOptions(target_lufs=-23))
    cli = parse_prepare("--datasets", "a", "--output_dir", "o", "--min_duration", "2",
                        "--target_lufs", "-23")
    # whole numbers become floats where the option is one, as the CLI makes them: a shard's
    # recorded settings are then the same whoever started the run
    assert repr(api.min_duration) == repr(cli.min_duration) == "2.0"
    assert repr(api.conditioning.target_lufs) == repr(cli.conditioning.target_lufs) == "-23.0"
    assert api == cli and type(api.seed) is int


# --- runs ------------------------------------------------------------------------------------

def test_dry_run_prints_per_step_counts_and_writes_nothing(release: Path, tmp_path: Path,
                                                          capsys) -> None:
    code, out, _ = run(capsys, "prepare", "--datasets", release, "--output_dir",
                       tmp_path / "out", "--dry_run", "--max_samples_per_speaker", "3")
    assert code == 0 and not (tmp_path / "out").exists()
    lines = out.splitlines()
    central = lines.index("central (dry run: nothing written)")
    table = lines[central + 2:central + 7]
    assert [line.split()[:3] for line in table] == [
        ["input", "6", "2"], ["duration", "6", "2"], ["sentence_and_speaker", "6", "2"],
        ["min_samples_per_speaker", "6", "2"], ["balance_speakers", "6", "2"]]
    assert "balear (dry run: nothing written)" in lines


def test_prepare_then_overwrite_gives_the_same_bytes(speech_release: Path, tmp_path: Path,
                                                     capsys) -> None:
    out = tmp_path / "out"
    args = ["prepare", "--datasets", speech_release, "--output-dir", out, "--num_workers", "1",
            "--validation_fraction", "0.3", *RAW_CONDITIONING_FLAGS]
    code, printed, _ = run(capsys, *args)
    assert code == 0 and f"wrote {out}" in printed
    shards = find_shards(out)
    assert set(shards) == {"central", "balear"}  # `all` is the card's union of the two
    first = {p.name: p.read_bytes() for s in shards.values() for ps in s.values() for p in ps}

    code, _, _ = run(capsys, *args, "--overwrite")
    assert code == 0
    again = {p.name: p.read_bytes() for s in find_shards(out).values() for ps in s.values()
             for p in ps}
    assert again == first  # same seed, same bytes


def test_demo_runs(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PARLA_DISABLE_PROGRESS")  # the bars a person sees
    out = tmp_path / "demo"
    code, printed, bars = run(capsys, "demo", out, "--num_workers", "1")
    assert code == 0
    assert f"datasets.load_dataset({str(out)!r}, split='train'" in printed
    assert "prepare" in bars and "probing" not in bars  # no bar for probing one clip
    assert set(find_shards(out)) == {"alacanti", "balear", "central", "nord_occidental",
                                     "septentrional", "tortosi", "valencia"}
    rejected = (out / REJECTS_FILE).read_text()
    for clip in ("common_voice_ca_40474485.mp3", "common_voice_ca_41442110.mp3",
                 "common_voice_ca_41319752.mp3"):
        assert clip in rejected
    assert (out / "speaker_metadata.json").is_file() and (out / "README.md").is_file()


def test_quiet_prints_only_what_was_written(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PARLA_DISABLE_PROGRESS")  # -q alone silences the bars
    out = tmp_path / "demo"
    code, printed, err = run(capsys, "demo", out, "--num_workers", "1", "-q")
    assert code == 0 and err == ""
    assert re.fullmatch(rf"wrote {re.escape(str(out))} in [\d.]+ s \(rejects: \d+ in .*\)\n",
                        printed), printed


def test_prepare_by_dialect_script_takes_the_original_flags(tmp_path):
    """The compatibility script runs prepare with the original command line, verbatim."""
    import importlib.util

    from parla.demo import demo_corpus_path

    spec = importlib.util.spec_from_file_location(
        "prepare_by_dialect", Path(__file__).parents[1] / "scripts" / "prepare_by_dialect.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out"
    code = script.main(["--datasets", str(demo_corpus_path()), "--output_dir", str(out),
                        "--target_sample_rate", "24000", "--min_duration", "1.0",
                        "--max_duration", "20.0", "--samples_per_dialect", "6",
                        "--min_samples_per_speaker", "3", "--max_samples_per_speaker", "2",
                        "--save_speaker_metadata", "--num_workers", "1", "-q"])
    assert code == 0
    statistics = json.loads((out / "dialect_statistics.json").read_text())
    assert statistics["parameters"]["balance_speakers"] is False  # as the original's default
    assert statistics["parameters"]["samples_per_dialect"] == 6
    assert (out / "speaker_metadata.json").is_file()
    assert all(d["output"]["rows"] <= 6 for d in statistics["dialects"].values())


# --- exit codes, --version, no abbreviations -------------------------------------------------

def test_version(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"parla {version('parla')}"


@pytest.mark.parametrize("args", [
    ["prepare", "--datasets", "central=/data/cv", "--output_dir", "o", "--max_dur", "5"],
    ["publish", "folder", "--repo", "user/name"],
    ["tokenize", "--input", "a", "--output_dir", "b"],
])
def test_abbreviated_flags_are_refused(args: list[str], capsys) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2 and err.count("\n") == 1
    assert "unrecognized arguments" in err or "required" in err


@pytest.mark.parametrize("command", [[], ["prepare"], ["tokenize"], ["publish"], ["run"],
                                     ["demo"]])
def test_every_help_names_the_exit_codes(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 done; 1 the environment failed" in text
    assert "130 interrupted (Ctrl-C); 143 terminated (SIGTERM)" in text


@pytest.mark.parametrize(("error", "line"), [
    (OSError(errno.ENOSPC, "No space left on device", "/out/data/x.parquet"),
     "the disk is full (/out/data/x.parquet): No space left on device; free some space and run "
     "the same command again to resume (finished shards are kept)"),
    (OSError("Error writing bytes to file. Detail: [errno 27] File too large"),
     "the disk is full: File too large; free some space and run the same command again to "
     "resume (finished shards are kept)"),
    (PermissionError(errno.EACCES, "Permission denied", "/out/rejects.jsonl"),
     "cannot write (/out/rejects.jsonl): Permission denied; give a folder you may write to, or "
     "fix its permissions"),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
     "network failure: Connection reset by peer; check the connection and rerun"),
    (OSError(errno.EIO, "Input/output error", "/out/x"), "Input/output error (/out/x)"),
])
def test_environment_failures_are_one_line_and_exit_1(error: OSError, line: str,
                                                      capsys) -> None:
    def fails() -> int:
        raise error

    def wrapped() -> int:  # an engine re-raising a worker's failure as its own error
        raise RuntimeError("a worker failed") from error

    for command in (fails, wrapped):
        assert run_command("parla", command) == 1
        assert capsys.readouterr().err == f"parla: {line}\n"


def test_a_bug_keeps_its_traceback() -> None:
    def buggy() -> int:
        raise ValueError("not an environment failure")

    with pytest.raises(ValueError, match="not an environment failure"):
        run_command("parla", buggy)


def test_sigterm_unwinds_the_command_and_exits_143(capsys) -> None:
    cleaned = []
    before = signal.getsignal(signal.SIGTERM)

    def command() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler raises at the next bytecode
                time.sleep(0.05)
            return 0
        finally:
            cleaned.append(True)

    assert run_command("parla", command) == 143
    assert cleaned == [True]
    assert capsys.readouterr().err == ("parla: terminated (SIGTERM); finished shards are kept, "
                                       "rerun to resume\n")
    assert signal.getsignal(signal.SIGTERM) is before


def test_interrupt_exits_130(capsys) -> None:
    def command() -> int:
        raise KeyboardInterrupt

    assert run_command("parla", command) == 130
    assert capsys.readouterr().err.count("\n") == 1
