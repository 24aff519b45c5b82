"""Common Voice TSV files, read line by line: the rows, and the lines that are not rows."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from parla.errors import SourceError
from parla.progress import get_logger
from parla.store.urls import as_path, is_remote

log = get_logger("sources")


@dataclass(frozen=True)
class BadLine:
    """A TSV line that cannot be a row: ``reason`` is stable, ``detail`` says what is wrong."""

    number: int  # 1-based, the header is line 1
    reason: str  # extra_fields | missing_fields | bad_encoding
    detail: str


def _open_lines(path: Path) -> io.BufferedReader:
    """The file, buffered, read line by line (an object store's file objects lack
    ``readlines(hint)``)."""
    path = as_path(path)
    return io.BufferedReader(path.open("rb"), 1 << 20) if is_remote(path) else open(path, "rb")


def read_tsv_lines(path: Path) -> tuple[pd.DataFrame, list[BadLine]]:
    """A Common Voice TSV as strings, and the lines that are not rows.

    The files are unquoted (a sentence may begin with a quote character), so a line is split on
    its tabs and nothing else. Each line is decoded on its own: real releases hold lines with
    stray tabs or bytes that are not UTF-8, and those are bad rows, not a bad file.
    """
    bad: list[BadLine] = []
    with _open_lines(path) as handle:
        try:
            header = handle.readline().decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
        except UnicodeDecodeError:
            raise SourceError(f"{path}: the header line is not UTF-8") from None
        names = header.split("\t")
        path_index = names.index("path") if "path" in names else None
        columns: list[list[str]] = [[] for _ in names]
        number = 1  # of the last line read
        while chunk := handle.readlines(_TSV_CHUNK_BYTES):
            first, number = number + 1, number + len(chunk)
            try:  # the whole chunk at once; line by line only where it holds a bad byte
                lines = b"".join(chunk).decode("utf-8").split("\n")[:len(chunk)]
            except UnicodeDecodeError:
                lines = [_decoded_line(raw, first + i, bad) for i, raw in enumerate(chunk)]
            lines = [line.rstrip("\r\n") for line in lines]
            good = []
            for offset, line in enumerate(lines):
                tabs = line.count("\t")
                if tabs == len(names) - 1:
                    good.append(line)
                elif line:  # a blank line, or one already rejected for its bytes, is skipped
                    line_number = first + offset
                    reason = "extra_fields" if tabs >= len(names) else "missing_fields"
                    fields = line.split("\t")
                    # the clip it probably names: stray tabs are usually in the sentence
                    clip = (f" (path field: {fields[path_index]})" if path_index is not None
                            and path_index < len(fields) else "")
                    bad.append(BadLine(line_number, reason, f"line {line_number} has "
                                       f"{tabs + 1} tab-separated fields, the header "
                                       f"{len(names)}{clip}"))
            # every good line has exactly len(names) fields: split them all at once
            fields = "\t".join(good).split("\t") if good else []
            for index, column in enumerate(columns):
                column.extend(fields[index::len(names)])
    bad.sort(key=lambda line: line.number)
    return pd.DataFrame(dict(zip(names, columns, strict=True)), dtype=str), bad


_TSV_CHUNK_BYTES = 32 << 20  # read and decoded in chunks: bounded memory, C-speed decoding


def _decoded_line(raw: bytes, number: int, bad: list[BadLine]) -> str:
    """One line decoded, or "" (and a bad_encoding reject) when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad.append(BadLine(number, "bad_encoding", f"line {number}: byte "
                           f"0x{raw[error.start]:02x} at offset {error.start} is not UTF-8"))
        return ""


def read_cv_tsv(path: Path) -> pd.DataFrame:
    """The rows of a Common Voice TSV (unquoted); lines that are not rows are left out."""
    table, bad = read_tsv_lines(path)
    if bad:
        log.debug("%s: %d lines that are not rows left out", path, len(bad))
    return table
