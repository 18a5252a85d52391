"""The file readers: TSV unquoted, CSV by RFC 4180, one example per data row, errors at the row's own line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertkit.data.classify import iter_classify
from bertkit.data.io import iter_records
from bertkit.errors import BertkitError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_tsv_text_starting_with_a_quote_is_just_text(tmp_path):
    rows = ['"Great" film, really', "fine", '"quoted" and "more', "ok then", 'ends with a quote"']
    path = write(tmp_path / "train.tsv", "text\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(rows)))
    examples = list(iter_classify(path))
    assert [e.text for e in examples] == rows  # 5 rows, not 3
    assert [e.label for e in examples] == ["0", "1", "0", "1", "0"]
    assert [e.line for e in examples] == [2, 3, 4, 5, 6]


def test_hundred_tsv_rows_with_leading_quotes_are_hundred_examples(tmp_path):
    rows = [f'"{i} said the critic' if i % 7 == 0 else f"review {i}" for i in range(100)]
    path = write(tmp_path / "train.tsv", "text\tlabel\n" + "".join(f"{t}\tpos\n" for t in rows))
    assert [e.text for e in iter_classify(path)] == rows  # not 70


def test_tsv_with_a_tab_too_many_names_the_line(tmp_path):
    path = write(tmp_path / "train.tsv", "text\tlabel\na\tpos\nb\tpos\textra\n")
    with pytest.raises(BertkitError, match=r"train\.tsv:3: 3 fields, but the header has 2"):
        list(iter_records(path))


def test_csv_keeps_the_newline_inside_a_quoted_cell(tmp_path):
    path = write(tmp_path / "train.csv", 'text,label\n"first line\nsecond line",pos\n"say ""hi"", ok",neg\nlast,pos\n')
    examples = list(iter_classify(path))
    assert [e.text for e in examples] == ["first line\nsecond line", 'say "hi", ok', "last"]  # words not glued
    assert [e.line for e in examples] == [2, 4, 5]  # each row's first line


def test_csv_windows_line_ends_inside_a_cell(tmp_path):
    path = write(tmp_path / "train.csv", 'text,label\r\n"one\r\ntwo",pos\r\nthree,neg\r\n')
    assert [e.text for e in iter_classify(path)] == ["one\r\ntwo", "three"]


def test_unclosed_csv_quote_is_reported_where_it_opened(tmp_path):
    path = write(tmp_path / "train.csv", 'text,label\nfine,pos\n"never closed,neg\nmore,pos\nrows,neg\n')
    with pytest.raises(BertkitError) as error:
        list(iter_records(path))
    assert str(error.value) == f"{path}:3: a quote opened here is never closed"


def test_whitespace_only_rows_are_rows(tmp_path):
    path = write(tmp_path / "in.csv", "text\nfirst\n   \nthird\n")
    assert [(e.line, e.text) for e in iter_classify(path, require_labels=False)] == [(2, "first"), (3, "   "), (4, "third")]
    with pytest.raises(BertkitError, match=r"in\.csv:3: empty text in column 'text'"):
        list(iter_classify(write(tmp_path / "in.csv", "text,label\nfirst,a\n   ,b\n")))


def test_gbk_file_needs_and_accepts_its_encoding(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\n这本书很好,pos\n太差了,neg\n", encoding="gbk")
    with pytest.raises(BertkitError) as error:
        list(iter_classify(path))
    message = str(error.value)
    assert message.startswith(f"{path}:2: not valid UTF-8") and "--encoding gb18030" in message
    assert "\n" not in message
    assert [e.text for e in iter_classify(path, encoding="gb18030")] == ["这本书很好", "太差了"]
    with pytest.raises(BertkitError, match="unknown --encoding 'klingon'"):
        list(iter_classify(path, encoding="klingon"))


def test_id_column_is_kept(tmp_path):
    path = write(tmp_path / "in.tsv", "id\ttext\nr7\thello\nr9\tworld\n")
    assert [e.id for e in iter_classify(path, require_labels=False)] == ["r7", "r9"]
