"""Reading user files with errors that name the file, the line and the problem."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bertkit.errors import BertkitError

_PROGRESS_STEP = 1 << 20  # bytes between progress-bar updates, so a huge corpus is not slowed by the bar


def read_text(path: str | os.PathLike) -> str:
    """A whole UTF-8 file (a leading BOM dropped); a decoding error names its line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BertkitError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BertkitError(f"{path}: is a directory, expected a file") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise BertkitError(f"{path}:{line}: not valid UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8") from None


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a non-empty UTF-8 file."""
    text = read_text(path)
    if not text.strip():
        raise BertkitError(f"{path}: the file is empty")
    return text.splitlines()


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    records = []
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BertkitError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise BertkitError(f"{path}:{number}: expected a JSON object")
        records.append((number, record))
    return records


def read_records(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) from CSV, TSV (by extension) or JSON lines (.jsonl/.json)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(path)
    if suffix not in (".csv", ".tsv"):
        raise BertkitError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv or .jsonl")
    lines = read_text_lines(path)
    delimiter = "," if suffix == ".csv" else "\t"
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
        rows = []
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise BertkitError(f"{path}:{number}: {len(row)} fields, but the header has {len(header)}")
            rows.append((number, dict(zip(header, row))))
    except csv.Error as exc:
        raise BertkitError(f"{path}:{reader.line_num}: {exc}") from None
    if not rows:
        raise BertkitError(f"{path}: a header but no rows")
    return rows


def check_corpus_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Check every corpus file up front, so a typo in the last path fails before hours of tokenizing."""
    if not paths:
        raise BertkitError("no corpus files given")
    files = [Path(path) for path in paths]
    for path in files:
        if path.is_dir():
            raise BertkitError(f"{path}: is a directory, expected a corpus file")
        if not path.is_file():
            raise BertkitError(f"{path}: no such file")
    return files


def stream_corpus_lines(files: list[Path], progress: tqdm | None = None) -> Iterator[str | None]:
    """The stripped non-blank lines of the corpus, in order, and None wherever a document ends.

    Reads line by line (a single file may be larger than memory). A blank line and the end of each file end a
    document; consumers skip repeated Nones. The bytes read go to `progress` when given.
    """
    has_text = False
    for path in files:
        unreported = 0
        try:
            with path.open("rb") as lines:
                for number, raw in enumerate(lines, start=1):
                    try:
                        line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
                    except UnicodeDecodeError as exc:
                        raise BertkitError(
                            f"{path}:{number}: not valid UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8"
                        ) from None
                    if line:
                        has_text = True
                    yield line or None
                    unreported += len(raw)
                    if progress is not None and unreported >= _PROGRESS_STEP:
                        progress.update(unreported)
                        unreported = 0
        except OSError as exc:
            raise BertkitError(f"{path}: cannot read ({exc.strerror})") from None
        if progress is not None:
            progress.update(unreported)
        yield None
    if not has_text:
        raise BertkitError(f"corpus is empty: {', '.join(map(str, files))} hold(s) no text")
