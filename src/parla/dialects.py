"""Registry of the Catalan dialects parla knows: canonical ids, aliases, names and voices."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from parla.errors import UsageError


@dataclass(frozen=True)
class Dialect:
    id: str
    display_name: str
    voice_name: str  # text prefix the TTS model is conditioned on: "<voice>: <sentence>"
    hub_id: str  # the Common Voice 23 dialect dataset on the Hub
    aliases: tuple[str, ...] = ()


DIALECTS: dict[str, Dialect] = {
    d.id: d
    for d in (
        Dialect("alacanti", "Alacantí", "alacanti", "xaviviro/cv_23_ca_alacanti",
                ("alacant", "alicante", "alacantino")),
        Dialect("balear", "Balear", "balear", "xaviviro/cv_23_ca_balear",
                ("balearic", "baleares", "mallorqui", "mallorquí")),
        Dialect("central", "Central", "central", "xaviviro/cv_23_ca_central",
                ("oriental", "central_catalan")),
        Dialect("nord_occidental", "Nord-occidental", "nord_occidental",
                "xaviviro/cv_23_ca_nord_occidental",
                ("nordoccidental", "northwestern", "north_western", "lleidata", "occidental")),
        Dialect("septentrional", "Septentrional", "septentrional",
                "xaviviro/cv_23_ca_septentrional",
                ("northern", "rossellones", "rossellonès", "nord_catala")),
        Dialect("tortosi", "Tortosí", "tortosi", "xaviviro/cv_23_ca_tortosi",
                ("tortosa", "ebrenc")),
        Dialect("valencia", "Valencià", "valencia", "xaviviro/cv_23_ca_valencia",
                ("valencian", "valenciano")),
    )
}

ALL_CONFIG = "all"  # name of the combined config; never a dialect id


def _normalise(name: str) -> str:
    """Lowercase, strip accents, and turn every run of separators into '_'."""
    text = unicodedata.normalize("NFKD", name.strip().lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


_LOOKUP: dict[str, str] = {}
for _dialect in DIALECTS.values():
    for _name in (_dialect.id, _dialect.display_name, _dialect.voice_name, *_dialect.aliases):
        _LOOKUP[_normalise(_name)] = _dialect.id


def find_dialect(name: str) -> Dialect | None:
    """The dialect a name, alias or dataset id refers to, or None.

    Accepts "central", "Valencià", "northwestern", "xaviviro/cv_23_ca_balear", "cv_23_ca_tortosi".
    """
    key = _normalise(name.rsplit("/", 1)[-1])
    if key in _LOOKUP:
        return DIALECTS[_LOOKUP[key]]
    # dataset-style names: the dialect is the longest known suffix ("cv_23_ca_nord_occidental")
    for alias in sorted(_LOOKUP, key=len, reverse=True):
        if key.endswith("_" + alias):
            return DIALECTS[_LOOKUP[alias]]
    return None


def resolve_dialect(name: str) -> Dialect:
    """Like `find_dialect`, but an unknown name is a UsageError that lists the known dialects."""
    dialect = find_dialect(name)
    if dialect is None:
        known = ", ".join(sorted(DIALECTS))
        raise UsageError(f"unknown dialect {name!r}; known dialects: {known}")
    return dialect


def dialect_from_accent(accent: str) -> Dialect | None:
    """Dialect named in a Common Voice `accents`/`variant` value ("Central", "valencià|...")."""
    for part in re.split(r"[|,;]", accent or ""):
        dialect = find_dialect(part) if part.strip() else None
        if dialect is not None:
            return dialect
    return None
