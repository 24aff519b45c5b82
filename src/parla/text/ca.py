"""Catalan sentence clean-up (the ``ca`` text rules): pure functions on strings.

`normalize_sentence` makes typography uniform (NFC, one apostrophe, one double quote, the Catalan
middle dot, single spaces) and strips punctuation left over at the edges of a sentence, so that the
same spoken sentence is always written the same way. `invalid_characters` finds characters a
Catalan sentence should not contain (other scripts, foreign letters such as ñ or á, symbols),
which the prepare stage rejects rather than teach the model to read.
"""

from __future__ import annotations

import re
import unicodedata

from parla.text.common import (
    APOSTROPHES,
    DOUBLE_QUOTES,
    HYPHENS,
    drop_format_characters,
)

MIDDLE_DOT = "\u00b7"
# Characters that are only ever a middle dot typed wrongly (hyphenation point, dot operator,
# Greek ano teleia; NFC already maps U+0387 but it is listed for clarity).
_MIDDLE_DOT_LOOKALIKES = "\u2027\u22c5\u0387"

_TRANSLATION = str.maketrans(
    {
        **{c: "'" for c in APOSTROPHES},
        **{c: '"' for c in DOUBLE_QUOTES},
        **{c: "-" for c in HYPHENS},
        **{c: MIDDLE_DOT for c in _MIDDLE_DOT_LOOKALIKES},
        "\u0140": "l" + MIDDLE_DOT,  # ŀ: legacy precomposed "l·" (NFC keeps it)
        "\u013f": "L" + MIDDLE_DOT,  # Ŀ
    }
)

# "l.l" (and bullets typed for the dot) between letters is the geminated l of col·lecció, il·lusió.
_GEMINATE_L = re.compile(r"(?<=[^\W\d_][lL])[.\u2022\u2219\u2024\u30fb\uff65](?=[lL][^\W\d_])")
_WHITESPACE = re.compile(r"\s+")
# Left over at the start of a sentence: dialogue dashes, commas, ellipses of a continued quote.
_LEADING_JUNK = " -\u2013\u2014,;:.\u2026)"
# Left over at the end: commas, dashes, colons (final . ? ! … and closing quotes/brackets stay).
_TRAILING_JUNK = " -\u2013\u2014,;:("

LETTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyz"  # includes the loan letters k, w, y
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "àèéíïòóúüç"
    "ÀÈÉÍÏÒÓÚÜÇ"
    + MIDDLE_DOT
)
DIGITS = frozenset("0123456789")
PUNCTUATION = frozenset(" .,;:!?¡¿\u2026'\"-\u2013\u2014()[]/%&+ºª°€$")
ALLOWED_CHARACTERS = LETTERS | DIGITS | PUNCTUATION


def _strip_edges(text: str) -> str:
    """Remove punctuation artefacts at both ends until nothing changes."""
    while True:
        before = text
        text = text.lstrip(_LEADING_JUNK).rstrip(_TRAILING_JUNK)
        if text.count('"') % 2 == 1:
            # One unmatched quote: it is the dangling one at an edge, if any.
            if text.startswith('"'):
                text = text[1:]
            elif text.endswith('"'):
                text = text[:-1]
        if text.count("(") != text.count(")"):
            text = text.rstrip("(")
        if text == before:
            return text


def normalize_sentence(text: str) -> str:
    """Return `text` in one canonical spelling: NFC, uniform quotes and middle dots, single spaces,
    no stray punctuation at the edges (a final . ? ! or … is kept)."""
    text = unicodedata.normalize("NFC", text)
    text = drop_format_characters(text).translate(_TRANSLATION)
    text = _GEMINATE_L.sub(MIDDLE_DOT, text)
    text = _WHITESPACE.sub(" ", text).strip()
    return _strip_edges(text)


def invalid_characters(text: str) -> set[str]:
    """Characters of `text` outside the Catalan alphabet (with k, w, y, the accented vowels, ç, ·),
    digits and ordinary punctuation. Meant for text already passed through `normalize_sentence`,
    which maps typographic quotes and dots onto allowed ones."""
    return set(text) - ALLOWED_CHARACTERS
