"""parla's tokenized output fed to the real consumer: a tiny random LlamaForCausalLM with the
Orpheus vocabulary, trained by transformers' Trainer with the default collator, as Orpheus's
finetune/train.py does; plus the stage-level parts of training-ready output (`--pack_length`,
the length budget) on the same tokenized folder.

The corpus is tokenized with the offline models and dedupe off (a random SNAC repeats codes_0,
so dedupe would leave almost no audio tokens).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("snac")
pytest.importorskip("tokenizers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # what transformers' Trainer needs with torch

import torch  # noqa: E402

from conftest import log_records, write_prepared_folder  # noqa: E402
from parla.options import TokenizeOptions  # noqa: E402
from parla.stages import pack as packing  # noqa: E402
from parla.stages import tokenize as stage  # noqa: E402
from parla.stages import tokenize_worker  # noqa: E402
from parla.store.layout import TOKENIZATION_STATS_FILE
from parla.tokens import orpheus  # noqa: E402

ORPHEUS_VOCAB_SIZE = 156_940  # canopylabs/orpheus-3b-0.1-ft config.json: vocab_size
PACK_LENGTH = 160


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tokenize_options(corpus: Path, out: Path, snac_dir: Path, tokenizer: Path,
                     **kwargs) -> TokenizeOptions:
    return TokenizeOptions(input_dir=str(corpus), output_dir=str(out), snac_model=str(snac_dir),
                           text_tokenizer=str(tokenizer), device="cpu", dedupe_frames=False,
                           pack_length=PACK_LENGTH, **kwargs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """central (2 speakers) and balear (1), 2 clips each: `all` has 4 train rows (one central
    speaker held out for its 2 validation rows); clips of 0.5-0.95 s, 50-95 tokens."""
    return write_prepared_folder(tmp_path_factory.mktemp("corpus") / "prepared",
                                 {"central": 2, "balear": 1})


@pytest.fixture(scope="module")
def tokenized(corpus, snac_dir, text_tokenizer_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenized") / "tokenized"
    stage.tokenize(tokenize_options(corpus, out, snac_dir, text_tokenizer_file))
    return out


def tiny_orpheus_model(**overrides):
    """A randomly initialised Llama with Orpheus's vocabulary and a tiny everything else; no KV
    cache, as for training (a cache also turns off transformers' packed-sequence masks)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    assert ORPHEUS_VOCAB_SIZE > orpheus.AUDIO_TOKENS_END  # every audio token has an embedding
    torch.manual_seed(0)
    config = LlamaConfig(**{
        "vocab_size": ORPHEUS_VOCAB_SIZE, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 1024, "tie_word_embeddings": True, "use_cache": False,
        "pad_token_id": orpheus.PAD_TOKEN, "bos_token_id": orpheus.START_OF_TEXT,
        "eos_token_id": orpheus.END_OF_AI, **overrides})
    return LlamaForCausalLM(config)


def train(dataset, batch_size: int, out: Path, steps: int = 3) -> tuple[list[float], tuple]:
    """Train as Orpheus's finetune/train.py does (Trainer, default collator, unused columns
    removed); the logged losses and the shape of the first batch."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch_size,
                             max_steps=steps, learning_rate=1e-3, logging_steps=1,
                             report_to=[], use_cpu=True, save_strategy="no",
                             remove_unused_columns=True, dataloader_num_workers=0, seed=0,
                             disable_tqdm=True)
    trainer = Trainer(model=tiny_orpheus_model(), args=args, train_dataset=dataset)
    shape = tuple(next(iter(trainer.get_train_dataloader()))["input_ids"].shape)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, shape


def test_trainer_on_the_train_split_at_batch_size_1(tokenized, tmp_path):
    from datasets import load_dataset

    # train.py's own call: no config name. With the layout that has an `all` folder this is
    # the card's default config, `all`; where `all` is only defined in the card (the union of
    # the dialect files) the same call reads the same rows.
    dataset = load_dataset(str(tokenized), split="train", cache_dir=str(tmp_path / "cache"))
    assert dataset.num_rows >= 3 and len(set(map(len, dataset["input_ids"]))) > 1
    losses, shape = train(dataset, batch_size=1, out=tmp_path / "run")
    assert shape[0] == 1
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)


def test_trainer_on_packed_rows_at_batch_size_2(tokenized, tmp_path):
    from datasets import load_dataset

    dataset = load_dataset(str(tokenized), "packed", split="train",
                           cache_dir=str(tmp_path / "cache"))
    assert dataset.num_rows >= 2
    assert set(dataset.column_names) == set(packing.COLUMNS)
    losses, shape = train(dataset, batch_size=2, out=tmp_path / "run")
    assert shape == (2, PACK_LENGTH)
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)


def test_position_ids_keep_packed_examples_apart(tokenized, tmp_path):
    """Without attention_mask, transformers separates a row's examples by their position_ids:
    the row's loss is then exactly that of its examples run one by one (the labels mask each
    example's first token and the padding). With attention_mask, examples see each other.
    (The weights are drawn larger than usual so that attention visibly matters.)"""
    from datasets import load_dataset

    rows = load_dataset(str(tokenized), "packed", split="train",
                        cache_dir=str(tmp_path / "cache")).with_format("torch")
    row = next(r for r in rows if (r["position_ids"][r["attention_mask"] == 1] == 0).sum() > 1)
    model = tiny_orpheus_model(initializer_range=1.0).eval()
    real = int(row["attention_mask"].sum())
    starts = [int(i) for i in (row["position_ids"][:real] == 0).nonzero()] + [real]
    total, predicted = 0.0, 0
    with torch.no_grad():
        for start, end in zip(starts, starts[1:], strict=False):
            alone = row["input_ids"][start:end].unsqueeze(0).long()
            total += float(model(input_ids=alone, labels=alone).loss) * (end - start - 1)
            predicted += end - start - 1
        ids, labels = row["input_ids"].unsqueeze(0).long(), row["labels"].unsqueeze(0).long()
        separated = model(input_ids=ids, labels=labels,
                          position_ids=row["position_ids"].unsqueeze(0).long()).loss
        mixed = model(input_ids=ids, labels=labels,
                      attention_mask=row["attention_mask"].unsqueeze(0).long(),
                      position_ids=row["position_ids"].unsqueeze(0).long()).loss
    assert int((labels != -100).sum()) == predicted
    assert float(separated) == pytest.approx(total / predicted, rel=1e-5)
    assert float(mixed) != pytest.approx(total / predicted, rel=1e-4)


def test_packed_rows_match_transformers_flattening_collator(tokenized):
    """A packed row, padding cut off, is what DataCollatorWithFlattening makes of the same
    examples: same ids, same -100 on each first label, same restarting position_ids."""
    from transformers import DataCollatorWithFlattening

    path = next((tokenized / "data/packed").glob("train-*.parquet"))
    for row in pq.read_table(path).to_pylist():
        real = sum(row["attention_mask"])
        starts = [i for i in range(real) if row["position_ids"][i] == 0] + [real]
        features = [{"input_ids": row["input_ids"][a:b]} for a, b in zip(starts, starts[1:],
                                                                          strict=False)]
        flat = DataCollatorWithFlattening(return_tensors="np")(features)
        for column in ("input_ids", "labels", "position_ids"):
            assert flat[column][0].tolist() == row[column][:real]


# --- the stage side: --pack_length and the length budget -------------------------------------

def test_packed_config_statistics_and_card(tokenized, tmp_path):
    from datasets import load_dataset

    stats = json.loads((tokenized / TOKENIZATION_STATS_FILE).read_text())
    packed = stats["packed"]
    assert packed["pack_length"] == PACK_LENGTH and packed["seed"] == 42
    assert sorted(packed["splits"]) == ["train", "validation"]
    # the default config's examples, each exactly once (in any layout of the dialect configs)
    for split in ("train", "validation"):
        examples = load_dataset(str(tokenized), split=split, cache_dir=str(tmp_path / "cache"))
        assert packed["splits"][split]["examples"] == examples.num_rows > 0
        assert packed["splits"][split]["examples_skipped_too_long"] == 0
    assert 0 < packed["fill_ratio"] <= 1
    for path in (tokenized / "data/packed").glob("*.parquet"):
        for column in packing.COLUMNS:
            assert {len(v) for v in pq.read_table(path).column(column).to_pylist()} == {
                PACK_LENGTH}
    card = (tokenized / "README.md").read_text()
    assert "## Packed config" in card and "config_name: packed" in card
    assert f"rows of exactly {PACK_LENGTH} tokens" in card


def test_length_distribution_per_dialect(tokenized):
    stats = json.loads((tokenized / TOKENIZATION_STATS_FILE).read_text())
    for dialect in ("central", "balear"):
        summary = stats["dialects"][dialect]
        distribution = summary["sequence_length_distribution"]
        assert distribution["max"] == summary["max_sequence_length"]
        assert distribution["p50"] <= distribution["p90"] <= distribution["p99"] <= (
            distribution["max"])
        assert sum(distribution["histogram"].values()) == summary["rows"]
        assert distribution["rows_longer_than"] == {"2048": 0, "8192": 0}


def test_rerun_trusts_the_packed_config_and_resumes(tokenized, corpus, snac_dir,
                                                    text_tokenizer_file, monkeypatch):
    before = {p: p.read_bytes() for p in tokenized.rglob("*") if p.is_file()}

    def no_worker(*args, **kwargs):
        raise AssertionError("a finished shard was encoded again")

    monkeypatch.setattr(stage, "ShardTokenizer", no_worker)
    stage.tokenize(tokenize_options(corpus, tokenized, snac_dir, text_tokenizer_file))
    assert {p: p.read_bytes() for p in tokenized.rglob("*") if p.is_file()} == before


def warnings_of(function, *args, **kwargs) -> list[str]:
    """What ``function`` logs at WARNING on parla's tokenize logger."""
    with log_records("parla.tokenize", logging.WARNING) as records:
        function(*args, **kwargs)
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


def test_long_rows_are_warned_about():
    group = tokenize_worker.GroupStats(rows=3, sequence_lengths=[900, 2100, 9000])
    statistics = {"dialects": {"central": group.summary(24000, sequences=True)}}
    assert statistics["dialects"]["central"]["sequence_length_distribution"][
        "rows_longer_than"] == {"2048": 2, "8192": 1}
    warnings = warnings_of(stage.warn_long_rows, statistics, max_length=16384)
    assert len(warnings) == 2
    assert warnings[0].startswith("2 of 3 rows are longer than 2048 tokens (central 2)")
    # rows over 8192 were skipped with --max_length 8192: only the 2048 warning is left
    assert len(warnings_of(stage.warn_long_rows, statistics, max_length=8192)) == 1


def test_pack_length_is_an_option_of_the_cli_the_api_and_the_run():
    from parla import cli
    from parla.errors import UsageError
    from parla.stages.run import build_run_options

    args = cli.build_parser().parse_args(["tokenize", "--input_dir", "a", "--output_dir", "b",
                                          "--pack-length", "2048", "--seed", "7"])
    assert cli.tokenize_options_from_args(args) == TokenizeOptions("a", "b", pack_length=2048,
                                                                   seed=7)
    _, tokenize, _ = build_run_options({"output_dir": "p", "tokenize": True,
                                        "pack_length": 4096, "seed": 3})
    assert (tokenize.pack_length, tokenize.seed) == (4096, 3)  # one seed for the whole run
    with pytest.raises(UsageError, match="--pack_length must be >= 16"):
        TokenizeOptions("a", "b", pack_length=8)
    with pytest.raises(UsageError, match="--pack_length needs --format orpheus"):
        TokenizeOptions("a", "b", pack_length=2048, format="codes")
