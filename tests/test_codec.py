"""SNAC loading, padding and batched encoding (CPU, random SNAC of the real 24 kHz config)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("snac")
pytest.importorskip("tokenizers")

import torch  # noqa: E402
from snac import SNAC  # noqa: E402

from conftest import NEEDS_CXX, log_records, write_text_tokenizer  # noqa: E402
from parla.errors import RowRejected, UsageError  # noqa: E402
from parla.testing import SNAC_24KHZ_CONFIG  # noqa: E402
from parla.tokens import codec, precision  # noqa: E402
from parla.tokens.codec import (  # noqa: E402
    SnacEncoder,
    TextTokenizer,
    code_lengths,
    fold_weight_norm,
    load_snac,
    load_text_tokenizer,
    pad_multiple,
    padded_length,
    plan_batches,
    resolve_snac,
    resolve_text_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def clips(lengths, seed=0) -> list[np.ndarray]:
    """Noise bursts and tones: varied enough that a random SNAC gives varied codes."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        t = np.arange(n) / 24000
        tone = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t)
        out.append((tone + rng.normal(0, 0.05 + 0.05 * i, n)).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def reference_model(snac_dir):
    """SNAC exactly as the original scripts loaded it: from_pretrained, weight norm unfolded."""
    return SNAC.from_pretrained(str(snac_dir)).eval()


def encode_alone(model, audio: np.ndarray):
    with torch.inference_mode():
        codes = model.encode(torch.from_numpy(audio)[None, None])
    return [level[0].numpy() for level in codes]


# --- padding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    SNAC_24KHZ_CONFIG,
    {"encoder_rates": [2, 4, 8, 8], "vq_strides": [4, 2, 1], "attn_window_size": None},
    {"encoder_rates": [2, 3, 8, 8], "vq_strides": [8, 4, 2, 1], "attn_window_size": 32},
    {"encoder_rates": [3, 3, 7, 7], "vq_strides": [8, 4, 2, 1], "attn_window_size": 32},
])
def test_padded_length_is_snacs_own_padding(config):
    model = SimpleNamespace(hop_length=int(np.prod(config["encoder_rates"])),
                            vq_strides=config["vq_strides"],
                            attn_window_size=config["attn_window_size"])
    multiple = pad_multiple(model)
    for n in (1, 2, multiple - 1, multiple, multiple + 1, 3 * multiple + 17, 24000, 48000):
        snac_padded = SNAC.preprocess(model, torch.zeros(1, 1, n)).shape[-1]
        assert padded_length(n, model) == snac_padded
    assert padded_length(multiple, model) == multiple


def test_real_24khz_config_pads_to_2048_and_codes_are_n_2n_4n():
    model = SimpleNamespace(hop_length=512, vq_strides=[4, 2, 1], attn_window_size=None)
    assert pad_multiple(model) == 2048
    assert padded_length(24000, model) == 12 * 2048
    assert code_lengths(12 * 2048, model) == (12, 24, 48)


def test_plan_batches_fills_the_budget_longest_first_padding_to_the_first():
    lengths = [4096, 2048, 4096, 4096, 8192, 2048, 4096, 2048]
    batches = plan_batches(lengths, max_batch_samples=12288)
    assert batches == [[4], [0, 2, 3], [6, 1, 5], [7]]  # ties in input order
    for batch in batches:  # every clip is padded to the batch's first, and longest, clip
        assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= 12288
        assert lengths[batch[0]] == max(lengths[i] for i in batch)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert plan_batches([16384], 2048) == [[0]]  # too long for the budget: alone
    assert plan_batches([], 2048) == []


def test_plan_batches_of_one_length_never_mix_padded_lengths():
    lengths = [4096, 2048, 4096, 4096, 8192, 2048, 4096]
    batches = plan_batches(lengths, max_batch_samples=8192, mixed_lengths=False)
    assert batches == [[4], [0, 2], [3, 6], [1, 5]]
    for batch in batches:
        assert len({lengths[i] for i in batch}) == 1


# --- loading ---------------------------------------------------------------------------------

def test_load_snac_folds_weight_norm_and_drops_the_decoder(snac_dir):
    from torch.nn.utils import parametrize

    model = load_snac(snac_dir)
    assert model.decoder is None
    assert not model.training
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    again = SNAC.from_pretrained(str(snac_dir))
    assert fold_weight_norm(again) > 0
    assert fold_weight_norm(again) == 0


def test_load_snac_from_the_hub_cache(snac_dir, tmp_path, monkeypatch):
    """A Hub id resolves from the local cache with HF_HUB_OFFLINE=1 (no network)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--snac_24khz" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "pytorch_model.bin"):
        shutil.copy(snac_dir / name, snapshot / name)
    (cache / "models--someone--snac_24khz" / "refs").mkdir()
    (cache / "models--someone--snac_24khz" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    files = resolve_snac("someone/snac_24khz")
    assert files.weights.parent == snapshot
    assert load_snac("someone/snac_24khz").sampling_rate == 24000


@pytest.mark.parametrize("what", ["hub", "folder", "no_weights", "bad_config"])
def test_missing_snac_is_one_clear_usage_error(what, snac_dir, tmp_path):
    if what == "hub":
        name = "nobody/not-a-snac-model"
    elif what == "folder":
        name = str(tmp_path / "no-such-folder")
    else:
        folder = tmp_path / "partial"
        folder.mkdir()
        (folder / "config.json").write_text("{not json" if what == "bad_config"
                                            else json.dumps(SNAC_24KHZ_CONFIG))
        if what == "bad_config":
            shutil.copy(snac_dir / "pytorch_model.bin", folder)
        name = str(folder)
    with pytest.raises(UsageError) as error:
        resolve_snac(name)
    message = str(error.value)
    assert name in message
    assert "--snac_model" in message and "config.json" in message
    if what == "hub":
        assert "HF_HUB_OFFLINE" in message
    if what == "no_weights":
        assert "lacks pytorch_model.bin" in message


# --- encoding --------------------------------------------------------------------------------

def test_batched_codes_equal_encoding_each_clip_alone(snac_dir, reference_model):
    # three clips share a padded length (6144), two share 4096, one is alone (12288)
    lengths = [5000, 5500, 6100, 3000, 4000, 12000]
    audio = clips(lengths)
    encoder = SnacEncoder(snac_dir, "cpu", batch_seconds=0.6)  # 14400 samples: splits buckets
    assert len(plan_batches([encoder.padded_length(n) for n in lengths],
                            encoder.max_batch_samples)) == 4
    got = encoder.encode_batch(audio)
    for clip, codes in zip(audio, got, strict=True):
        frames = math.ceil(len(clip) / 2048)
        assert [len(level) for level in codes] == [frames, 2 * frames, 4 * frames]
        for level, want in zip(codes, encode_alone(reference_model, clip), strict=True):
            np.testing.assert_array_equal(level, want)
    assert len({int(c) for codes in got for c in codes[2]}) > 5  # the test is not vacuous


def test_a_batch_of_mixed_lengths_gives_each_clip_its_codes_alone(snac_dir, reference_model,
                                                                  monkeypatch):
    lengths = [24000, 2000, 9000, 15000, 4096, 21000]  # six padded lengths, one batch
    audio = clips(lengths, seed=3)
    encoder = SnacEncoder(snac_dir, "cpu", batch_seconds=10, mixed_lengths=True)
    assert encoder.mixed_lengths
    got = encoder.encode_batch(audio)
    assert [batch[0] for batch in encoder.phases.batches] == [6]
    wants = [encode_alone(reference_model, clip) for clip in audio]
    for codes, want in zip(got, wants, strict=True):
        for level, want_level in zip(codes, want, strict=True):
            np.testing.assert_array_equal(level, want_level)
    # not vacuous: unmasked, a short clip sees its batch-mates' padding and its codes change
    monkeypatch.setattr(codec.LengthMask, "_before_conv", lambda *args: None)
    unmasked = SnacEncoder(snac_dir, "cpu", batch_seconds=10,
                           mixed_lengths=True).encode_batch(audio)
    assert any(not np.array_equal(level, want_level)
               for codes, want in zip(unmasked, wants, strict=True)
               for level, want_level in zip(codes, want, strict=True))


def test_a_cpu_compiled_or_attention_model_keeps_one_padded_length_a_batch(snac_dir):
    assert not SnacEncoder(snac_dir, "cpu").mixed_lengths  # faster on a CPU
    assert not SnacEncoder(snac_dir, "cpu", torch_compile=True, mixed_lengths=True).mixed_lengths
    model = load_snac(snac_dir)
    model.attn_window_size = 32  # a 32/44 kHz SNAC's local attention would see across clips
    assert not SnacEncoder(model, "cpu", mixed_lengths=True).mixed_lengths


def test_encode_lazy_keeps_failures_in_place_and_survives_wrong_lengths(snac_dir,
                                                                        reference_model):
    audio = clips([3000, 3000, 4500])

    def load(index: int) -> np.ndarray:
        if index == 1:
            raise RowRejected("undecodable_audio", "test")
        return audio[index]

    encoder = SnacEncoder(snac_dir, "cpu", batch_seconds=10)
    # clip 2's header claims 3000 samples but it decodes to 4500 (another padded length)
    results = encoder.encode_lazy([3000, 3000, 3000], load, threads=1)
    assert isinstance(results[1], RowRejected) and results[1].reason == "undecodable_audio"
    for index in (0, 2):
        for level, want in zip(results[index], encode_alone(reference_model, audio[index]),
                               strict=True):
            np.testing.assert_array_equal(level, want)
    with pytest.raises(ValueError, match="clip 0"):
        encoder.encode_batch([np.zeros(0, np.float32)])


def test_an_out_of_memory_batch_is_split_and_the_batch_size_halved(snac_dir, reference_model):
    audio = clips([3000, 3500, 4000])  # one padded length: one batch of three
    encoder = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0)
    encode = encoder.model.encode
    sizes = []

    def small_device(batch):
        sizes.append(batch.shape[0])
        if batch.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return encode(batch)

    encoder.model.encode = small_device
    got = encoder.encode_batch(audio)
    assert sizes == [3, 1, 2, 1, 1]
    assert encoder.batch_seconds == 0.25
    for clip, codes in zip(audio, got, strict=True):
        for level, want in zip(codes, encode_alone(reference_model, clip), strict=True):
            np.testing.assert_array_equal(level, want)


def test_exact_precision_turns_tf32_off_for_matmul_and_cudnn(snac_dir):
    # what a GPU run starts from: cuDNN allows TF32 by default, and code may have allowed more
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        encoder = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0)
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "highest"
        assert encoder.precision == "exact"
        assert encoder.precision_state == {
            "precision": "exact", "cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False,
            "float32_matmul_precision": "highest",
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
        assert precision.set_precision("bf16")["cudnn_allow_tf32"] is False
        with pytest.raises(ValueError, match="exact, bf16"):
            precision.set_precision("tf32")
    finally:
        precision.set_precision("exact")


def autocast_seen(encoder: SnacEncoder) -> list[bool]:
    """Whether autocast was on at each of the encoder's model calls, from now on."""
    seen: list[bool] = []
    encode = encoder.model.encode
    encoder.model.encode = lambda x: seen.append(torch.is_autocast_enabled("cpu")) or encode(x)
    return seen


def test_bf16_precision_runs_the_encoder_under_autocast(snac_dir):
    audio = clips([3000, 3000])
    exact = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0).encode_batch(audio)
    bf16 = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0, precision="bf16")
    seen = autocast_seen(bf16)
    got = bf16.encode_batch(audio)
    assert seen == [True]
    assert [[len(level) for level in codes] for codes in got] == [
        [len(level) for level in codes] for codes in exact]


def test_code_agreement_counts_equal_codes_per_level_and_runs_add_up():
    reference = [(np.array([1, 2]), np.array([1, 2, 3, 4]), np.arange(8)),
                 (np.array([5]), np.array([6, 7]), np.array([0, 0, 0, 0]))]
    flipped = [(np.array([1, 9]), np.array([1, 2, 3, 4]), np.arange(8)),
               (np.array([5]), np.array([6, 0]), np.array([1, 1, 0, 0]))]
    shard = precision.code_agreement(flipped, reference)
    assert shard == {"clips": 2, "codes": [3, 6, 12], "equal": [2, 5, 10]}
    assert precision.code_agreement(reference, reference)["equal"] == [3, 6, 12]
    run = precision.combined_agreement([shard, None, shard])
    assert run["clips"] == 4 and run["codes"] == [6, 12, 24] and run["equal"] == [4, 10, 20]
    assert run["share_equal"] == {"level_0": round(2 / 3, 6), "level_1": round(5 / 6, 6),
                                  "level_2": round(10 / 12, 6)}
    assert precision.combined_agreement([None, {}]) is None
    with pytest.raises(ValueError, match="level 1"):
        precision.code_agreement([(np.array([1]), np.array([1]))],
                                 [(np.array([1]), np.array([1, 2]))])


def test_float32_codes_of_a_bf16_encoder_are_the_exact_codes(snac_dir):
    audio = clips([3000, 5000])
    exact = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0).encode_batch(audio)
    bf16 = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0, precision="bf16")
    seen = autocast_seen(bf16)
    for got, want in zip(bf16.float32_codes(audio), exact, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert seen == [False, False]


def test_the_cpu_batch_is_sized_from_the_machine_memory():
    import os


    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    want = memory * codec.CPU_MEMORY_SHARE / codec.CPU_BYTES_PER_AUDIO_SECOND
    cpu = torch.device("cpu")
    assert codec.auto_batch_seconds(cpu) == min(600.0, max(8.0, want))
    assert codec.auto_batch_seconds(cpu, share=4) == min(600.0, max(8.0, want / 4))


# --- text tokenizer --------------------------------------------------------------------------

def test_text_tokenizer_gives_exactly_one_bos_with_or_without_a_post_processor(tmp_path):
    with_bos = TextTokenizer(write_text_tokenizer(tmp_path / "a" / "tokenizer.json", True))
    without = TextTokenizer(write_text_tokenizer(tmp_path / "b" / "tokenizer.json", False))
    text = "central: Bon dia a tothom."
    assert with_bos._tokenizer.encode(text).ids[0] == 128000  # the file adds BOS itself
    assert without._tokenizer.encode(text).ids[0] != 128000
    ids = with_bos.encode(text)
    assert ids == without.encode(text)
    assert ids[0] == 128000 and ids.count(128000) == 1 and len(ids) == 8


def test_text_tokenizer_from_file_folder_or_missing(tmp_path):
    path = write_text_tokenizer(tmp_path / "tok" / "tokenizer.json", True)
    assert resolve_text_tokenizer(path) == path
    assert resolve_text_tokenizer(path.parent) == path
    assert load_text_tokenizer(str(path.parent)).encode("balear: Tinc gana.")[0] == 128000
    for missing in (tmp_path / "nope", tmp_path / "empty", "nobody/no-tokenizer"):
        if Path(str(missing)).name == "empty":
            Path(missing).mkdir()
        with pytest.raises(UsageError, match="--text_tokenizer"):
            resolve_text_tokenizer(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(UsageError, match="cannot be read"):
        TextTokenizer(broken)


class _Perturbed(torch.nn.Module):
    """What a compiler that reorders arithmetic badly would give: the encoder, a bit off."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.encoder(audio) + 0.5


def test_a_compiled_encoder_that_changes_codes_is_not_trusted(snac_dir, monkeypatch):
    audio = clips([3000, 3000])
    exact = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0).encode_batch(audio)
    monkeypatch.setattr(torch, "compile", lambda module, **_: _Perturbed(module))
    encoder = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0, torch_compile=True)
    assert encoder.compiled == "unchecked"
    with log_records("parla.codec", logging.WARNING) as records:
        got = encoder.encode_batch(audio) + encoder.encode_batch(audio)
    assert encoder.compiled == "differs"
    [warning] = [record.getMessage() for record in records]  # once, on the first batch
    assert "torch.compile changed" in warning and "encoding eagerly" in warning
    assert not isinstance(encoder.model.encoder, _Perturbed)
    for codes, want in zip(got, exact + exact, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(codes, want, strict=True))


def test_a_compiler_that_fails_leaves_the_eager_encoder(snac_dir, monkeypatch):
    class Broken(torch.nn.Module):
        def forward(self, audio: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no C compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda module, **_: Broken())
    encoder = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0, torch_compile=True)
    with log_records("parla.codec", logging.WARNING) as records:
        encoder.encode_batch(clips([3000]))
    assert encoder.compiled == "failed"
    assert "torch.compile failed (RuntimeError: no C compiler found)" in records[0].getMessage()


@NEEDS_CXX
def test_torch_compile_gives_eager_codes_and_is_trusted(snac_dir):
    """The real compiler (inductor, CPU): slow to compile once, so one small batch."""
    audio = clips([3000, 3000])
    exact = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0).encode_batch(audio)
    encoder = SnacEncoder(snac_dir, "cpu", batch_seconds=1.0, torch_compile=True)
    got = encoder.encode_batch(audio)
    assert encoder.compiled == "trusted"
    for codes, want in zip(got, exact, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(codes, want, strict=True))

