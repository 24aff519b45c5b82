"""Groups of a corpus (dialects, accents, variants): ids, names, voices, and the names they absorb.

A `Group` is one config of the output: its id (a slug), the name people read, the voice name
its text starts with (``"central: Bon dia."``) and the names and Common Voice accent or variant
strings that mean it. A `Registry` is an ordered set of groups with one lookup of every such
name. Registries come from a groups file (TOML or YAML, `read_groups_file`), from a built-in
preset (`preset`: ``ca``, the seven Catalan dialects, in ``presets/ca.toml``), or from the data
itself (`store.grouping`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parla.errors import UsageError

PRESETS_DIR = Path(__file__).parent / "presets"
ALL_CONFIG = "all"  # name of the combined config; never a group id
RESERVED_IDS = (ALL_CONFIG, "packed")  # configs parla writes beside the groups


@dataclass(frozen=True)
class Group:
    id: str
    display_name: str
    voice_name: str  # text prefix the TTS model is conditioned on: "<voice>: <sentence>"
    hub_id: str | None = None  # a dataset of this group alone on the Hub, if any
    aliases: tuple[str, ...] = ()
    accents: tuple[str, ...] = ()  # Common Voice accents/variant strings the group absorbs


def slug(name: str) -> str:
    """Lowercase, strip accents, and turn every run of separators into '_'."""
    text = unicodedata.normalize("NFKD", name.strip().lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def group_id(value: str) -> str:
    """The config id of a free-text value: its slug; a value with no Latin letter or digit
    (another script) gets a stable id from its bytes; `all` and `packed` get a suffix."""
    text = slug(value)
    if not text:
        text = "group_" + hashlib.sha256(value.strip().encode()).hexdigest()[:8]
    return f"{text}_group" if text in RESERVED_IDS else text


@dataclass(frozen=True)
class Registry:
    """Ordered groups and one lookup of all their names (normalised with `slug`)."""

    groups: Mapping[str, Group]
    language: str | None = None
    lookup: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup: dict[str, str] = {}
        for group in self.groups.values():
            for name in (group.id, group.display_name, group.voice_name, *group.aliases,
                         *group.accents):
                key = slug(name)
                owner = lookup.setdefault(key, group.id)
                if owner != group.id:
                    raise UsageError(f"the name {name!r} means two groups, {owner} and "
                                     f"{group.id}; give it to one")
        object.__setattr__(self, "lookup", lookup)

    @classmethod
    def of(cls, groups: Iterable[Group], language: str | None = None) -> Registry:
        return cls({group.id: group for group in groups}, language)

    def match(self, name: str) -> Group | None:
        """The group a name, alias or absorbed accent string means exactly, or None."""
        found = self.lookup.get(slug(name))
        return self.groups[found] if found is not None else None

    def find(self, name: str) -> Group | None:
        """Like `match`, and dataset-style names by their longest known suffix
        (``xaviviro/cv_23_ca_nord_occidental`` -> ``nord_occidental``)."""
        key = slug(name.rsplit("/", 1)[-1])
        if key in self.lookup:
            return self.groups[self.lookup[key]]
        for alias in sorted(self.lookup, key=len, reverse=True):
            if key.endswith("_" + alias):
                return self.groups[self.lookup[alias]]
        return None

    def resolve(self, name: str, what: str = "group") -> Group:
        """Like `find`, but an unknown name is a UsageError that lists the known groups."""
        group = self.find(name)
        if group is None:
            raise UsageError(f"unknown {what} {name!r}; known {what}s: "
                             f"{', '.join(sorted(self.groups))}")
        return group

    def from_accent(self, accent: str) -> Group | None:
        """The first group named in a ``|``/``,``/``;``-separated accents value, by `find`."""
        for part in re.split(r"[|,;]", accent or ""):
            group = self.find(part) if part.strip() else None
            if group is not None:
                return group
        return None


# --- groups files and presets ----------------------------------------------------------------

def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UsageError(f"{where}: expected a list of strings")
    return tuple(value)


def _group_from_entry(key: str, entry: Any, where: str) -> Group:
    if entry is None:
        entry = {}
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where}: group {key!r} must be a table of display_name, voice_name, "
                         "aliases, accents (and hub_id)")
    unknown = sorted(set(entry) - {"display_name", "voice_name", "aliases", "accents", "hub_id"})
    if unknown:
        raise UsageError(f"{where}: group {key!r} has unknown key(s) {', '.join(unknown)}")
    identity = group_id(str(key))
    display = str(entry.get("display_name") or key)
    voice = str(entry.get("voice_name") or identity)
    if not voice.strip() or ":" in voice:
        raise UsageError(f"{where}: group {key!r}: voice_name {voice!r} must be a non-empty "
                         "name without ':'")
    return Group(identity, display, voice, entry.get("hub_id") or None,
                 _strings(entry.get("aliases"), f"{where}: {key}.aliases"),
                 _strings(entry.get("accents"), f"{where}: {key}.accents"))


def parse_groups(data: Any, where: str) -> Registry:
    """A registry from a groups file's content: ``{language?, groups: {id: {...}}}``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("groups"), Mapping) \
            or not data["groups"]:
        raise UsageError(f"{where}: expected a `groups` table of one entry per group "
                         f"(see {PRESETS_DIR / 'ca.toml'})")
    language = data.get("language")
    groups = [_group_from_entry(key, entry, where) for key, entry in data["groups"].items()]
    ids = [group.id for group in groups]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise UsageError(f"{where}: group id(s) {', '.join(repeated)} given twice")
    return Registry.of(groups, str(language) if language else None)


def read_groups_file(path: str | Path) -> Registry:
    """A groups file (``.toml``, ``.yaml`` or ``.yml``) as a registry; UsageError if invalid."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"--groups {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
    except Exception as error:  # either parser's error: the file is not what it says
        raise UsageError(f"--groups {path}: cannot be read ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return parse_groups(data, f"--groups {path}")


def preset(language: str | None) -> Registry | None:
    """The built-in groups of a language (``ca``), or None where parla has none."""
    if not language or not re.fullmatch(r"[A-Za-z0-9_-]+", language):
        return None
    path = PRESETS_DIR / f"{language}.toml"
    return read_groups_file(path) if path.is_file() else None


def preset_languages() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.toml"))


# --- languages ---------------------------------------------------------------------------------

# a locale as Common Voice names its folders: es, cy, pt-BR, zh-CN, rm-sursilv
_LOCALE = re.compile(r"[a-z]{2,3}(-[A-Z]{2}|-(sursilv|vallader|puter|surmiran|sutsilv))?")


def locale_from_name(name: str) -> str | None:
    """The Common Voice locale a release folder or dataset name gives: the name itself (``es``,
    ``pt-BR``, ``cv-corpus-23.0/cy``) or the word after ``cv[_NN]`` in a dataset-style name
    (``cv_23_ca_central``, ``cv_ca_demo``); None when it says none. A folder named ``cv`` is
    taken for Common Voice, not Chuvash (whose releases need ``--language cv``)."""
    last = name.rstrip("/").rsplit("/", 1)[-1]
    if _LOCALE.fullmatch(last):
        return last if last != "cv" else None
    words = re.split(r"[_\-.\s]+", last)
    if words and words[0].lower() == "cv":
        rest = [word for word in words[1:] if not word.isdigit()]
        if rest and re.fullmatch(r"[a-z]{2,3}", rest[0]):
            return rest[0]
    return None
