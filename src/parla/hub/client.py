"""Dataset card and Hugging Face Hub upload.

The card (`README.md`) is rendered from the shards themselves, so its numbers always match the
data; the processing parameters it shows travel inside the card (an HTML comment the Hub does not
display), so `publish` can regenerate it without the stage that wrote it.

Publishing checks the token and the write access first, then uploads the folder with
huggingface_hub's resumable folder upload: a failed upload never touches the local data, and
running `parla publish` again finishes it. The token is read from ``HF_TOKEN`` or the stored
login, handed to huggingface_hub, and never printed, logged or written anywhere.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from parla.dialects import ALL_CONFIG, DIALECTS
from parla.errors import ParlaError, UsageError
from parla.options import PublishOptions
from parla.progress import get_logger
from parla.stages.pack import PACKED_CONFIG, read_packed_summary
from parla.store.files import write_text_atomic
from parla.store.shards import find_shards, shard_glob

log = get_logger("hub")

CARD_FILE = "README.md"
KINDS = ("prepared", "tokenized")
REPO_TYPE = "dataset"
# what an upload leaves out: half-written shards and huggingface_hub's own resume bookkeeping
UPLOAD_IGNORE_PATTERNS = ["*.tmp", ".cache/**", ".parla-write-test", ".parla_*", ".parla.lock"]
TOKENS_URL = "https://huggingface.co/settings/tokens"
_STAT_COLUMNS = ("speaker_id", "duration")
_STATE_RE = re.compile(r"^<!-- parla-card (?P<state>\{.*\}) -->$", re.MULTILINE)
_REPO_PLACEHOLDER = "<user>/<dataset>"

# huggingface_hub 2 talks to the Hub with no timeout at all: a Hub that accepts a request and
# never answers would hang `parla publish` for ever. PARLA_HUB_TIMEOUT (seconds) overrides the
# read timeout, for slow links; connecting and the quick reachability probe stay short.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 1.5
# 429 and 5xx on the calls parla makes itself are retried: waits double from 1 s, or follow the
# Hub's Retry-After; the upload's own requests are retried by huggingface_hub the same way
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
MAX_RETRIES = 4
MAX_RETRY_WAIT_S = 120.0
_sleep = time.sleep  # tests replace it to record the waits
_T = TypeVar("_T")

COMMON_VOICE_CITATION = """\
@inproceedings{commonvoice:2020,
  author = {Ardila, R. and Branson, M. and Davis, K. and Henretty, M. and Kohler, M. and
            Meyer, J. and Morais, R. and Saunders, L. and Tyers, F. M. and Weber, G.},
  title = {Common Voice: A Massively-Multilingual Speech Corpus},
  booktitle = {Proceedings of the 12th Conference on Language Resources and Evaluation
               (LREC 2020)},
  pages = {4211--4215},
  year = 2020
}"""

_COLUMN_NOTES = {
    "audio": "the clip: FLAC bytes (16-bit mono) and a file name",
    "text": "the training text, `<voice>: <sentence>` (the voice name selects the dialect)",
    "original_text": "the Common Voice sentence as read",
    "voice_name": "the dialect's voice name used as the text prefix",
    "dialect": "dialect id (one of the configs)",
    "speaker_id": "Common Voice `client_id` of the speaker",
    "gender": "speaker gender as given in Common Voice (may be empty)",
    "age": "speaker age range as given in Common Voice (may be empty)",
    "duration": "clip length in seconds",
    "source_path": "the clip's file name in the Common Voice release",
    "dnsmos_sig": "DNSMOS P.835 speech quality, 1-5 (prepare --dnsmos)",
    "dnsmos_bak": "DNSMOS P.835 background-noise quality, 1-5 (prepare --dnsmos)",
    "dnsmos_ovrl": "DNSMOS P.835 overall quality, 1-5 (prepare --dnsmos)",
    "input_ids": "Orpheus input ids: text tokens and SNAC audio tokens",
    "labels": "training labels (same as `input_ids`)",
    "attention_mask": "1 for every token",
    "codes_0": "SNAC codes of the coarsest level (one per frame)",
    "codes_1": "SNAC codes of the middle level (two per frame)",
    "codes_2": "SNAC codes of the finest level (four per frame)",
}


class HubAccessError(UsageError):
    """No token, a rejected token, or no write access: fixable by the user, found before work."""


class HubError(ParlaError):
    """The Hub failed or could not be reached; the local folder is left as it was."""


# --- statistics ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitStats:
    """Numbers of one config's split, computed from its shards."""

    config: str
    split: str
    rows: int
    speakers: int | None  # None: the shards have no speaker_id column
    seconds: float | None  # None: the shards have no duration column

    @property
    def hours(self) -> float | None:
        return None if self.seconds is None else self.seconds / 3600

    @property
    def mean_duration(self) -> float | None:
        if self.seconds is None or self.rows == 0:
            return None
        return self.seconds / self.rows


def split_stats(config: str, split: str, paths: Sequence[Path]) -> SplitStats:
    """Rows, speakers and seconds of one split, reading only its small columns."""
    rows, speakers, seconds = 0, set(), 0.0
    has_speakers = has_duration = True
    for path in paths:
        parquet = pq.ParquetFile(path)
        rows += parquet.metadata.num_rows
        names = set(parquet.schema_arrow.names)
        has_speakers &= "speaker_id" in names
        has_duration &= "duration" in names
        columns = [name for name in _STAT_COLUMNS if name in names]
        if not columns:
            continue
        table = parquet.read(columns=columns)
        if "speaker_id" in names:
            speakers.update(pc.unique(table.column("speaker_id")).to_pylist())
        if "duration" in names:
            # summed in float64: float32 sums drift over hundreds of thousands of clips
            total = pc.sum(table.column("duration").cast(pa.float64())).as_py()
            seconds += total or 0.0
    return SplitStats(config, split, rows, len(speakers) if has_speakers else None,
                      seconds if has_duration else None)


def _config_order(config: str) -> tuple[int, int, str]:
    if config == ALL_CONFIG:
        return (0, 0, config)
    known = list(DIALECTS)
    return (1, known.index(config), config) if config in known else (2, 0, config)


def folder_statistics(folder: str | os.PathLike) -> tuple[dict[str, dict[str, Any]],
                                                          list[SplitStats]]:
    """The `data_files` patterns and the numbers of every config and split found in a folder.

    Each clip is stored once, in its dialect's config; ``all`` is the union of the dialect
    configs' files, defined only in the card, so it costs no storage and no second encode.
    """
    shards = find_shards(folder)
    configs: dict[str, dict[str, Any]] = {}
    stats: list[SplitStats] = []
    dialects = [config for config in sorted(shards, key=_config_order) if config in DIALECTS]
    if dialects and ALL_CONFIG not in shards:
        for split in _ordered_splits({s for d in dialects for s in shards[d]}):
            members = [d for d in dialects if split in shards[d]]
            configs.setdefault(ALL_CONFIG, {})[split] = [shard_glob(d, split) for d in members]
            stats.append(split_stats(ALL_CONFIG, split,
                                     [p for d in members for p in shards[d][split]]))
    for config in sorted(shards, key=_config_order):
        for split in _ordered_splits(shards[config]):
            configs.setdefault(config, {})[split] = shard_glob(config, split)
            stats.append(split_stats(config, split, shards[config][split]))
    return configs, stats


def _ordered_splits(splits: Iterable[str]) -> list[str]:
    return sorted(splits, key=lambda s: (s != "train", s != "validation", s))


def _first_schema(folder: Path) -> list[tuple[str, str]]:
    """Columns of the first shard of the examples' configs (`packed` has its own section)."""
    shards = find_shards(folder)
    for splits in [s for c, s in shards.items() if c != PACKED_CONFIG] or shards.values():
        for paths in splits.values():
            schema = pq.read_schema(paths[0])
            return [(field.name, str(field.type)) for field in schema]
    return []


# --- the card --------------------------------------------------------------------------------

def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket of a row count."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
              (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
              (1_000_000_000, "100M<n<1B")]
    for bound, label in bounds:
        if rows < bound:
            return label
    return "n>1B"


def _pretty_name(kind: str, parameters: Mapping[str, Any]) -> str:
    if kind == "tokenized":
        return "Common Voice 23 Catalan dialects: Orpheus TTS tokens (SNAC)"
    rate = parameters.get("target_sample_rate")
    rate_text = f", {rate / 1000:g} kHz" if isinstance(rate, (int, float)) else ""
    return f"Common Voice 23 Catalan dialects for TTS{rate_text}"


def _flatten(parameters: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in parameters.items():
        if isinstance(value, Mapping):
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value) or "none"
    return str(value).replace("|", "\\|")


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _metadata(configs: Mapping[str, Mapping[str, str]], total_rows: int, kind: str,
              parameters: Mapping[str, Any]) -> dict[str, Any]:
    config_entries = []
    for config, splits in configs.items():
        entry: dict[str, Any] = {"config_name": config}
        if config == ALL_CONFIG:
            entry["default"] = True
        entry["data_files"] = [{"split": split, "path": pattern}
                               for split, pattern in splits.items()]
        config_entries.append(entry)
    tags = ["common-voice", "catalan", "dialects", "speech"]
    if kind == "tokenized":
        tags += ["snac", "orpheus"]
    return {
        "language": ["ca"],
        "license": "cc0-1.0",
        "pretty_name": _pretty_name(kind, parameters),
        "task_categories": ["text-to-speech"],
        "size_categories": [size_category(total_rows)],
        "tags": tags,
        "configs": config_entries,
    }


def _total_rows(table_rows: Sequence[SplitStats]) -> int:
    combined = [s.rows for s in table_rows if s.config == ALL_CONFIG]
    return sum(combined) if combined else sum(s.rows for s in table_rows)


def _state_comment(kind: str, parameters: Mapping[str, Any]) -> str:
    state = json.dumps({"kind": kind, "parameters": parameters}, ensure_ascii=True,
                       sort_keys=False, default=str)
    # "--" may not appear inside an HTML comment; the JSON escape "\u002d" decodes back to "-"
    state = state.replace("--", "-\\u002d")
    return f"<!-- parla-card {state} -->"


def read_card_state(text: str) -> tuple[str, dict[str, Any]] | None:
    """(kind, parameters) stored in a card parla wrote, or None for any other README."""
    match = _STATE_RE.search(text)
    if match is None:
        return None
    try:
        state = json.loads(match["state"])
    except json.JSONDecodeError:
        return None
    if not isinstance(state, dict) or state.get("kind") not in KINDS:
        return None
    return state["kind"], dict(state.get("parameters") or {})


def render_card(configs: Mapping[str, Mapping[str, str]], table_rows: Sequence[SplitStats],
                parameters: Mapping[str, Any], kind: str, *, repo_id: str | None = None,
                columns: Sequence[tuple[str, str]] = (),
                packed: Mapping[str, Any] | None = None, report: str | None = None) -> str:
    """The dataset card's text: YAML metadata (configs and splits) and a body made for people.

    ``configs`` maps config -> split -> data_files pattern; ``table_rows`` are the numbers shown;
    ``columns`` are (name, type) of the shards; ``packed`` the `packed` config's numbers
    (`packing.read_packed_summary`); ``report`` is `report.card_summary`'s markdown.
    Pure: same inputs, same text.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown card kind {kind!r}; expected one of {', '.join(KINDS)}")
    metadata = _metadata(configs, _total_rows(table_rows), kind, parameters)
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000)
    repo = repo_id or _REPO_PLACEHOLDER
    dialect_configs = [c for c in configs if c not in (ALL_CONFIG, PACKED_CONFIG)]
    example = ("central" if "central" in dialect_configs
               else dialect_configs[0] if dialect_configs else ALL_CONFIG)
    lines = [f"# {metadata['pretty_name']}", ""]
    lines += _intro(kind, parameters, dialect_configs)
    has_validation = "validation" in configs.get(ALL_CONFIG, {})
    splits_text = ("`train` and `validation` splits that share no speaker" if has_validation
                   else "a `train` split")
    combined = (f", and `{ALL_CONFIG}`: every dialect together, the default config, so "
                f"`load_dataset(repo, split=\"train\")` gives every dialect. Each clip is "
                f"stored once; `{ALL_CONFIG}` lists the dialects' files"
                ) if ALL_CONFIG in configs else ""
    lines += ["", "## Configs and statistics", "",
              f"One config per dialect, with {splits_text}{combined}. Rows are grouped by "
              "dialect and speaker, not shuffled: shuffle when training (transformers' "
              "`Trainer` does). The numbers are computed from the data files.", "",
              "| config | dialect | split | rows | speakers | hours | mean duration (s) |",
              "|---|---|---|---:|---:|---:|---:|"]
    for stats in table_rows:
        dialect = DIALECTS[stats.config].display_name if stats.config in DIALECTS else (
            "all dialects" if stats.config == ALL_CONFIG
            else "all dialects, packed" if stats.config == PACKED_CONFIG else stats.config)
        speakers = "—" if stats.speakers is None else str(stats.speakers)
        lines.append(f"| {stats.config} | {dialect} | {stats.split} | {stats.rows} | "
                     f"{speakers} | {_number(stats.hours, 3)} | "
                     f"{_number(stats.mean_duration, 2)} |")
    if packed is not None:
        lines += _packed_section(packed)
    if report:
        lines += ["", report]
    if columns:
        lines += ["", "## Columns", ""]
        for name, dtype in columns:
            note = _COLUMN_NOTES.get(name)
            lines.append(f"- `{name}` ({dtype})" + (f": {note}" if note else ""))
    lines += ["", "## Processing parameters", ""]
    lines += _tokenization_notes(parameters) if kind == "tokenized" else []
    flat = _flatten(parameters)
    if flat:
        lines += ["| parameter | value |", "|---|---|"]
        lines += [f"| `{name}` | {_format_value(value)} |" for name, value in flat]
    else:
        lines.append("Not recorded.")
    lines += ["", "## How to load it", "", "```python", "from datasets import load_dataset", "",
              f'ds = load_dataset("{repo}", "{example}")  # one dialect',
              f'ds = load_dataset("{repo}", split="train")  # every dialect (the default config)',
              f'ds = load_dataset("{repo}", "{ALL_CONFIG}")  # every dialect: train + validation',
              *([f'ds = load_dataset("{repo}", "{PACKED_CONFIG}")  # rows of '
                 f'{packed["pack_length"]} tokens: batch size > 1'] if packed is not None else []),
              "```"]
    if kind == "prepared":
        lines += ["", "Decoding `audio` to arrays needs `torchcodec` (datasets 4 and later); to "
                  "read the FLAC bytes without it: "
                  "`ds = ds.cast_column(\"audio\", datasets.Audio(decode=False))`."]
    lines += ["", "## License and citation", "",
              "Derived from [Mozilla Common Voice](https://commonvoice.mozilla.org/) "
              "(CC0-1.0); this dataset is released under the same license. Do not try to "
              "identify the speakers. Please cite Common Voice:", "", "```bibtex",
              COMMON_VOICE_CITATION, "```", "",
              "Made with [parla](https://github.com/xaviviro/parla); this card is regenerated "
              "from the data whenever the folder changes: do not edit it by hand.", "",
              _state_comment(kind, parameters), ""]
    return f"---\n{front}---\n\n" + "\n".join(lines)


def _intro(kind: str, parameters: Mapping[str, Any], dialects: Sequence[str]) -> list[str]:
    names = ", ".join(DIALECTS[d].display_name if d in DIALECTS else d for d in dialects)
    rate = parameters.get("target_sample_rate")
    audio = f"{rate} Hz" if rate else "the target sample rate"
    text = ("Catalan speech from Mozilla Common Voice, grouped by dialect"
            + (f" ({names})" if names else "")
            + ", filtered and balanced across speakers for text-to-speech training. ")
    if kind == "prepared":
        text += (f"Every clip was decoded, resampled to {audio} mono and stored as FLAC; its "
                 "text starts with the dialect's voice name (`central: Bon dia.`) so that a "
                 "TTS model can be conditioned on the dialect.")
    else:
        text += ("The clips were encoded with the SNAC neural audio codec and laid out with "
                 "their text as token sequences ready for training Orpheus TTS.")
    return [text]


def _packed_section(packed: Mapping[str, Any]) -> list[str]:
    from parla.tokens.orpheus import PAD_TOKEN  # numpy only

    n = packed["pack_length"]
    lines = ["", "## Packed config", "",
             f"`packed` holds the same examples as whole sequences concatenated into rows of "
             f"exactly {n} tokens (seed {packed['seed']}), so that transformers' default "
             "collator can batch them at any batch size. Columns: `input_ids` (the examples, "
             f"then {PAD_TOKEN} up to {n}), `labels` (-100 on the padding and on each example's "
             "first token), `attention_mask` (0 on the padding) and `position_ids` (restarting "
             "at 0 for every example). Use one of the last two: without `attention_mask`, "
             "transformers keeps the examples of a row apart by their `position_ids` "
             "(flash-attention 2 at batch size 1; sdpa and eager at any, with `use_cache` "
             "off); without `position_ids`, each example attends to those before it in its "
             "row, as in Orpheus's pretraining. See parla's docs/TRAINING.md.", "",
             "| split | rows | examples | examples per row (mean, min–max) | fill ratio | "
             f"examples over {n} tokens (skipped) |", "|---|---:|---:|---:|---:|---:|"]
    for split, numbers in packed["splits"].items():
        per_row = numbers["examples_per_row"]
        spread = (f"{per_row['mean']:.2f} ({per_row['min']}–{per_row['max']})"
                  if per_row["mean"] is not None else "—")
        fill = _number(None if numbers["fill_ratio"] is None else 100 * numbers["fill_ratio"], 1)
        lines.append(f"| {split} | {numbers['rows']} | {numbers['examples']} | {spread} | "
                     f"{fill}{'' if fill == '—' else ' %'} | "
                     f"{numbers['examples_skipped_too_long']} |")
    return lines


def _tokenization_notes(parameters: Mapping[str, Any]) -> list[str]:
    from parla.tokens import orpheus  # numpy only

    snac = parameters.get("snac_model", "not recorded")
    tokenizer = parameters.get("text_tokenizer", "not recorded")
    layout = parameters.get("format", "orpheus")
    text = (f"Audio codec: `{snac}` (SNAC 24 kHz: per frame 1 + 2 + 4 codes over 3 levels). "
            f"Text tokenizer: `{tokenizer}`. Layout: `{layout}`")
    if layout == "orpheus":
        text += (f". `input_ids` = start-of-human ({orpheus.START_OF_HUMAN}), the text tokens "
                 f"(from begin-of-text {orpheus.START_OF_TEXT}), end-of-text "
                 f"({orpheus.END_OF_TEXT}), end-of-human ({orpheus.END_OF_HUMAN}), start-of-AI "
                 f"({orpheus.START_OF_AI}), start-of-speech ({orpheus.START_OF_SPEECH}), 7 audio "
                 f"tokens per SNAC frame (codes `c0[i], c1[2i], c2[4i], c2[4i+1], c1[2i+1], "
                 f"c2[4i+2], c2[4i+3]`, position k shifted by {orpheus.AUDIO_TOKENS_START} + "
                 f"k × {orpheus.CODEBOOK_SIZE}), end-of-speech ({orpheus.END_OF_SPEECH}), "
                 f"end-of-AI ({orpheus.END_OF_AI}).")
    else:
        text += ": the SNAC codes of each clip, one column per level."
    return [text, ""]


def _report_summary(folder: Path, repo_id: str | None) -> str | None:
    """The card's report section, when the folder has report.html and its statistics."""
    from parla.report.page import REPORT_FILE, card_summary
    from parla.report.statistics import STATISTICS_FILE

    statistics = folder / STATISTICS_FILE
    if not (folder / REPORT_FILE).is_file() or not statistics.is_file():
        return None
    return card_summary(json.loads(statistics.read_text(encoding="utf-8")), repo_id)


def card_text(folder: Path, kind: str, parameters: Mapping[str, Any],
              repo_id: str | None = None) -> str:
    """The card of ``folder`` as its shards (and packed config, and report) say now."""
    configs, table_rows = folder_statistics(folder)
    if not configs:
        raise UsageError(f"no shards under {folder / 'data'}: nothing to describe")
    return render_card(configs, table_rows, dict(parameters), kind, repo_id=repo_id,
                       columns=_first_schema(folder), packed=read_packed_summary(folder),
                       report=_report_summary(folder, repo_id))


def write_dataset_card(folder: str | os.PathLike, *, kind: str, parameters: Mapping[str, Any],
                       repo_id: str | None = None) -> Path:
    """Write ``<folder>/README.md`` from the shards found there; stages call this last."""
    folder = Path(folder)
    text = card_text(folder, kind, parameters, repo_id)
    path = folder / CARD_FILE
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return path


def updated_card(folder: str | os.PathLike, repo_id: str | None = None) -> str | None:
    """The text a parla card of ``folder`` should hold now (regenerated from the current shards,
    naming the repo in its examples), or None for a README that parla did not write.

    A missing card is made with the kind guessed from the columns and no recorded parameters.
    """
    folder = Path(folder)
    path = folder / CARD_FILE
    if path.is_file():
        state = read_card_state(path.read_text(encoding="utf-8"))
        if state is None:
            return None
        kind, parameters = state
    else:
        names = {name for name, _ in _first_schema(folder)}
        kind, parameters = ("tokenized" if "input_ids" in names else "prepared"), {}
    return card_text(folder, kind, parameters, repo_id)


def refresh_dataset_card(folder: str | os.PathLike, repo_id: str | None = None) -> Path | None:
    """Regenerate a parla card in ``folder`` (see `updated_card`); a README that parla did not
    write is left alone (returns None)."""
    folder = Path(folder)
    text = updated_card(folder, repo_id)
    if text is None:
        log.warning("%s was not written by parla; leaving it as it is", folder / CARD_FILE)
        return None
    path = folder / CARD_FILE
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return path


# --- talking to the Hub ----------------------------------------------------------------------

def hub_endpoint() -> str:
    """``HF_ENDPOINT`` read now (huggingface_hub reads it only once, at import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def read_timeout() -> float:
    try:
        return float(os.environ.get("PARLA_HUB_TIMEOUT") or READ_TIMEOUT_S)
    except ValueError:
        raise UsageError(f"PARLA_HUB_TIMEOUT={os.environ['PARLA_HUB_TIMEOUT']!r} is not a "
                         "number of seconds") from None


_factory_timeout: float | None = None


class HubStoppedAnswering(Exception):
    """A request the Hub accepted and did not answer within the read timeout (not one of the
    HTTP client's own errors, so huggingface_hub does not send it again)."""


def use_timeouts() -> None:
    """Make huggingface_hub's shared HTTP client time out (connect, then each read)."""
    global _factory_timeout
    timeout = read_timeout()
    if _factory_timeout == timeout:
        return
    from huggingface_hub.utils import _http

    if not hasattr(_http, "set_client_factory"):
        return  # huggingface_hub < 1 (requests): it sets its own timeouts
    try:
        httpx = importlib.import_module("httpx2")
    except ImportError:
        httpx = importlib.import_module("httpx")

    class NoSilentRetries(httpx.BaseTransport):
        """A POST (preupload, commit) the Hub took and never answered is not sent again:
        huggingface_hub would retry it five times, six read timeouts of silence, and the Hub may
        have acted on it; parla reports it once and a rerun finishes the upload."""

        def __init__(self) -> None:
            self._inner = httpx.HTTPTransport()

        def handle_request(self, request: Any) -> Any:
            try:
                return self._inner.handle_request(request)
            except httpx.ReadTimeout as error:
                if request.method != "POST":
                    raise
                raise HubStoppedAnswering(str(error) or "read timeout") from error

        def close(self) -> None:
            self._inner.close()

    def client_factory() -> Any:
        return httpx.Client(event_hooks={"request": [_http.hf_request_event_hook]},
                            follow_redirects=True, transport=NoSilentRetries(),
                            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S))

    _http.set_client_factory(client_factory)
    _factory_timeout = timeout


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be reached now, or None if it can (or a proxy stands in the way).

    One TCP connection, answered in about a second: offline, the HTTP clients' own retries take
    25 s or more before they give up.
    """
    from urllib.parse import urlsplit

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                            "http_proxy", "ALL_PROXY", "all_proxy")):
        return None  # only the proxy knows
    url = urlsplit(hub_endpoint())
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error.strerror or str(error) or type(error).__name__)

    thread = threading.Thread(target=connect, daemon=True, name="parla-hub-probe")
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer in {timeout:g} s"


def _api(token: str) -> Any:
    from huggingface_hub import HfApi

    use_timeouts()
    return HfApi(endpoint=hub_endpoint(), token=token, library_name="parla")


def _retry_wait(error: BaseException, attempt: int) -> float | None:
    """Seconds to wait before trying a failed call again, or None when it should not be."""
    if _status(error) not in RETRY_STATUSES or attempt > MAX_RETRIES:
        return None
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
    if retry_after is not None and str(retry_after).strip().isdigit():
        return min(float(retry_after), MAX_RETRY_WAIT_S)
    return min(2.0 ** (attempt - 1), MAX_RETRY_WAIT_S)


def _with_retries(call: Callable[[], _T], doing: str) -> _T:
    """``call()``, tried again after a 429 or a 5xx (Retry-After honoured)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except _network_errors() as error:
            wait = _retry_wait(error, attempt)
            if wait is None:
                raise
            log.info("the Hub answered HTTP %s while %s; trying again in %g s (%d of %d)",
                     _status(error), doing, wait, attempt, MAX_RETRIES)
            _sleep(wait)


@contextlib.contextmanager
def _quiet_hub_library() -> Iterator[None]:
    """huggingface_hub logs each retry as a raw warning line; parla says what failed itself."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _resolve_token(token: str | None, repo_id: str) -> str:
    from huggingface_hub import constants, get_token

    from parla.tokens.codec import (
        hub_offline,  # no torch: codec imports it only where a model is loaded
    )

    if getattr(constants, "HF_HUB_OFFLINE", False) or hub_offline():
        raise HubAccessError(f"HF_HUB_OFFLINE is set, so {repo_id} cannot be uploaded; unset it "
                             "to publish")
    token = token or get_token()
    if not token:
        raise HubAccessError(f"not logged in to the Hugging Face Hub, which uploading to "
                             f"{repo_id} needs: set HF_TOKEN or run `hf auth login` (a token "
                             f"with write access, from {TOKENS_URL})")
    return token


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a failed Hub call raises: HfHubHTTPError and ConnectionError are OSErrors; the HTTP
    client's transport errors (httpx2 in huggingface_hub 2, requests before) are named here."""
    errors: list[type[BaseException]] = [OSError, HubStoppedAnswering,
                                         *_malformed_reply_errors()]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("hf_xet", "XetAuthenticationError"),
                         ("hf_xet", "XetObjectNotFoundError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _malformed_reply_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises on a reply it cannot parse (a bad ``commitUrl``: HfUriError;
    JSON that is not JSON, or lacks a key)."""
    errors: list[type[BaseException]] = [json.JSONDecodeError, KeyError]
    try:
        from huggingface_hub.errors import HfUriError

        errors.append(HfUriError)
    except ImportError:
        pass
    return tuple(errors)


def _timeout_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [TimeoutError, socket.timeout, HubStoppedAnswering]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TimeoutException)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _scrub(message: str, token: str | None) -> str:
    return message.replace(token, "***") if token else message


def _failure(error: BaseException, doing: str, repo_id: str, token: str | None
             ) -> HubAccessError | HubError:
    """One clear message per kind of failure (never the token)."""
    status = _status(error)
    if status == 401:
        return HubAccessError(
            f"the Hub rejected the Hugging Face token (HTTP 401) while {doing}: it is invalid or "
            f"expired; set HF_TOKEN to a valid token or run `hf auth login --force`")
    if status == 403:
        return HubAccessError(
            f"the Hub refused write access to dataset {repo_id} (HTTP 403) while {doing}: use a "
            f"token with write access to it ({TOKENS_URL}) or another --repo_id")
    if status == 429:
        return HubError(f"the Hub kept rate-limiting parla (HTTP 429) while {doing}, after "
                        f"{MAX_RETRIES} retries; wait a few minutes and try again")
    if status is not None and status >= 500:
        return HubError(f"the Hub had a server error (HTTP {status}) while {doing}; the "
                        f"problem is on the Hub's side, try again later")
    if status is not None:
        detail = getattr(error, "server_message", None) or ""
        return HubError(_scrub(f"the Hub answered HTTP {status} while {doing}"
                               + (f": {detail}" if detail else ""), token))
    from huggingface_hub.utils import OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return HubAccessError("HF_HUB_OFFLINE is set: unset it to publish")
    if isinstance(error, _timeout_errors()):
        return HubError(f"the Hub at {hub_endpoint()} stopped answering while {doing} (no "
                        f"reply within {read_timeout():g} s; PARLA_HUB_TIMEOUT sets the wait)")
    if isinstance(error, _malformed_reply_errors()):
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return HubError(_scrub(f"the Hub sent a reply parla cannot read while {doing} "
                               f"({type(error).__name__}: {first[:200]})", token))
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return HubError(_scrub(f"no answer from the Hub at {hub_endpoint()} while {doing} "
                           f"({reason})", token))


def _can_create_in(namespace: str, identity: Mapping[str, Any]) -> bool:
    if namespace == identity.get("name"):
        return True
    for org in identity.get("orgs") or []:
        if org.get("name") == namespace:
            return org.get("roleInOrg", "write") not in ("read",)
    return False


def check_write_access(repo_id: str, token: str | None = None) -> str:
    """Fail fast: the token exists, is valid, and may write (or create) dataset ``repo_id``.

    Returns the user name. Raises HubAccessError (fixable by the user) or HubError (the Hub is
    down or unreachable).
    """
    PublishOptions(folder=".", repo_id=repo_id)  # the repo id's shape, as one clear UsageError
    token = _resolve_token(token, repo_id)
    unreachable = hub_unreachable()
    if unreachable:
        raise HubError(f"no answer from the Hub at {hub_endpoint()} while checking the login "
                       f"({unreachable}); check the network, or HF_ENDPOINT")
    api = _api(token)
    try:
        with _quiet_hub_library():
            identity = _with_retries(lambda: api.whoami(token=token), "checking the login")
    except _network_errors() as error:
        raise _failure(error, "checking the login", repo_id, token) from None
    user = str(identity.get("name", "?"))
    role = ((identity.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubAccessError(f"the Hugging Face token of {user} is read-only; create one with "
                             f"write access at {TOKENS_URL} and set HF_TOKEN to it")
    try:
        with _quiet_hub_library():
            _with_retries(lambda: api.auth_check(repo_id, repo_type=REPO_TYPE, token=token,
                                                 write=True),
                          f"checking write access to {repo_id}")
        return user
    except _network_errors() as error:
        if _status(error) not in (401, 404):
            raise _failure(error, f"checking write access to {repo_id}", repo_id, token) from None
    # the repo does not exist (or is invisible to this user): it will be created, so the
    # namespace must be the user's own or one of their organisations
    namespace = repo_id.split("/")[0]
    if not _can_create_in(namespace, identity):
        raise HubAccessError(f"dataset {repo_id} does not exist and {user} cannot create "
                             f"datasets under '{namespace}' (not the user name or one of its "
                             f"organisations with write access)")
    return user


def _upload(api: Any, options: PublishOptions, folder: Path, token: str) -> None:
    upload_large_folder = getattr(api, "upload_large_folder", None)
    if upload_large_folder is not None:
        # huggingface_hub < 2: the resumable, parallel uploader is a separate method
        upload_large_folder(repo_id=options.repo_id, folder_path=folder, repo_type=REPO_TYPE,
                            revision=options.revision, private=options.private,
                            ignore_patterns=UPLOAD_IGNORE_PATTERNS,
                            num_workers=options.num_workers)
        return
    # huggingface_hub >= 2: upload_folder itself streams the files (hf_xet), commits in batches
    # and skips what is already on the Hub when run again
    api.upload_folder(repo_id=options.repo_id, folder_path=folder, repo_type=REPO_TYPE,
                      revision=options.revision, token=token,
                      ignore_patterns=list(UPLOAD_IGNORE_PATTERNS),
                      commit_message=options.commit_message or "Upload corpus with parla")


@contextlib.contextmanager
def _staged(folder: Path, card: str | None) -> Iterator[Path]:
    """What to upload: ``folder`` itself, or (with a new card) a temporary tree of links to its
    files plus the card, so that a failed upload leaves the user's folder exactly as it was."""
    if card is None or (folder / CARD_FILE).is_file() and \
            (folder / CARD_FILE).read_text(encoding="utf-8") == card:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="parla-publish-") as tmp:
        stage = Path(tmp)
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_dir() or relative == Path(CARD_FILE) or relative.parts[0] == ".cache":
                continue
            (stage / relative).parent.mkdir(parents=True, exist_ok=True)
            (stage / relative).symlink_to(path.resolve())
        (stage / CARD_FILE).write_text(card, encoding="utf-8")
        yield stage


def publish(options: PublishOptions, token: str | None = None) -> str:
    """Upload a prepared or tokenized folder (card regenerated first); returns the dataset URL.

    Creates the dataset repo if missing. Any failure raises one HubAccessError/HubError saying
    what failed and how to finish; the local folder is not changed (the regenerated card is
    written into it only once the upload succeeded), and publishing it again finishes the upload.
    """
    folder = Path(options.folder).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    if not find_shards(folder):
        raise UsageError(f"no shards under {folder / 'data'}: nothing to publish (run "
                         f"`parla prepare` first)")
    token = _resolve_token(token, options.repo_id)
    user = check_write_access(options.repo_id, token)
    card = updated_card(folder, options.repo_id)
    if card is None:
        log.warning("%s was not written by parla; uploading it unchanged", folder / CARD_FILE)
    api = _api(token)
    url = f"{hub_endpoint()}/datasets/{options.repo_id}"
    log.info("uploading %s to %s as %s", folder, url, user)
    with contextlib.ExitStack() as stack:
        upload_from = stack.enter_context(_staged(folder, card))  # a local failure: not the Hub's
        stack.enter_context(_quiet_hub_library())
        _upload_steps(api, options, upload_from, token, folder)
    if card is not None:
        refresh_dataset_card(folder, options.repo_id)  # the local card now matches the Hub's
    log.info("published %s", url)
    return url


def _upload_steps(api: Any, options: PublishOptions, upload_from: Path, token: str,
                  folder: Path) -> None:
    """Create the repo (and branch), then upload; a failure is one HubError naming the step."""
    doing = f"creating the repo {options.repo_id}"
    try:
        _with_retries(lambda: api.create_repo(options.repo_id, repo_type=REPO_TYPE,
                                              private=options.private, exist_ok=True,
                                              token=token), doing)
        if options.revision and not options.revision.startswith("refs/"):
            doing = f"creating the branch {options.revision} of {options.repo_id}"
            _with_retries(lambda: api.create_branch(options.repo_id, branch=options.revision,
                                                    repo_type=REPO_TYPE, exist_ok=True,
                                                    token=token), doing)
        doing = f"uploading {folder} to {options.repo_id}"
        _upload(api, options, upload_from, token)
    except _network_errors() as error:
        failure = _failure(error, doing, options.repo_id, token)
        revision = f" --revision {options.revision}" if options.revision else ""
        resume = (f"; the local folder is intact: run `parla publish {folder} --repo_id "
                  f"{options.repo_id}{revision}` again to finish (files already uploaded are "
                  f"not sent again)")
        raise type(failure)(f"{failure}{resume}") from None
