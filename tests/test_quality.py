"""DNSMOS scores: the same as speechmos's own run, sensible on noise, and the option checks.

No test assumes real-speech values: espeak-ng speech scores only 1.7-3.1 OVRL.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import speech
from parla.audio.decode import resample
from parla.cli import main
from parla.conditioning import dnsmos as quality
from parla.conditioning.dnsmos import SCORE_KEYS, dnsmos_reject, windows
from parla.errors import UsageError
from parla.extras import QUALITY_PACKAGES, require_quality_extra
from parla.failures import EXIT_USAGE
from parla.options import PrepareOptions

HAVE_QUALITY = all(importlib.util.find_spec(name) for name in QUALITY_PACKAGES)
needs_quality = pytest.mark.skipif(not HAVE_QUALITY, reason="needs the parla[quality] extra")


@pytest.fixture(scope="module")
def scorer():
    if not HAVE_QUALITY:
        pytest.skip("needs the parla[quality] extra")
    return quality.DnsmosScorer()


def _speech_16k(text: str, seconds_pad: float = 0.2, seed: int = 0) -> np.ndarray:
    return speech(text, sample_rate=16000, pad_seconds=seconds_pad, seed=seed)


# --- pure parts ------------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "count"), [
    (0.5, 7),    # doubled five times to 16 s: floor(16) - 9.01 = 6.99 -> 7 windows
    (3.0, 3),    # doubled to 12 s: floor(12) - 9.01 = 2.99 -> 3 windows
    (4.6, 1),    # doubled to 9.2 s: one window
    (10.5, 1),   # floor(10.5) - 9.01 = 0.99 -> 1 window
    (20.0, 11),  # floor(20) - 9.01 = 10.99 -> 11 windows
])
def test_windows_follow_dnsmos_rule(seconds: float, count: int) -> None:
    samples = np.linspace(-0.5, 0.5, int(seconds * 16000), dtype=np.float32)
    cut = windows(samples)
    assert cut.shape == (count, quality.WINDOW_SAMPLES)
    assert cut.dtype == np.float32
    # each window starts one second after the previous one in the doubled signal
    doubled = samples
    while doubled.size < quality.WINDOW_SAMPLES:
        doubled = np.concatenate([doubled, doubled])
    last = (count - 1) * 16000
    np.testing.assert_array_equal(cut[-1], doubled[last:last + quality.WINDOW_SAMPLES])


def test_windows_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        windows(np.zeros(0, dtype=np.float32))


def test_calibrate_averages_calibrated_windows() -> None:
    raw = np.array([[3.0, 3.5, 2.5], [4.0, 4.0, 3.0]])
    scores = quality.calibrate(raw)
    assert list(scores) == list(SCORE_KEYS)
    sig = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
    assert scores["dnsmos_sig"] == pytest.approx((sig(3.0) + sig(4.0)) / 2, abs=1e-4)


def test_dnsmos_reject() -> None:
    scores = {"dnsmos_sig": 3.1, "dnsmos_bak": 3.9, "dnsmos_ovrl": 2.41}
    assert dnsmos_reject(scores, None) is None
    assert dnsmos_reject(scores, 2.41) is None  # at the threshold: kept
    reason, detail = dnsmos_reject(scores, 3.0)
    assert reason == "low_dnsmos" and "2.41" in detail and "3" in detail
    assert dnsmos_reject({}, 3.0) is None  # not scored: nothing to judge by


# --- options and the missing extra -----------------------------------------------------------

def test_min_dnsmos_needs_dnsmos_and_a_mos_range() -> None:
    with pytest.raises(UsageError, match="--min_dnsmos needs --dnsmos"):
        PrepareOptions(datasets=("x",), output_dir="y", min_dnsmos=3.0)
    for bad in (0.5, 5.5):
        with pytest.raises(UsageError, match=r"\[1, 5\]"):
            PrepareOptions(datasets=("x",), output_dir="y", dnsmos=True, min_dnsmos=bad)


def _without(monkeypatch, name: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda module, *a, **k: None if module == name else real(module, *a, **k))


@pytest.mark.parametrize("missing", QUALITY_PACKAGES)
def test_missing_extra_is_one_clear_line(monkeypatch, missing: str) -> None:
    _without(monkeypatch, missing)
    with pytest.raises(UsageError) as error:
        require_quality_extra()
    message = str(error.value)
    assert "\n" not in message and missing in message and "parla[quality]" in message
    with pytest.raises(UsageError, match="parla\\[quality\\]"):
        PrepareOptions(datasets=("x",), output_dir="y", dnsmos=True)


def test_cli_dnsmos_without_extra_exits_2(monkeypatch, tmp_path, capsys) -> None:
    _without(monkeypatch, "speechmos")
    code = main(["prepare", "--datasets", str(tmp_path), "--output_dir",
                 str(tmp_path / "out"), "--dnsmos"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE == 2
    assert err.count("\n") == 1 and "pip install 'parla[quality]'" in err
    assert not (tmp_path / "out").exists()


# --- the scorer ------------------------------------------------------------------------------

@needs_quality
@pytest.mark.parametrize("case", ["short", "medium", "long_noisy"])
def test_scores_match_speechmos_run(scorer, case: str) -> None:
    pytest.importorskip("librosa", reason="speechmos's own dnsmos.run imports librosa")
    from speechmos import dnsmos

    samples = {
        "short": lambda: _speech_16k("Bon dia."),  # under 9 s: doubled, several windows
        "medium": lambda: _speech_16k("Demà anirem al mercat a comprar fruita i verdura."),
        # over 11 s: several windows without doubling
        "long_noisy": lambda: np.concatenate(
            [_speech_16k("La plaça del poble és plena de gent que balla.", seed=s)
             for s in range(4)]),
    }[case]().astype(np.float32)
    if case == "long_noisy":
        samples = np.clip(samples + np.random.default_rng(1).normal(0, 0.02, samples.size),
                          -1, 1).astype(np.float32)
    reference = dnsmos.run(samples, 16000)
    ours = scorer(samples, 16000)
    assert set(ours) == set(SCORE_KEYS)
    for key, theirs in (("dnsmos_sig", "sig_mos"), ("dnsmos_bak", "bak_mos"),
                        ("dnsmos_ovrl", "ovrl_mos")):
        assert ours[key] == pytest.approx(float(reference[theirs]), abs=1e-3), key


@needs_quality
def test_any_sample_rate_is_resampled_to_16k(scorer) -> None:
    at_24k = speech("Avui fa un dia molt bonic.", sample_rate=24000)
    scores = scorer(at_24k, 24000)
    assert scores == scorer(resample(at_24k, 24000, 16000), 16000)
    assert all(1.0 <= value <= 5.0 for value in scores.values())


@needs_quality
def test_noise_lowers_the_background_score(scorer) -> None:
    clean = _speech_16k("Avui fa un dia molt bonic.")
    noise = np.random.default_rng(7).normal(0, 1, clean.size).astype(np.float32)
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2))  # 0 dB SNR
    noisy = np.clip(clean + noise, -1, 1)
    clean_scores, noisy_scores = scorer(clean, 16000), scorer(noisy, 16000)
    assert noisy_scores["dnsmos_bak"] < clean_scores["dnsmos_bak"] - 0.5
    assert noisy_scores["dnsmos_ovrl"] < clean_scores["dnsmos_ovrl"]


@needs_quality
def test_cli_flags_reach_the_options() -> None:
    from parla.cli import build_parser, prepare_options_from_args

    args = build_parser().parse_args(["prepare", "--datasets", "x", "--output_dir", "y",
                                      "--dnsmos", "--min_dnsmos", "3"])
    options = prepare_options_from_args(args)
    assert options.dnsmos is True and options.min_dnsmos == 3.0
    defaults = prepare_options_from_args(build_parser().parse_args(
        ["prepare", "--datasets", "x", "--output_dir", "y"]))
    assert defaults.dnsmos is False and defaults.min_dnsmos is None
