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


def iter_lines(path: str | os.PathLike, progress: tqdm | None = None) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) of a UTF-8 file, read one line at a time (it may exceed memory).

    A leading BOM is dropped; a decoding error names its line. The bytes read go to `progress` when given.
    """
    path = Path(path)
    if path.is_dir():
        raise BertkitError(f"{path}: is a directory, expected a file")
    unreported = 0
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise BertkitError(
                        f"{path}:{number}: not valid UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8"
                    ) from None
                yield number, line.rstrip("\r\n")
                unreported += len(raw)
                if progress is not None and unreported >= _PROGRESS_STEP:
                    progress.update(unreported)
                    unreported = 0
    except FileNotFoundError:
        raise BertkitError(f"{path}: no such file") from None
    except OSError as exc:
        raise BertkitError(f"{path}: cannot read ({exc.strerror})") from None
    if progress is not None:
        progress.update(unreported)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file, streamed; an empty file is an error."""
    empty = True
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BertkitError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise BertkitError(f"{path}:{number}: expected a JSON object")
        empty = False
        yield number, record
    if empty:
        raise BertkitError(f"{path}: the file is empty")


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) from CSV, TSV (by extension) or JSON lines (.jsonl/.json), streamed."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        yield from iter_jsonl(path)
        return
    if suffix not in (".csv", ".tsv"):
        raise BertkitError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv or .jsonl")
    reader = csv.reader((line for _, line in iter_lines(path)), delimiter="," if suffix == ".csv" else "\t")
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise BertkitError(f"{path}: the file is empty")
        empty = True
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise BertkitError(f"{path}:{number}: {len(row)} fields, but the header has {len(header)}")
            empty = False
            yield number, dict(zip(header, row))
    except csv.Error as exc:
        raise BertkitError(f"{path}:{reader.line_num}: {exc}") from None
    if empty:
        raise BertkitError(f"{path}: a header but no rows")


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
        for _, line in iter_lines(path, progress):
            line = line.strip()
            has_text = has_text or bool(line)
            yield line or None
        yield None
    if not has_text:
        raise BertkitError(f"corpus is empty: {', '.join(map(str, files))} hold(s) no text")
