"""The dialect registry: ids, aliases, dataset ids, Common Voice accents, unknown names."""

from __future__ import annotations

import pytest

from parla.dialects import (
    ALL_CONFIG,
    DIALECTS,
    dialect_from_accent,
    find_dialect,
    resolve_dialect,
)
from parla.errors import UsageError

SEVEN = {"alacanti", "balear", "central", "nord_occidental", "septentrional", "tortosi",
         "valencia"}


def test_the_seven_catalan_dialects_and_their_hub_datasets() -> None:
    assert set(DIALECTS) == SEVEN
    assert ALL_CONFIG not in DIALECTS and find_dialect(ALL_CONFIG) is None
    for dialect_id, dialect in DIALECTS.items():
        assert dialect.id == dialect_id
        assert dialect.hub_id == f"xaviviro/cv_23_ca_{dialect_id}"
    assert len({d.voice_name for d in DIALECTS.values()}) == len(DIALECTS)


def test_every_name_of_a_dialect_resolves_to_it() -> None:
    # an alias shared by two dialects would silently resolve to one of them
    for dialect in DIALECTS.values():
        for name in (dialect.id, dialect.display_name, dialect.voice_name, dialect.hub_id,
                     *dialect.aliases):
            assert find_dialect(name) is dialect, name


@pytest.mark.parametrize(("name", "expected"), [
    ("Valencià", "valencia"),
    ("valencian", "valencia"),
    ("  CENTRAL ", "central"),
    ("Nord-occidental", "nord_occidental"),
    ("nord occidental", "nord_occidental"),
    ("northwestern", "nord_occidental"),
    ("lleidatà", "nord_occidental"),
    ("Mallorquí", "balear"),
    ("mallorqui", "balear"),
    ("Rossellonès", "septentrional"),
    ("ebrenc", "tortosi"),
    ("Tortosí", "tortosi"),
    ("alicante", "alacanti"),
    ("Alacantí", "alacanti"),
])
def test_aliases_ignore_case_accents_and_separators(name: str, expected: str) -> None:
    assert find_dialect(name) is DIALECTS[expected]
    assert resolve_dialect(name).id == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("xaviviro/cv_23_ca_balear", "balear"),
    ("cv_23_ca_tortosi", "tortosi"),
    ("someone-else/cv_23_ca_nord_occidental", "nord_occidental"),
    ("/data/cv-23-ca-valencia", "valencia"),
    ("my_copy_of_central", "central"),
])
def test_dataset_ids_and_folder_names(name: str, expected: str) -> None:
    assert find_dialect(name) is DIALECTS[expected]


@pytest.mark.parametrize("name", ["andalusian", "cv_23_ca_demo", "", "all", "centralx"])
def test_unknown_names(name: str) -> None:
    assert find_dialect(name) is None


def test_unknown_dialect_error_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as raised:
        resolve_dialect("andalusian")
    message = str(raised.value)
    assert "'andalusian'" in message and "\n" not in message
    assert all(dialect_id in message for dialect_id in SEVEN)


@pytest.mark.parametrize(("accent", "expected"), [
    ("Central", "central"),
    ("Central|Barceloní", "central"),
    ("Balear|Mallorquí", "balear"),
    ("Barceloní|Central", "central"),  # the first part that names a dialect wins
    ("valencià", "valencia"),
    ("Nord-occidental, Lleidatà", "nord_occidental"),
    ("Barceloní", None),
    ("", None),
])
def test_dialect_from_common_voice_accents(accent: str, expected: str | None) -> None:
    found = dialect_from_accent(accent)
    assert (found.id if found else None) == expected
