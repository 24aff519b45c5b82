"""Reading a clip's bytes inside a worker, so that the driver never carries audio."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parla.errors import RowRejected
from parla.store.urls import as_path, bounded, filesystem, is_remote


def read_clip(file: str | os.PathLike) -> bytes:
    """A clip file's bytes; a missing or unreadable file is a bad row (RowRejected), not a
    failed run."""
    try:
        path = as_path(file)
        if is_remote(path):  # a store that stops answering is a stalled run, not a bad row
            fs, inner = filesystem(path)
            return bounded(fs, "cat_file", inner)
        return path.read_bytes()
    except FileNotFoundError:
        raise RowRejected("missing_file") from None
    except OSError as error:  # a folder, or no permission
        raise RowRejected("unreadable_file", error.strerror or "") from None


@dataclass
class ClipReader:
    """Reads one source's clip bytes inside a worker, so the driver never carries audio.

    It pickles small: a clips folder, or a `datasets.Dataset` backed by memory-mapped Arrow
    files (pickled as their paths), which every worker opens itself.
    """

    clips_dir: Path | None = None
    dataset: Any = None

    def read(self, row: int, path: str) -> bytes:
        if self.clips_dir is not None:
            # the path was checked by name when the source was loaded (`clips_outside`); a
            # symlink in clips/ is the release's clip and is followed, not resolved and refused
            return read_clip(self.clips_dir / path)
        import pyarrow as pa

        data = self.dataset.data
        table = data.table if hasattr(data, "table") else data
        item = table.column("audio").take(pa.array([row], type=pa.int64()))[0].as_py()
        if not item or not item.get("bytes"):
            raise RowRejected("missing_audio", "the row has no audio bytes")
        return item["bytes"]


