"""DNSMOS P.835 quality scores of a clip: speech (SIG), background (BAK) and overall (OVRL).

The model is the one `speechmos` ships (``dnsmos_models/sig_bak_ovr.onnx``, Microsoft's DNSMOS
P.835 on raw 16 kHz audio), run on onnxruntime's CPU build: the `parla[quality]` extra.

We do not call ``speechmos.dnsmos.run``: per 9.01 s window it also runs the P.808 model on a
librosa mel spectrogram (a fourth score nobody here uses; librosa and numba alone take seconds to
import in every worker), and its sessions take every core, which oversubscribes the machine when
each prepare worker has one. `DnsmosScorer` loads only the SIG/BAK/OVRL model, once per worker,
on one intra-op thread, and scores a clip's windows one by one (a batch of them is no faster on
a CPU and takes 8x the memory). The windows, the
per-window calibration polynomials and the mean over windows are speechmos's (and Microsoft's
``dnsmos_local.py``), so the scores are the same (tests/test_quality.py compares them); the cost
per clip is in docs/QUALITY.md.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np

from parla.errors import UsageError
from parla.extras import require_quality_extra

SAMPLE_RATE = 16000
WINDOW_SECONDS = 9.01
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)  # 144160: the model's fixed input length
HOP_SAMPLES = SAMPLE_RATE  # windows start every second
SCORE_KEYS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
LOW_DNSMOS = "low_dnsmos"

# raw model output -> MOS, per score, for the non-personalised model (speechmos / dnsmos_local.py)
_CALIBRATION = {
    "dnsmos_sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
    "dnsmos_bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
    "dnsmos_ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535]),
}


def model_path() -> Path:
    """The SIG/BAK/OVRL model inside the installed speechmos (no speechmos module is imported)."""
    require_quality_extra()
    spec = importlib.util.find_spec("speechmos")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "dnsmos_models" / "sig_bak_ovr.onnx"
        if path.is_file():
            return path
    raise UsageError("the installed speechmos has no dnsmos_models/sig_bak_ovr.onnx; reinstall "
                     "it: pip install --force-reinstall 'parla[quality]'")


def windows(samples: np.ndarray) -> np.ndarray:
    """The (N, 144160) float32 windows DNSMOS scores for 16 kHz audio, exactly as speechmos cuts
    them: a clip under 9.01 s is doubled until it is not, then one window starts every second.
    """
    audio = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if audio.size == 0:
        raise ValueError("no samples to score")
    while audio.size < WINDOW_SAMPLES:
        audio = np.concatenate([audio, audio])
    count = int(math.floor(audio.size / SAMPLE_RATE) - WINDOW_SECONDS) + 1
    starts = np.arange(count) * HOP_SAMPLES
    starts = starts[starts + WINDOW_SAMPLES <= audio.size]
    return np.stack([audio[start:start + WINDOW_SAMPLES] for start in starts])


def calibrate(raw: np.ndarray) -> dict[str, float]:
    """Mean over windows of the calibrated scores; ``raw`` is the model's (N, 3) SIG/BAK/OVRL."""
    raw = np.asarray(raw, dtype=np.float64).reshape(-1, 3)
    return {key: round(float(np.mean(_CALIBRATION[key](raw[:, column]))), 4)
            for column, key in enumerate(SCORE_KEYS)}


class DnsmosScorer:
    """Built once per worker (loads the ONNX session once); call it on each clip.

    ``DnsmosScorer()(samples, sample_rate)`` -> ``{"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}``
    (floats, MOS 1..5, rounded to 4 decimals). Any sample rate: the clip is resampled to 16 kHz.
    ``threads`` is onnxruntime's intra-op thread count: 1 for one scorer per worker process.
    """

    def __init__(self, threads: int = 1, providers: list[str] | None = None) -> None:
        require_quality_extra()
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        # a worker with nothing to run should not spin on its core, taking it from the others
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_path()), session_options,
                                            providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, samples: np.ndarray, sample_rate: int) -> dict[str, float]:
        from parla.audio.decode import resample

        audio = resample(np.asarray(samples, dtype=np.float32), sample_rate, SAMPLE_RATE)
        # one window per call: a batch of a clip's 7 windows was no faster on a CPU and took
        # 2.1 GB of memory instead of 0.26 GB (docs/QUALITY.md)
        raw = [self.session.run(None, {self.input_name: window[np.newaxis]})[0]
               for window in windows(audio)]
        return calibrate(np.concatenate(raw))


def dnsmos_reject(scores: dict[str, Any], min_dnsmos: float | None) -> tuple[str, str] | None:
    """(reason, detail) when the clip's overall DNSMOS is under ``min_dnsmos``; None keeps it."""
    if min_dnsmos is None:
        return None
    overall = scores.get("dnsmos_ovrl")
    if overall is None or float(overall) >= min_dnsmos:
        return None
    return LOW_DNSMOS, f"DNSMOS OVRL {float(overall):.2f} < {min_dnsmos:g}"
