"""Sentence clean-up per language: `rules_for(language)` gives its normalise and check functions.

Every language gets a safe default (`normalize_default`: NFC, no invisible characters, one
apostrophe and one double quote, single spaces; `invalid_default`: symbols and control
characters, never letters of any script). A language with rules of its own is one module here
listed in `_LANGUAGE_RULES`: ``ca`` (`parla.text.ca`: the punt volat, the Catalan alphabet,
the punctuation left at a sentence's edges).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from parla.text import ca
from parla.text.ca import ALLOWED_CHARACTERS, MIDDLE_DOT, invalid_characters, normalize_sentence
from parla.text.common import APOSTROPHES, DOUBLE_QUOTES, drop_format_characters

__all__ = ["ALLOWED_CHARACTERS", "MIDDLE_DOT", "TextRules", "invalid_characters",
           "invalid_default", "normalize_default", "normalize_sentence", "rules_for"]


@dataclass(frozen=True)
class TextRules:
    language: str  # the rules' name: a language code, or "default"
    normalize: Callable[[str], str]
    invalid_characters: Callable[[str], set[str]]


_QUOTES = str.maketrans({**{c: "'" for c in APOSTROPHES}, **{c: '"' for c in DOUBLE_QUOTES}})
_WHITESPACE = re.compile(r"\s+")
# symbols a sentence of any language may hold (the rest of the S* categories are rejected)
_COMMON_SYMBOLS = frozenset("%&+/ºª°€$£¥#")


def normalize_default(text: str) -> str:
    """NFC, invisible characters dropped, typographic quotes and apostrophes made ASCII, every
    run of whitespace one space, no space at the ends. Safe for any script."""
    text = drop_format_characters(unicodedata.normalize("NFC", text)).translate(_QUOTES)
    return _WHITESPACE.sub(" ", text).strip()


def invalid_default(text: str) -> set[str]:
    """Characters no sentence to be read aloud should hold: symbols (emoji, =, <, ...) and
    control characters. Letters, marks and digits of every script and punctuation pass."""
    return {c for c in set(text) if not (c == " " or c in _COMMON_SYMBOLS
                                         or unicodedata.category(c)[0] in "LMNP")}


DEFAULT_RULES = TextRules("default", normalize_default, invalid_default)
_LANGUAGE_RULES = {"ca": TextRules("ca", ca.normalize_sentence, ca.invalid_characters)}


def rules_for(language: str | None) -> TextRules:
    """The text rules of a language (``ca``, ``pt-BR``: by its code before the region); the
    default rules for a language without rules of its own."""
    code = (language or "").split("-")[0].split("_")[0].lower()
    return _LANGUAGE_RULES.get(code, DEFAULT_RULES)


def rule_languages() -> list[str]:
    return sorted(_LANGUAGE_RULES)
