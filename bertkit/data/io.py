"""Reading user files with errors that name the file, the line and the problem."""

from __future__ import annotations

import codecs
import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bertkit.errors import BertkitError
from bertkit.options import Options, option

_PROGRESS_STEP = 1 << 20  # bytes between progress-bar updates, so a huge corpus is not slowed by the bar


DEFAULT_ENCODING = "utf-8"


@dataclass
class ReadOptions(Options):
    """How data files are read: a base of the option sets of the commands that read them (finetune, evaluate,
    predict)."""

    encoding: str = option(DEFAULT_ENCODING, "text encoding of the data files, e.g. gb18030 for the GBK/GB18030 "
                                             "files Chinese tools write")

    def __post_init__(self) -> None:
        super().__post_init__()
        _codec(self.encoding, first_line=False)  # an unknown name fails when given, not at the first file


def _decode_error(path: Path, line: int, byte: int, encoding: str) -> BertkitError:
    """The one-line message for undecodable bytes, with the way out: another --encoding or re-saving the file."""
    hint = ("; if the file is GBK/GB18030 (as many Chinese tools write), pass --encoding gb18030, or save it as UTF-8"
            if _is_utf8(encoding) else "; pass the file's --encoding")
    name = "UTF-8" if _is_utf8(encoding) else encoding
    return BertkitError(f"{path}:{line}: not valid {name} (byte {byte:#04x}){hint}")


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _codec(encoding: str, first_line: bool) -> str:
    """The codec to decode with: UTF-8 drops a leading BOM; an unknown or not ASCII-compatible encoding (UTF-16)
    is a one-line error."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise BertkitError(f"unknown --encoding {encoding!r} (try utf-8, gb18030, gbk, latin-1)") from None
    if "\n".encode(encoding) != b"\n":  # files are read line by line, split at the byte 0x0a
        raise BertkitError(f"--encoding {encoding!r} is not ASCII-compatible; save the file as UTF-8")
    return "utf-8-sig" if first_line and _is_utf8(encoding) else encoding


def read_text(path: str | os.PathLike, encoding: str = DEFAULT_ENCODING) -> str:
    """A whole file (a leading UTF-8 BOM dropped); a decoding error names its line."""
    path = Path(path)
    codec = _codec(encoding, first_line=True)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BertkitError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BertkitError(f"{path}: is a directory, expected a file") from None
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, raw[: exc.start].count(b"\n") + 1, raw[exc.start], encoding) from None


def iter_lines(
    path: str | os.PathLike, progress: tqdm | None = None, encoding: str = DEFAULT_ENCODING, keep_ends: bool = False
) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) of a text file, read one line at a time (it may exceed memory).

    A leading UTF-8 BOM is dropped; a decoding error names its line. The bytes read go to `progress` when given.
    `keep_ends` keeps each line's "\n" or "\r\n", which a CSV parser needs to keep newlines inside quoted cells.
    """
    path = Path(path)
    if path.is_dir():
        raise BertkitError(f"{path}: is a directory, expected a file")
    first, rest = _codec(encoding, first_line=True), _codec(encoding, first_line=False)
    unreported = 0
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    line = raw.decode(first if number == 1 else rest)
                except UnicodeDecodeError as exc:
                    raise _decode_error(path, number, raw[exc.start], encoding) from None
                yield number, line if keep_ends else line.rstrip("\r\n")
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


def iter_jsonl(path: str | os.PathLike, encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file, streamed; an empty file is an error."""
    empty = True
    for number, line in iter_lines(path, encoding=encoding):
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


def _tsv_rows(path: Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of each line: split on tabs, nothing quoted, as CoNLL, GLUE and the BERT scripts write TSV."""
    for number, line in iter_lines(path, encoding=encoding):
        yield number, line.split("\t")


def _csv_rows(path: Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, cells) by RFC 4180: quoted cells keep their commas, quotes and newlines.

    An unclosed quote runs to the end of the file; it is reported at the line of the row that opened it.
    """
    reader = csv.reader((line for _, line in iter_lines(path, encoding=encoding, keep_ends=True)), strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = "a quote opened here is never closed" if "end of data" in str(exc) else str(exc)
            raise BertkitError(f"{path}:{start}: {problem}") from None
        yield start, row
        start = reader.line_num + 1


def iter_records(path: str | os.PathLike, encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) from CSV, TSV (by extension) or JSON lines (.jsonl/.json), streamed.

    Every data row is one record, a whitespace-only one included; only lines with no characters at all are not
    rows. A row with another number of fields than the header is an error naming its line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        yield from iter_jsonl(path, encoding)
        return
    if suffix not in (".csv", ".tsv"):
        raise BertkitError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv or .jsonl")
    rows = ((number, cells) for number, cells in (_csv_rows if suffix == ".csv" else _tsv_rows)(path, encoding)
            if cells not in ([], [""]))
    first = next(rows, None)
    if first is None:
        raise BertkitError(f"{path}: the file is empty")
    header = first[1]
    empty = True
    for number, row in rows:
        if len(row) != len(header):
            raise BertkitError(f"{path}:{number}: {len(row)} fields, but the header has {len(header)}")
        empty = False
        yield number, dict(zip(header, row))
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
