"""One frozen dataclass of options per stage, shared by the CLI, the config file and the Python API.

Each validates itself on construction and raises UsageError (exit 2 from the CLI) before any work.
Nothing heavy is imported here: building TokenizeOptions must not import torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parla.errors import UsageError
from parla.extras import require_quality_extra

DEFAULT_SNAC_MODEL = "hubertsiuzdak/snac_24khz"
DEFAULT_TEXT_TOKENIZER = "canopylabs/orpheus-3b-0.1-pretrained"
RESAMPLERS = ("auto", "mpg123", "soxr", "scipy")
ENGINES = ("local", "ray")
VAD_BACKENDS = ("auto", "energy", "silero")
SELECT_BY = ("random", "quality")
GROUP_BY = ("variant", "accents", "none")
# the grouping options at the values that mean parla's first behaviour (the Catalan dialects
# matched by name and accents): a run at these values records none of them, so its output is
# the same, byte for byte, as before they existed
GROUPING_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "language": (None, "ca"), "group_by": (None,), "groups": (None,), "min_group_clips": (1,)}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def _floats_as_floats(options: Any) -> None:
    """A whole number given for a float option (``min_duration=1`` from Python) becomes a float,
    as the CLI and config files make it: the settings a shard records are then the same."""
    for option in dataclasses.fields(options):
        value = getattr(options, option.name)
        if option.type in ("float", "float | None") and type(value) is int:
            object.__setattr__(options, option.name, float(value))


def parse_storage_options(text: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``--storage_options`` as given (JSON text on the command line, a table in a config
    file) as a dict; bad JSON is one UsageError that does not echo the value (it may hold a
    secret)."""
    if text is None or isinstance(text, Mapping):
        return dict(text) if text is not None else None
    if not isinstance(text, str):
        raise UsageError("--storage_options must be a JSON object or a table of options")
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UsageError(f"--storage_options is not valid JSON ({error.msg} at character "
                         f"{error.pos})") from None
    if not isinstance(value, dict):
        raise UsageError("--storage_options must be a JSON object, such as "
                         '\'{"endpoint_url": "http://localhost:9000"}\'')
    return value


def _storage_options_as_dict(options: Any) -> None:
    object.__setattr__(options, "storage_options",
                       parse_storage_options(options.storage_options))


@dataclass(frozen=True)
class ConditioningOptions:
    """TTS-grade clean-up of each clip (trim, loudness, quality rejects, text normalisation)."""

    condition_audio: bool = True  # False: every audio step below off (text rules still apply)
    trim_silence: bool = True
    keep_silence_ms: float = 100.0
    vad: str = "energy"  # energy: measured tighter and 50x faster than silero (docs/QUALITY.md)
    loudness_norm: bool = True
    target_lufs: float = -20.0
    true_peak_db: float = -1.0
    max_clipped_fraction: float | None = 0.001  # None: no clipping check
    min_snr_db: float | None = 10.0
    min_chars_per_sec: float | None = 4.0
    max_chars_per_sec: float | None = 30.0
    normalize_text: bool = True
    reject_foreign_text: bool = True

    def __post_init__(self) -> None:
        _floats_as_floats(self)
        _check(self.keep_silence_ms >= 0, "--keep_silence_ms must be >= 0")
        _check(self.vad in VAD_BACKENDS, f"--vad must be one of {', '.join(VAD_BACKENDS)}")
        _check(-70 < self.target_lufs < 0, "--target_lufs must be between -70 and 0")
        _check(self.true_peak_db <= 0, "--true_peak_db must be <= 0")
        _check(self.max_clipped_fraction is None or 0 <= self.max_clipped_fraction <= 1,
               "--max_clipped_fraction must be in [0, 1]")
        if self.min_chars_per_sec is not None and self.max_chars_per_sec is not None:
            _check(self.min_chars_per_sec <= self.max_chars_per_sec,
                   "--min_chars_per_sec must not exceed --max_chars_per_sec")


@dataclass(frozen=True)
class PrepareOptions:
    datasets: tuple[str, ...]
    output_dir: str
    target_sample_rate: int = 24000
    min_duration: float = 1.0
    max_duration: float = 20.0
    min_up_votes: int | None = None
    max_down_votes: int | None = None
    min_samples_per_speaker: int = 3
    balance_speakers: bool = True
    max_samples_per_speaker: int = 50
    samples_per_dialect: int | None = None
    # random: each speaker's first clips in seeded order that pass every check; quality: every
    # candidate is decoded and scored, the best are kept (DNSMOS when scored, else SNR)
    select_by: str = "random"
    # clips of one speaker considered at most: spares for back-fill, or what quality ranks
    # (None: twice --max_samples_per_speaker)
    max_candidates_per_speaker: int | None = None
    validation_fraction: float = 0.1
    seed: int = 42
    # auto: mpg123 where libmpg123 loads (MP3 decoded straight to the target rate), else soxr;
    # prepare records which one ran
    resampler: str = "auto"
    num_workers: int | None = None  # None: every core
    rows_per_shard: int = 256  # the unit of work and of resume (docs/PERFORMANCE.md)
    save_speaker_metadata: bool = False
    dry_run: bool = False
    overwrite: bool = False
    engine: str = "local"
    cache_dir: str | None = None  # datasets' cache; Hub snapshots go to <cache_dir>/hub
    # a Hub dataset that answers 404/401/403 but is cached: use the stale copy (else an error)
    allow_stale_cache: bool = False
    conditioning: ConditioningOptions = field(default_factory=ConditioningOptions)
    dnsmos: bool = False  # DNSMOS scores per row: the parla[quality] extra (docs/QUALITY.md)
    min_dnsmos: float | None = None  # reject (low_dnsmos) under this overall DNSMOS; needs dnsmos
    # Common Voice locale (es, cy, pt-BR): its text rules and built-in groups; None: from the
    # release folder's name (or a dataset's, cv_23_ca_central), else ca
    language: str | None = None
    # where the groups (configs) come from: variant | accents | none (one group); None: each
    # source's name, else its rows' accents/variant, matched against the groups file or the
    # language's built-in groups (ca: the seven Catalan dialects)
    group_by: str | None = None
    groups: str | None = None  # groups file (TOML or YAML): ids, names, voices, aliases
    min_group_clips: int = 1  # a group with fewer clips is left out (its rows: rejects)
    # fsspec options for URL paths (an endpoint, a profile); credentials come from the store's
    # own chain. JSON text from the CLI, a table from a config file.
    storage_options: dict[str, Any] | None = None
    break_lock: bool = False  # take over another run's lock on an object-store output at once

    def __post_init__(self) -> None:
        _floats_as_floats(self)
        _storage_options_as_dict(self)
        if isinstance(self.datasets, str):
            object.__setattr__(self, "datasets", (self.datasets,))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        _check(len(self.datasets) > 0, "--datasets needs at least one source")
        _check(bool(self.output_dir), "--output_dir is required")
        _check(8000 <= self.target_sample_rate <= 192000,
               "--target_sample_rate must be in [8000, 192000]")
        _check(self.min_duration >= 0, "--min_duration must be >= 0")
        _check(self.min_duration <= self.max_duration,
               f"--min_duration ({self.min_duration}) must not exceed --max_duration "
               f"({self.max_duration})")
        _check(self.min_samples_per_speaker >= 1, "--min_samples_per_speaker must be >= 1")
        _check(self.max_samples_per_speaker >= 1, "--max_samples_per_speaker must be >= 1")
        _check(self.samples_per_dialect is None or self.samples_per_dialect >= 1,
               "--samples_per_dialect must be >= 1")
        _check(self.select_by in SELECT_BY, f"--select_by must be one of {', '.join(SELECT_BY)}")
        _check(self.max_candidates_per_speaker is None or self.max_candidates_per_speaker >= 1,
               "--max_candidates_per_speaker must be >= 1")
        _check(0 <= self.validation_fraction < 1, "--validation_fraction must be in [0, 1)")
        _check(self.resampler in RESAMPLERS, f"--resampler must be one of {', '.join(RESAMPLERS)}")
        _check(self.num_workers is None or self.num_workers >= 1, "--num_workers must be >= 1")
        _check(self.rows_per_shard >= 1, "--rows_per_shard must be >= 1")
        _check(self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}")
        _check(self.min_dnsmos is None or self.dnsmos, "--min_dnsmos needs --dnsmos")
        _check(self.min_dnsmos is None or 1 <= self.min_dnsmos <= 5,
               "--min_dnsmos must be in [1, 5] (DNSMOS is a 1-5 opinion score)")
        _check(self.group_by is None or self.group_by in GROUP_BY,
               f"--group_by must be one of {', '.join(GROUP_BY)}")
        _check(self.min_group_clips >= 1, "--min_group_clips must be >= 1")
        _check(self.min_group_clips == 1 or self.group_by is not None,
               "--min_group_clips needs --group_by (groups matched by name are kept whole)")
        _check(self.language is None or re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*",
                                                     self.language) is not None,
               f"--language must be a Common Voice locale (es, cy, pt-BR), got {self.language!r}")
        if self.dnsmos:
            require_quality_extra()

    @property
    def candidates_per_speaker(self) -> int:
        """Clips of one speaker the plan carries: the quota and its spares."""
        return self.max_candidates_per_speaker or 2 * self.max_samples_per_speaker


@dataclass(frozen=True)
class TokenizeOptions:
    input_dir: str
    output_dir: str
    snac_model: str = DEFAULT_SNAC_MODEL
    text_tokenizer: str = DEFAULT_TEXT_TOKENIZER
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_gpu_workers: int | None = None  # None: every visible GPU
    workers_per_gpu: int = 1
    num_cpu_workers: int = 1
    batch_seconds: float | None = None  # None: from free GPU memory (CPU: a quarter of RAM)
    precision: str = "exact"  # exact (float32, TF32 off) | bf16
    # SNAC's encoder through torch.compile, once it gives eager's codes on the first batch
    torch_compile: bool = False
    format: str = "orpheus"  # orpheus | codes
    dedupe_frames: bool = True
    max_length: int = 8192
    # also write the `packed` config: whole examples in rows of exactly this many tokens
    pack_length: int | None = None
    seed: int = 42  # order of the examples in `packed`
    # configs to tokenize (None: every config of the input, each clip once); `all` names every
    # dialect config
    configs: tuple[str, ...] | None = None
    overwrite: bool = False
    engine: str = "local"
    storage_options: dict[str, Any] | None = None  # as PrepareOptions.storage_options
    break_lock: bool = False

    def __post_init__(self) -> None:
        _floats_as_floats(self)
        _storage_options_as_dict(self)
        if self.configs is not None:
            object.__setattr__(self, "configs", tuple(self.configs))
            _check(len(self.configs) > 0, "--configs needs at least one config name")
        _check(bool(self.input_dir), "--input_dir is required")
        _check(bool(self.output_dir), "--output_dir is required")
        _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
               f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _check(self.format in ("orpheus", "codes"), "--format must be orpheus or codes")
        _check(self.workers_per_gpu >= 1, "--workers_per_gpu must be >= 1")
        _check(self.num_gpu_workers is None or self.num_gpu_workers >= 1,
               "--num_gpu_workers must be >= 1")
        _check(self.num_cpu_workers >= 1, "--num_cpu_workers must be >= 1")
        _check(self.batch_seconds is None or self.batch_seconds > 0, "--batch_seconds must be > 0")
        _check(self.precision in ("exact", "bf16"), "--precision must be exact or bf16")
        _check(self.max_length >= 16, "--max_length must be >= 16")
        _check(self.pack_length is None or self.pack_length >= 16, "--pack_length must be >= 16")
        _check(self.pack_length is None or self.format == "orpheus",
               "--pack_length needs --format orpheus (codes have no token sequences to pack)")
        _check(self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}")
        _check(os.path.abspath(self.input_dir) != os.path.abspath(self.output_dir),
               "--output_dir must differ from --input_dir")


@dataclass(frozen=True)
class PublishOptions:
    folder: str
    repo_id: str
    private: bool = False
    revision: str | None = None
    commit_message: str | None = None
    num_workers: int | None = None
    storage_options: dict[str, Any] | None = None  # for a folder given as a URL

    def __post_init__(self) -> None:
        _storage_options_as_dict(self)
        _check(bool(self.folder), "a folder to publish is required")
        parts = self.repo_id.split("/") if self.repo_id else []
        _check(len(parts) == 2 and all(parts),
               f"--repo_id must look like 'user/name', got {self.repo_id!r}")


def options_from_mapping(cls: type, values: dict[str, Any]) -> Any:
    """Build an options class from a dict (config file or CLI), rejecting unknown keys clearly."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"unknown option(s) for {cls.__name__}: {', '.join(unknown)}")
    return cls(**values)
