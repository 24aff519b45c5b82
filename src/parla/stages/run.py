"""`parla run`: prepare -> tokenize -> publish in one command, from flags or a config file.

When the run publishes, the login and the write access are checked before anything else, so a
missing token fails in seconds instead of after hours of processing. A failed upload keeps the
finished folder, and `parla publish <folder> --repo_id ...` completes it without redoing the work.

Config file (``--config run.toml`` or ``.yaml``): the keys are the `parla run` flag names without
the dashes (``max_samples_per_speaker = 50``, ``hf_repo = "user/name"``). They may be written flat
or grouped in tables ``[prepare]``, ``[tokenize]``, ``[publish]`` (the grouping is only for
reading: every name is unique). Flags given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from parla.dialects import DIALECTS
from parla.errors import UsageError
from parla.extras import require_tokenize_extra
from parla.options import ConditioningOptions, PrepareOptions, PublishOptions, TokenizeOptions
from parla.progress import get_logger
from parla.stages.result import StageResult
from parla.store.urls import as_path, is_remote

log = get_logger("pipeline")

DEFAULT_DATASETS: tuple[str, ...] = tuple(d.hub_id for d in DIALECTS.values())
CONFIG_SECTIONS = ("prepare", "tokenize", "publish")
TOKENIZED_SUFFIX = "_tokenized"  # default tokenized folder: next to the prepared one

# keys of a run that belong to no single stage's options, with their types
RUN_KEYS: dict[str, str] = {
    "tokenize": "bool",  # run the tokenize stage
    "tokenized_dir": "str | None",  # its output (default: <output_dir>_tokenized)
    "hf_repo": "str | None",  # publish the final output to this dataset repo
    "hf_private": "bool",
    "hf_revision": "str | None",
    "hf_commit_message": "str | None",
}
# tokenize options a run derives from the prepare ones instead of taking them separately
_TOKENIZE_DERIVED = ("input_dir", "output_dir", "overwrite", "engine", "storage_options",
                     "break_lock")


def _field_types(cls: type, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls) if f.name not in skip}


def run_option_types() -> dict[str, str]:
    """Every key a run accepts (flag names), with its type: what a config file may hold."""
    return (_field_types(PrepareOptions, ("conditioning",)) | _field_types(ConditioningOptions)
            | _field_types(TokenizeOptions, _TOKENIZE_DERIVED) | RUN_KEYS)


# --- config file -----------------------------------------------------------------------------

def _read_toml(path: Path) -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise UsageError(f"reading {path} needs Python 3.11 or `pip install tomli`; or "
                             f"write the config as YAML") from None
    with open(path, "rb") as handle:
        try:
            return tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"--config {path} is not valid TOML: {error}") from None


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UsageError(f"--config {path} is not valid YAML: {error}") from None


def _check_type(key: str, value: Any, annotation: str) -> Any:
    """The value, if it has the key's type (ints are accepted as floats); else UsageError."""
    kinds = {part.strip() for part in annotation.split("|")}
    if value is None:
        if "None" in kinds:
            return None
        raise UsageError(f"config key {key!r} may not be empty")
    if any(kind.startswith("tuple[str") for kind in kinds):
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list) and items and all(isinstance(v, str) for v in items):
            return tuple(items)
        raise UsageError(f"config key {key!r} must be a list of strings")
    checks = [("bool", lambda v: isinstance(v, bool), "true or false"),
              ("int", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
              ("float", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               "a number"),
              ("str", lambda v: isinstance(v, str), "a string")]
    for kind, accepts, described in checks:
        if kind in kinds:
            if not accepts(value):
                raise UsageError(f"config key {key!r} must be {described}, got {value!r}")
            return float(value) if kind == "float" else value
    return value


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The options in a TOML or YAML run config, flattened, with dashes read as underscores.

    Unknown keys and values of the wrong type are a UsageError naming the key.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"--config {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        raw = _read_toml(path)
    elif suffix in (".yaml", ".yml"):
        raw = _read_yaml(path)
    else:
        raise UsageError(f"--config {path}: use a .toml, .yaml or .yml file")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path} must hold a table of options")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key).replace("-", "_")
        if key in CONFIG_SECTIONS and isinstance(value, dict):
            entries = {str(k).replace("-", "_"): v for k, v in value.items()}
        else:
            entries = {key: value}
        for name, entry in entries.items():
            if name in flat:
                raise UsageError(f"--config {path} sets {name!r} twice")
            flat[name] = entry
    types = run_option_types()
    unknown = sorted(set(flat) - set(types))
    if unknown:
        raise UsageError(f"--config {path}: unknown option(s) {', '.join(unknown)} (the keys are "
                         f"the `parla run` flag names)")
    return {key: _check_type(key, value, types[key]) for key, value in flat.items()}


# --- options of each stage -------------------------------------------------------------------

def _pick(values: Mapping[str, Any], cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    return {key: value for key, value in values.items() if key in names}


def build_run_options(values: Mapping[str, Any]
                      ) -> tuple[PrepareOptions, TokenizeOptions | None, PublishOptions | None]:
    """The options of each stage from one flat mapping of run keys (flags and config merged).

    Unset keys take the stage's defaults; ``datasets`` defaults to the 7 Catalan dialect datasets.
    """
    unknown = sorted(set(values) - set(run_option_types()))
    if unknown:
        raise UsageError(f"unknown run option(s): {', '.join(unknown)}")
    if not values.get("output_dir"):
        raise UsageError("--output_dir is required (as a flag or in the --config file)")
    conditioning = ConditioningOptions(**_pick(values, ConditioningOptions))
    prepare_values = _pick(values, PrepareOptions, ("conditioning",))
    prepare_values["datasets"] = tuple(values.get("datasets") or DEFAULT_DATASETS)
    prepare_options = PrepareOptions(**prepare_values, conditioning=conditioning)

    final_dir = prepare_options.output_dir
    tokenize_options = None
    if values.get("tokenize"):
        tokenized_dir = (values.get("tokenized_dir")
                         or str(prepare_options.output_dir).rstrip("/\\") + TOKENIZED_SUFFIX)
        tokenize_options = TokenizeOptions(
            input_dir=prepare_options.output_dir, output_dir=tokenized_dir,
            overwrite=prepare_options.overwrite, engine=prepare_options.engine,
            storage_options=prepare_options.storage_options,
            break_lock=prepare_options.break_lock,
            **_pick(values, TokenizeOptions, _TOKENIZE_DERIVED))
        final_dir = tokenized_dir
    elif values.get("tokenized_dir"):
        raise UsageError("--tokenized_dir is set but --tokenize is not")

    publish_options = None
    if values.get("hf_repo"):
        publish_options = PublishOptions(folder=final_dir, repo_id=values["hf_repo"],
                                         private=bool(values.get("hf_private")),
                                         revision=values.get("hf_revision"),
                                         commit_message=values.get("hf_commit_message"),
                                         storage_options=prepare_options.storage_options)
    elif any(values.get(key) for key in ("hf_private", "hf_revision", "hf_commit_message")):
        raise UsageError("--hf_private/--hf_revision/--hf_commit_message need --hf_repo")
    return prepare_options, tokenize_options, publish_options


# --- the run ---------------------------------------------------------------------------------

def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    if is_remote(a) or is_remote(b):
        return str(as_path(a)) == str(as_path(b))
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _check_chain(prepare_options: PrepareOptions, tokenize_options: TokenizeOptions | None,
                 publish_options: PublishOptions | None) -> None:
    """Each stage must read what the one before it writes; checked before any work."""
    if tokenize_options is not None:
        if not _same_path(tokenize_options.input_dir, prepare_options.output_dir):
            raise UsageError("the tokenize stage must read the prepare stage's output_dir")
        require_tokenize_extra()  # before hours of prepare, not after
    if publish_options is not None:
        final = tokenize_options.output_dir if tokenize_options else prepare_options.output_dir
        if not _same_path(publish_options.folder, final):
            raise UsageError(f"the publish stage must upload the run's final output ({final})")


def run(prepare_options: PrepareOptions, tokenize_options: TokenizeOptions | None = None,
        publish_options: PublishOptions | None = None,
        on_step: Callable[[StageResult], None] | None = None) -> StageResult:
    """Check the Hub login (when publishing), then prepare, tokenize and publish.

    A dry run checks the login and the selection, and stops there. ``output`` is the last
    stage's output (the dataset's URL when published); ``steps`` holds each stage's result, and
    ``on_step`` is called with each as soon as its stage ends. ``statistics`` is empty: each
    stage's numbers are in its step.
    """
    # the stages are imported here, not at the top: the CLI imports this module to build its
    # parser, and `parla --help` must not load pandas, pyarrow and the Hub client
    from parla.stages.prepare import prepare
    from parla.stages.tokenize import tokenize

    started = time.monotonic()
    _check_chain(prepare_options, tokenize_options, publish_options)
    if publish_options is not None:
        from parla.hub.client import check_write_access

        user = check_write_access(publish_options.repo_id)
        log.info("the Hub login (%s) may write to %s", user, publish_options.repo_id)
    steps: list[StageResult] = []
    for stage, options in ((prepare, prepare_options), (tokenize, tokenize_options),
                           (_publish, publish_options)):
        if options is None or (steps and prepare_options.dry_run):
            continue
        steps.append(stage(options))
        if on_step is not None:
            on_step(steps[-1])
    return StageResult("run", steps[-1].output, {}, time.monotonic() - started,
                       dry_run=prepare_options.dry_run, steps=tuple(steps))


def _publish(options: PublishOptions) -> StageResult:
    from parla.stages.publish import publish

    try:
        return publish(options)
    except KeyboardInterrupt:
        # rerunning the whole run would redo the work; the upload alone finishes it
        log.warning("upload interrupted; the output is complete: `parla publish %s --repo_id %s` "
                    "uploads it", options.folder, options.repo_id)
        raise
