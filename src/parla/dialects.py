"""The Catalan dialects: parla's built-in ``ca`` groups (``presets/ca.toml``), by their old names.

`DIALECTS`, `find_dialect`, `resolve_dialect` and `dialect_from_accent` are what the original
scripts and the seven ``xaviviro/cv_23_ca_*`` Hub datasets are known by; any other language's
groups are a `parla.groups.Registry` of their own.
"""

from __future__ import annotations

from parla.groups import ALL_CONFIG, Group, Registry, preset

Dialect = Group  # a Catalan dialect is one group of the `ca` preset

CATALAN: Registry = preset("ca")  # type: ignore[assignment]  # shipped with parla
DIALECTS: dict[str, Dialect] = dict(CATALAN.groups)

__all__ = ["ALL_CONFIG", "CATALAN", "DIALECTS", "Dialect", "dialect_from_accent", "find_dialect",
           "resolve_dialect"]


def find_dialect(name: str) -> Dialect | None:
    """The dialect a name, alias or dataset id refers to, or None.

    Accepts "central", "Valencià", "northwestern", "xaviviro/cv_23_ca_balear", "cv_23_ca_tortosi".
    """
    return CATALAN.find(name)


def resolve_dialect(name: str) -> Dialect:
    """Like `find_dialect`, but an unknown name is a UsageError that lists the known dialects."""
    return CATALAN.resolve(name, "dialect")


def dialect_from_accent(accent: str) -> Dialect | None:
    """Dialect named in a Common Voice `accents`/`variant` value ("Central", "valencià|...")."""
    return CATALAN.from_accent(accent)
