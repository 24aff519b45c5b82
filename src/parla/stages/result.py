"""What every stage returns, and `parla.run` too: one shape for the Python API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StageResult:
    """Where a stage's output is and its numbers.

    ``output`` is the folder the stage wrote, or the published dataset's URL. ``statistics`` is
    what the stage's statistics file holds (dialect_statistics.json for prepare, with only each
    dialect's selection ``steps`` for a dry run; tokenization_stats.json for tokenize); it is
    empty for publish and for `parla.run`, whose ``steps`` hold each stage's own result, in
    order.
    """

    stage: str
    output: str
    statistics: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False  # prepare --dry_run: nothing was written
    steps: tuple[StageResult, ...] = ()

    @property
    def output_dir(self) -> Any:
        """``output`` as a folder (prepare and tokenize): a Path, or a UPath for a URL."""
        from parla.store.urls import as_path

        return as_path(self.output)

    def step(self, stage: str) -> StageResult | None:
        """The result of one stage of a run (``"prepare"``, ``"tokenize"``, ``"publish"``)."""
        return next((result for result in self.steps if result.stage == stage), None)
