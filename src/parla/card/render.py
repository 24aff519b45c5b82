"""The dataset card's text (README.md), rendered from plain numbers: YAML configs for the Hub and
a body for people. Pure: the same inputs give the same text.

The processing parameters travel inside the card (an HTML comment the Hub does not display), so
`publish` can regenerate it without the stage that wrote it (`read_card_state`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from parla.dialects import ALL_CONFIG, DIALECTS
from parla.errors import UsageError
from parla.store.layout import PACKED_CONFIG, REPORT_DIR, REPORT_FILE

KINDS = ("prepared", "tokenized")


_STATE_RE = re.compile(r"^<!-- parla-card (?P<state>\{.*\}) -->$", re.MULTILINE)


_REPO_PLACEHOLDER = "<user>/<dataset>"


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


def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket of a row count."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
              (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
              (1_000_000_000, "100M<n<1B")]
    for bound, label in bounds:
        if rows < bound:
            return label
    return "n>1B"


# English names of a few Common Voice locales, for the card's title and tags (else the code)
LANGUAGE_NAMES = {"ca": "Catalan", "cy": "Welsh", "de": "German", "en": "English", "es": "Spanish",
                  "eu": "Basque", "fr": "French", "gl": "Galician", "it": "Italian",
                  "nl": "Dutch", "pt": "Portuguese", "ru": "Russian", "zh-CN": "Chinese"}


# the card parameter naming each config's group (display and voice names) where the groups are
# not the built-in Catalan dialects
GROUPS_KEY = "config_groups"


def _language(parameters: Mapping[str, Any]) -> str:
    return str(parameters.get("language") or "ca")


def _group_names(parameters: Mapping[str, Any]) -> dict[str, str] | None:
    """Group id -> display name of a run that is not the built-in Catalan dialects, else None."""
    groups = parameters.get(GROUPS_KEY)
    if not isinstance(groups, Mapping):
        return None
    return {gid: str((entry or {}).get("display_name") or gid) for gid, entry in groups.items()}


def _display_name(config: str, parameters: Mapping[str, Any]) -> str:
    names = _group_names(parameters)
    if names is not None:
        return names.get(config, config)
    return DIALECTS[config].display_name if config in DIALECTS else config


def _pretty_name(kind: str, parameters: Mapping[str, Any]) -> str:
    if _group_names(parameters) is not None:
        language = LANGUAGE_NAMES.get(_language(parameters), _language(parameters))
        what = ": Orpheus TTS tokens (SNAC)" if kind == "tokenized" else " for TTS"
        return f"Common Voice {language}, by {_grouped_by(parameters)}{what}"
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
    if _group_names(parameters) is not None:
        language = _language(parameters)
        tags = ["common-voice", LANGUAGE_NAMES.get(language, language).lower(),
                _grouped_by(parameters), "speech"]
    if kind == "tokenized":
        tags += ["snac", "orpheus"]
    return {
        "language": [_language(parameters)],
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
    dialect_configs = [c for c in configs if c not in (ALL_CONFIG, PACKED_CONFIG)]
    lines = [f"# {metadata['pretty_name']}", ""]
    lines += _intro(kind, parameters, dialect_configs)
    lines += _configs_section(configs, table_rows, parameters)
    if packed is not None:
        lines += _packed_section(packed)
    if report:
        lines += ["", report]
    lines += _columns_section(columns)
    lines += _parameters_section(kind, parameters)
    lines += _loading_section(repo_id or _REPO_PLACEHOLDER, kind, dialect_configs, packed)
    lines += _license_section(kind, parameters)
    return f"---\n{front}---\n\n" + "\n".join(lines)


def _grouped_by(parameters: Mapping[str, Any]) -> str:
    """What the groups are, in the card's words: dialects, accents, variants."""
    by = parameters.get("group_by")
    return {"accents": "accent", "variant": "variant", "none": "language"}.get(str(by), "group")


def _configs_section(configs: Mapping[str, Mapping[str, str]],
                     table_rows: Sequence[SplitStats],
                     parameters: Mapping[str, Any] | None = None) -> list[str]:
    parameters = parameters or {}
    noun = "dialect" if _group_names(parameters) is None else "group"
    has_validation = "validation" in configs.get(ALL_CONFIG, {})
    splits_text = ("`train` and `validation` splits that share no speaker" if has_validation
                   else "a `train` split")
    combined = (f", and `{ALL_CONFIG}`: every {noun} together, the default config, so "
                f"`load_dataset(repo, split=\"train\")` gives every {noun}. Each clip is "
                f"stored once; `{ALL_CONFIG}` lists the {noun}s' files"
                ) if ALL_CONFIG in configs else ""
    lines = ["", "## Configs and statistics", "",
             f"One config per {noun}, with {splits_text}{combined}. Rows are grouped by "
             f"{noun} and speaker, not shuffled: shuffle when training (transformers' "
             "`Trainer` does). The numbers are computed from the data files.", "",
             f"| config | {noun} | split | rows | speakers | hours | mean duration (s) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for stats in table_rows:
        dialect = (f"all {noun}s" if stats.config == ALL_CONFIG
                   else f"all {noun}s, packed" if stats.config == PACKED_CONFIG
                   else _display_name(stats.config, parameters))
        speakers = "—" if stats.speakers is None else str(stats.speakers)
        lines.append(f"| {stats.config} | {dialect} | {stats.split} | {stats.rows} | "
                     f"{speakers} | {_number(stats.hours, 3)} | "
                     f"{_number(stats.mean_duration, 2)} |")
    return lines


def _columns_section(columns: Sequence[tuple[str, str]]) -> list[str]:
    if not columns:
        return []
    lines = ["", "## Columns", ""]
    for name, dtype in columns:
        note = _COLUMN_NOTES.get(name)
        lines.append(f"- `{name}` ({dtype})" + (f": {note}" if note else ""))
    return lines


def _parameters_section(kind: str, parameters: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Processing parameters", ""]
    lines += _tokenization_notes(parameters) if kind == "tokenized" else []
    # the groups' names and voices are in the intro and the configs' table
    flat = _flatten({key: value for key, value in parameters.items() if key != GROUPS_KEY})
    if not flat:
        return [*lines, "Not recorded."]
    return [*lines, "| parameter | value |", "|---|---|",
            *(f"| `{name}` | {_format_value(value)} |" for name, value in flat)]


def _loading_section(repo: str, kind: str, dialect_configs: Sequence[str],
                     packed: Mapping[str, Any] | None) -> list[str]:
    example = ("central" if "central" in dialect_configs
               else dialect_configs[0] if dialect_configs else ALL_CONFIG)
    lines = ["", "## How to load it", "", "```python", "from datasets import load_dataset", "",
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
    return lines


def _license_section(kind: str, parameters: Mapping[str, Any]) -> list[str]:
    return ["", "## License and citation", "",
            "Derived from [Mozilla Common Voice](https://commonvoice.mozilla.org/) "
            "(CC0-1.0); this dataset is released under the same license. Do not try to "
            "identify the speakers. Please cite Common Voice:", "", "```bibtex",
            COMMON_VOICE_CITATION, "```", "",
            "Made with [parla](https://github.com/xaviviro/parla); this card is regenerated "
            "from the data whenever the folder changes: do not edit it by hand.", "",
            _state_comment(kind, parameters), ""]


def _intro(kind: str, parameters: Mapping[str, Any], dialects: Sequence[str]) -> list[str]:
    if _group_names(parameters) is not None:
        return _groups_intro(kind, parameters, dialects)
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


def _groups_intro(kind: str, parameters: Mapping[str, Any], configs: Sequence[str]) -> list[str]:
    """The intro of a corpus of any language's groups: what they are and their voice names."""
    language = LANGUAGE_NAMES.get(_language(parameters), _language(parameters))
    groups = parameters[GROUPS_KEY]
    names = ", ".join(_display_name(c, parameters) for c in configs)
    text = (f"{language} (`{_language(parameters)}`) speech from Mozilla Common Voice, grouped by "
            f"{_grouped_by(parameters)} ({names}), filtered and balanced across speakers for "
            "text-to-speech training. ")
    if kind == "prepared":
        rate = parameters.get("target_sample_rate")
        audio = f"{rate} Hz" if rate else "the target sample rate"
        text += (f"Every clip was decoded, resampled to {audio} mono and stored as FLAC; its "
                 "text starts with its group's voice name (`<voice>: <sentence>`) so that a TTS "
                 "model can be conditioned on it.")
    else:
        text += ("The clips were encoded with the SNAC neural audio codec and laid out with "
                 "their text as token sequences ready for training Orpheus TTS.")
    voices = ["", "| config | group | voice name (text prefix) |", "|---|---|---|"]
    voices += [f"| {c} | {_display_name(c, parameters)} | "
               f"`{(groups.get(c) or {}).get('voice_name', c)}:` |" for c in configs]
    return [text, *voices]


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


def format_hours(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    return f"{float(value):.2f}" if value >= 1 else f"{float(value):.3f}"


def total_rejected(statistics: Mapping[str, Any]) -> Counter:
    total: Counter = Counter()
    for dialect in statistics.get("dialects", {}).values():
        total.update(dialect.get("rejected") or {})
    return total


def card_summary(statistics: Mapping[str, Any], repo_id: str | None = None) -> str:
    """Markdown for the dataset card: the key figures and a link to report.html.

    Reads ``statistics["total"]`` (and ``mean_dnsmos_ovrl`` there, when a run scored DNSMOS).
    """
    total = statistics.get("total", {})
    dialects = statistics.get("dialects", {})
    lines = ["## Report", "",
             f"- {total.get('rows', 0)} clips from {total.get('speakers', 0)} speakers, "
             f"{format_hours(total.get('hours'))} hours, {len(dialects)} dialects; "
             f"{total.get('samples_per_speaker', 0)} clips per speaker, mean "
             f"{total.get('mean_duration', 0)} s."]
    rejected = total_rejected(statistics)
    if rejected:
        top = ", ".join(f"{reason} {n}" for reason, n in
                        sorted(rejected.items(), key=lambda item: (-item[1], item[0]))[:4])
        lines.append(f"- {total.get('rejected', sum(rejected.values()))} clips rejected "
                     f"({top}).")
    conditioning = total.get("conditioning") or {}
    leading = conditioning.get("leading_silence_s") or {}
    spread = conditioning.get("lufs_std") or {}
    facts = []
    if leading.get("before") is not None and leading.get("after") is not None:
        facts.append(f"leading silence {leading['before']:.2f} → {leading['after']:.2f} s")
    if spread.get("before") is not None and spread.get("after") is not None:
        facts.append(f"loudness spread {spread['before']:.2f} → {spread['after']:.2f} LU")
    if conditioning.get("mean_snr_db") is not None:
        facts.append(f"mean estimated SNR {conditioning['mean_snr_db']:.1f} dB")
    if total.get("mean_dnsmos_ovrl") is not None:
        facts.append(f"mean DNSMOS OVRL {total['mean_dnsmos_ovrl']:.2f}")
    if facts:
        lines.append("- Conditioning: " + "; ".join(facts) + ".")
    lines += ["", f"[{REPORT_FILE}]({REPORT_FILE}) has, per dialect, histograms of duration, "
              "SNR, speaking rate and DNSMOS, clips per speaker, silence and loudness before "
              "and after conditioning, rejects by reason, and sample clips to listen to. It "
              "opens offline: download it with its `report/` folder "
              f"(`hf download {repo_id or '<user>/<dataset>'} --repo-type dataset --include "
              f"'{REPORT_FILE}' '{REPORT_DIR}/*'`) and open it in a browser."]
    return "\n".join(lines)
