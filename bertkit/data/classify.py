"""Sentence and sentence-pair classification data: CSV/TSV/JSONL rows -> examples -> features."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any
from dataclasses import dataclass, field

from bertkit.batching import Feature
from bertkit.data.io import DEFAULT_ENCODING, iter_records
from bertkit.data.windows import stride_windows
from bertkit.errors import BertkitError
from bertkit.tokenizer import BertTokenizer


@dataclass
class ClassifyExample:
    text: str
    pair: str | None
    label: str | list[str] | None  # a list for multi-label; None when predicting
    line: int
    id: str | int | None = field(default=None, compare=False)  # the row's "id" column; predictions carry it


def _parse_multi_label(value: object) -> list[str]:
    """A JSON list, a JSON-list string, or a string of labels separated by | or ,."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            return [str(v) for v in json.loads(text)]
        except json.JSONDecodeError:
            pass
    separator = "|" if "|" in text else ","
    return [part.strip() for part in text.split(separator) if part.strip()]


def iter_classify(
    path: str | os.PathLike,
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str = "label",
    multi_label: bool = False,
    require_labels: bool = True,
    encoding: str = DEFAULT_ENCODING,
) -> Iterator[ClassifyExample]:
    """Labelled (or, for prediction, unlabelled) rows, streamed and checked one by one."""
    return classify_rows(iter_records(path, encoding), str(path), text_column, pair_column, label_column, multi_label,
                         require_labels)


def classify_rows(
    rows: Iterable[tuple[int, dict[str, Any]]],
    where: str,
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str = "label",
    multi_label: bool = False,
    require_labels: bool = True,
) -> Iterator[ClassifyExample]:
    """Examples from numbered rows (of a file, or of records in memory), named `where` in errors.

    Training rows need a non-blank text; prediction rows may be blank (their prediction says so), so that every
    input row gets its output line.
    """
    path = where
    text_columns = [text_column] + ([pair_column] if pair_column else [])
    checked_columns = False
    for line, row in rows:
        if not checked_columns:  # a misnamed column fails at the first row, not at every row
            for column in text_columns + ([label_column] if require_labels else []):
                if column not in row:
                    raise BertkitError(f"{path}:{line}: no column {column!r} (columns: {', '.join(map(str, row))})")
            checked_columns = True
        texts = []
        for column in text_columns:
            value = row.get(column)
            if not isinstance(value, str) or (require_labels and not value.strip()):
                problem = "missing" if value is None else "empty" if isinstance(value, str) else f"not text ({value!r})"
                raise BertkitError(f"{path}:{line}: {problem} text in column {column!r}")
            texts.append(value)
        label = None
        if label_column in row and (require_labels or row[label_column] not in (None, "")):
            raw = row[label_column]
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                raise BertkitError(f"{path}:{line}: empty label in column {label_column!r}")
            label = _parse_multi_label(raw) if multi_label else str(raw).strip()
        elif require_labels:
            raise BertkitError(f"{path}:{line}: no column {label_column!r}")
        yield ClassifyExample(texts[0], texts[1] if pair_column else None, label, line, row.get("id"))


def label_list(examples: list[ClassifyExample]) -> list[str]:
    """The label set of a training file, sorted: the id2label order of a new model."""
    labels: set[str] = set()
    for example in examples:
        labels.update(example.label if isinstance(example.label, list) else [example.label])
    return sorted(labels)


def check_labels(examples: list[ClassifyExample], label2id: dict[str, int], path: str | os.PathLike) -> None:
    """Labels outside the training set cannot be learned or scored: fail on the first, naming it."""
    for example in examples:
        for label in example.label if isinstance(example.label, list) else [example.label]:
            if label is not None and label not in label2id:
                known = ", ".join(label2id)
                raise BertkitError(f"{path}:{example.line}: label {label!r} is not one of the training labels ({known})")


LONG_POLICIES = ("truncate", "head+tail", "windows")
# Sun et al. 2019 (How to Fine-Tune BERT for Text Classification?): the first 128 and the last 382 of 510 tokens
# read best; a shorter input keeps the same shares.
HEAD_SHARE = 128 / 510


def head_and_tail(tokens: list[int], budget: int) -> list[int]:
    """The first and the last tokens of a text longer than `budget`, HEAD_SHARE of them from its start."""
    if len(tokens) <= budget:
        return tokens
    head = round(budget * HEAD_SHARE)
    return tokens[:head] + tokens[len(tokens) - (budget - head):]


def window_budget(max_length: int, stride: int) -> int:
    """Tokens of text per window (all but [CLS] and [SEP]); a stride (overlap) must leave each window new ones."""
    budget = max_length - 2
    if not 0 <= stride < budget:
        raise BertkitError(f"--stride {stride} must be at least 0 and less than a window's {budget} text tokens "
                           f"(--max-seq-len {max_length} less [CLS] and [SEP])")
    return budget


def encode_classify(
    examples: list[ClassifyExample],
    tokenizer: BertTokenizer,
    max_length: int,
    label2id: dict[str, int] | None = None,
    long: str = "truncate",
    stride: int = 0,
) -> list[Feature]:
    """Token ids, segments and (when label2id is given) the label: an id, or a 0/1 vector for multi-label.

    A text longer than `max_length` is read by the `long` policy: "truncate" keeps its start, "head+tail" its start
    and its end (`head_and_tail`), "windows" keeps it all, `[CLS] text [SEP]`, with "windows": the [first, end)
    token ranges of windows of `max_length` sharing `stride` tokens, and "spans": each window's character range.
    """
    pairs = examples[0].pair is not None if examples else False
    if long not in LONG_POLICIES:
        raise BertkitError(f"--long must be one of {', '.join(LONG_POLICIES)}, got {long!r}")
    if pairs and long != "truncate":
        raise BertkitError(f"--long {long} reads single texts; sentence pairs are truncated (--long truncate)")
    budget = window_budget(max_length, stride) if long == "windows" else max_length - 2
    encodings = tokenizer.encode_batch(
        [e.text for e in examples],
        [e.pair for e in examples] if pairs else None,
        max_length=max_length,
        truncation="longest_first" if long == "truncate" else "do_not_truncate",
    )
    features = []
    for example, encoding in zip(examples, encodings):
        feature: Feature = {"input_ids": encoding.input_ids, "token_type_ids": encoding.token_type_ids}
        if long == "head+tail":
            ids = [encoding.input_ids[0], *head_and_tail(encoding.input_ids[1:-1], budget), encoding.input_ids[-1]]
            feature = {"input_ids": ids, "token_type_ids": [0] * len(ids)}
        elif long == "windows":
            ranges = stride_windows(len(encoding.input_ids) - 2, budget, budget - stride)
            feature["windows"] = [list(r) for r in ranges]
            if label2id is None:  # predicting: where each window lies in the text, for its scores
                offsets = encoding.offsets[1:-1]
                feature["spans"] = [[offsets[first][0], offsets[end - 1][1]] if end > first else [0, 0]
                                    for first, end in ranges]
        if label2id is not None and example.label is not None:
            if isinstance(example.label, list):
                vector = [0.0] * len(label2id)
                for label in example.label:
                    vector[label2id[label]] = 1.0
                feature["labels"] = vector
            else:
                feature["labels"] = label2id[example.label]
        features.append(feature)
    return features
