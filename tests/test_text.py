"""Sentence normalisation and the Catalan character check (parla.text)."""

from __future__ import annotations

import unicodedata

import pytest

from parla.text import MIDDLE_DOT, invalid_characters, normalize_sentence


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Apostrophe look-alikes: right/left quote, modifier letter, acute, grave.
        ("L\u2019home d\u2018aqu\u00ed", "L'home d'aqu\u00ed"),
        ("s\u02bcha fet", "s'ha fet"),
        ("d\u00b4ell i d`ella", "d'ell i d'ella"),
        # Double quote look-alikes and guillemets.
        ("Va dir \u201chola\u201d.", 'Va dir "hola".'),
        ("Va dir \u00abhola\u00bb.", 'Va dir "hola".'),
    ],
)
def test_quotes_and_apostrophes_are_made_uniform(raw: str, expected: str) -> None:
    assert normalize_sentence(raw) == expected


def test_nfc_composes_accents() -> None:
    decomposed = unicodedata.normalize("NFD", "Això és català.")
    assert decomposed != "Això és català."
    assert normalize_sentence(decomposed) == "Això és català."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("col.lecci\u00f3", "col\u00b7lecci\u00f3"),  # l.l between letters
        ("Il.lusi\u00f3 i COL.LEGI", "Il\u00b7lusi\u00f3 i COL\u00b7LEGI"),
        ("paral\u2027lel", "paral\u00b7lel"),  # hyphenation point
        ("paral\u22c5lel", "paral\u00b7lel"),  # dot operator
        ("paral\u0387lel", "paral\u00b7lel"),  # Greek ano teleia
        ("para\u0140lel", "paral\u00b7lel"),  # precomposed l with middle dot
        ("col\u2022lecci\u00f3", "col\u00b7lecci\u00f3"),  # bullet typed for the dot
        ("col\u00b7lecci\u00f3", "col\u00b7lecci\u00f3"),  # already right: unchanged
    ],
)
def test_catalan_middle_dot(raw: str, expected: str) -> None:
    assert normalize_sentence(raw) == expected


def test_full_stops_that_are_not_geminate_l_stay() -> None:
    # A sentence ending in l followed by one starting with L, and abbreviations.
    assert normalize_sentence("Va al Pol. Lluís ve.") == "Va al Pol. Lluís ve."
    assert normalize_sentence("Sr. Lloret") == "Sr. Lloret"


def test_whitespace_is_collapsed_and_invisible_characters_dropped() -> None:
    raw = "  Bon\u00a0dia,\t\tcom\n est\u00e0s\u200b?\u202f "
    assert normalize_sentence(raw) == "Bon dia, com est\u00e0s?"
    assert normalize_sentence("so\u00adbre") == "sobre"  # soft hyphen


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("- Hola, qu\u00e8 tal?", "Hola, qu\u00e8 tal?"),  # dialogue dash
        ("\u2014 Vine aqu\u00ed.", "Vine aqu\u00ed."),
        (", i despr\u00e9s va marxar.", "i despr\u00e9s va marxar."),
        ("...i despr\u00e9s va marxar.", "i despr\u00e9s va marxar."),
        ("Bon dia,", "Bon dia"),
        ("Bon dia -", "Bon dia"),
        ('"Bon dia.', "Bon dia."),  # unmatched opening quote
        ('Bon dia"', "Bon dia"),  # unmatched closing quote
        ('"Bon dia", va dir.', '"Bon dia", va dir.'),  # matched: kept
        ("Ja ho veurem\u2026", "Ja ho veurem\u2026"),  # final . ? ! \u2026 kept
        ("De veritat?!", "De veritat?!"),
        ("Hola (b\u00e9", "Hola (b\u00e9"),
    ],
)
def test_edge_punctuation_artefacts(raw: str, expected: str) -> None:
    assert normalize_sentence(raw) == expected


def test_normalisation_is_idempotent() -> None:
    for raw in ["  \u2013 \u00abCol.lecci\u00f3\u00bb,  d\u2019art\u2026 ", "Bon dia", ", - \"x"]:
        once = normalize_sentence(raw)
        assert normalize_sentence(once) == once


def test_only_punctuation_becomes_empty() -> None:
    assert normalize_sentence(" - , ; ") == ""


def test_catalan_sentences_have_no_invalid_characters() -> None:
    sentence = normalize_sentence(
        "\u00c0via, l\u2019\u00e8xit del col\u00b7lectiu \u00abkiwi\u00bb: 12 "
        "pe\u00e7es, \u00fanic, ra\u00efm, ping\u00fc\u00ed (wiki-York) \u2014 100% s\u00ed?!"
    )
    assert invalid_characters(sentence) == set()
    upper = "\u00c0\u00c8\u00c9\u00cd\u00cf\u00d2\u00d3\u00da\u00dc\u00c7 KWY"
    assert invalid_characters(upper) == set()
    assert MIDDLE_DOT not in invalid_characters("l\u00b7l")


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("Espa\u00f1a", {"\u00f1"}),  # Spanish ñ
        ("m\u00e1s", {"\u00e1"}),  # acute a does not exist in Catalan
        ("\u00e2\u00ea\u00f4", {"\u00e2", "\u00ea", "\u00f4"}),
        ("Stra\u00dfe", {"\u00df"}),
        ("\u041f\u0440\u0438\u0432\u0435\u0442", set("\u041f\u0440\u0438\u0432\u0435\u0442")),
        ("caf\u00e8 \u2615", {"\u2615"}),
        ("a < b", {"<"}),
        ("x @ y", {"@"}),
    ],
)
def test_foreign_characters_are_found(text: str, bad: set[str]) -> None:
    assert invalid_characters(text) == bad


def test_raw_typography_is_invalid_until_normalised() -> None:
    raw = "\u00abL\u2019home\u00bb"
    assert invalid_characters(raw) == {"\u00ab", "\u00bb", "\u2019"}
    assert invalid_characters(normalize_sentence(raw)) == set()


def drop_format_characters_char_by_char(text: str) -> str:
    """The per-character rule that text.isprintable() lets normalize_sentence skip."""
    return "".join(c for c in text if c.isspace() or unicodedata.category(c) not in ("Cf", "Cc"))


@pytest.mark.parametrize("raw", [
    "Bon dia, com estàs?",  # printable: the fast path
    "L\u2019home va dir \u00abhola\u00bb\u2026",
    "tab\there", "line\nbreak\r\n", "bell\x07 and nul\x00 and del\x7f",  # Cc
    "zero\u200bwidth", "so\u00adbre", "\ufeffBOM", "rtl\u200fmark\u200e", "word\u2060joiner",  # Cf
    "no\u00a0break\u202fnarrow", "line\u2028para\u2029sep",  # separators: whitespace, kept
    "unassigned \U000e0fff \ue000 private", "combining e\u0301 and \U0001f600",
])
def test_format_characters_fast_path_matches_the_per_character_rule(raw: str) -> None:
    from parla.text import ca as text
    from parla.text.common import drop_format_characters

    assert drop_format_characters(raw) == drop_format_characters_char_by_char(raw)
    reference = unicodedata.normalize("NFC", raw)
    reference = drop_format_characters_char_by_char(reference).translate(text._TRANSLATION)
    reference = text._GEMINATE_L.sub(MIDDLE_DOT, reference)
    reference = text._strip_edges(text._WHITESPACE.sub(" ", reference).strip())
    assert normalize_sentence(raw) == reference
