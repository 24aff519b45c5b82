"""What every language's text clean-up shares: typographic look-alikes and invisible characters."""

from __future__ import annotations

import unicodedata

# Apostrophe look-alikes (right/left single quotes, modifier letter apostrophe, acute and grave
# accents typed as apostrophes, prime) -> ASCII apostrophe.
APOSTROPHES = "\u2019\u2018\u02bc\u00b4\u0060\u201b\u2032\u02b9"
# Double quote look-alikes (curly quotes, guillemets, low-9 quote, double prime) -> ASCII quote.
DOUBLE_QUOTES = "\u201c\u201d\u00ab\u00bb\u201e\u201f\u2033"
# Hyphen look-alikes -> ASCII hyphen-minus (en/em dashes are kept: they are punctuation).
HYPHENS = "\u2010\u2011\u2212"


def drop_format_characters(text: str) -> str:
    """Zero-width spaces, soft hyphens, BOMs, direction marks and stray control characters are
    invisible in the source but would reach the tokenizer."""
    if text.isprintable():  # no Cc or Cf character (nor any other non-printable): nothing to drop
        return text
    return "".join(
        c for c in text if c.isspace() or unicodedata.category(c) not in ("Cf", "Cc")
    )
