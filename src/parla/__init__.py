"""parla builds text-to-speech training corpora: prepare -> tokenize -> publish.

The Python API mirrors the CLI: one options dataclass per stage, and one result shape::

    import parla

    result = parla.prepare(parla.PrepareOptions(datasets=("cv-corpus-23.0/ca",),
                                                output_dir="prepared"))
    print(result.statistics["total"]["rows"], "clips in", result.output)

Every stage returns a `StageResult`. Library code logs (logger ``parla``) and never prints.
The stage functions are imported on first use, so ``import parla`` stays light (no torch).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from parla.errors import ParlaError, UsageError
from parla.options import ConditioningOptions, PrepareOptions, PublishOptions, TokenizeOptions
from parla.stages.result import StageResult

try:
    __version__ = version("parla")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0"

# name -> the module that defines it, imported when first used
_STAGES = {"prepare": "parla.stages.prepare", "tokenize": "parla.stages.tokenize",
           "publish": "parla.stages.publish", "run": "parla.stages.run"}

__all__ = ["ConditioningOptions", "ParlaError", "PrepareOptions", "PublishOptions",
           "StageResult", "TokenizeOptions", "UsageError", "__version__", "prepare", "publish",
           "run", "tokenize"]


def __getattr__(name: str) -> Any:
    if name in _STAGES:
        return getattr(import_module(_STAGES[name]), name)
    raise AttributeError(f"module 'parla' has no attribute {name!r}")
