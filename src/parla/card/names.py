"""What a published file may say about where the data came from: names, never machine paths.

The card (and the statistics beside it) become public with `parla publish`. A local source is
named by its own name: the folder's name, ``cv-corpus-23.0/ca`` for a Common Voice release
(its locale folder under the release), the Hub id where the path is a Hub cache snapshot
(``…/datasets--owner--name/snapshots/…``). An object-store URL is named the same way, by its
last two names and never its bucket. Hub ids and every other value pass unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_HUB_CACHE_RE = re.compile(r"^(?:datasets|models)--(?P<owner>[^-/]+(?:-[^-/]+)*?)--(?P<name>.+)$")


_STORE_URL_RE = re.compile(r"^(s3a?|gs|gcs|az|abfss?|memory|file)://", re.IGNORECASE)


def _parent_name(url: str) -> str:
    """``cv-corpus-23.0/`` of ``s3://bucket/cv-corpus-23.0/ca``: a release's locale folder is
    named with its release, as a local one is (the bucket itself is never named)."""
    parts = url.split("://", 1)[1].rstrip("/").split("/")
    return f"{parts[-2]}/" if len(parts) > 2 else ""


def _looks_local(text: str) -> bool:
    return (os.path.isabs(text) or text.startswith(("~", "./", "../"))
            or os.path.exists(text))


def _hub_id_of(path: Path) -> str | None:
    for part in reversed(path.parts):
        match = _HUB_CACHE_RE.match(part)
        if match:
            return f"{match['owner']}/{match['name']}"
    return None


def public_location(text: str) -> str:
    """``text`` as a published file may show it (see the module docstring)."""
    if isinstance(text, str) and _STORE_URL_RE.match(text):  # a bucket is as private as a disk
        parts = text.split("://", 1)[1].rstrip("/").split("/")
        if len(parts) < 2:  # a bucket's root: nothing in it to name
            return "dataset"
        return f"{_parent_name(text)}{parts[-1]}"
    if not isinstance(text, str) or not text or not _looks_local(text):
        return text
    path = Path(text).expanduser()
    hub_id = _hub_id_of(path)
    if hub_id is not None:
        return hub_id
    path = Path(os.path.normpath(path.absolute()))
    if (path / "validated.tsv").is_file() or path.is_file():
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return path.name or text


def public_source(spec: str) -> str:
    """A ``--datasets`` entry, ``NAME=SOURCE`` keeping its NAME."""
    name, sep, location = spec.partition("=")
    if sep and name and "/" not in name and not os.path.exists(spec):
        return f"{name}={public_location(location)}"
    return public_location(spec)


def public_parameters(value: Any, key: str = "") -> Any:
    """``value`` (a stage's parameters) with every local path replaced by its public name."""
    if isinstance(value, Mapping):
        return {k: public_parameters(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_parameters(v, key) for v in value]
    if isinstance(value, str):
        return public_source(value) if key == "datasets" else public_location(value)
    return value
