"""Time-bounded fuzzing (hypothesis): the readers and the server's request parsing never fail with anything
but their documented errors.

A reader either returns examples or raises BertkitError (one line, naming the file); `/v1/predict` answers
200 or a 4xx with a one-line `detail`, never a 500. Each test prints how many cases it ran.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertkit.errors import BertkitError
from bertkit.tasks import TASKS
from tests.test_server import classify_dir, one_torch_thread, running  # noqa: F401 (fixtures)

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Characters that matter to the formats: separators, quotes, brackets, line ends, a BOM, CJK, a surrogate escape.
TOKENS = ["text", "label", "pair", "tokens", "tags", "id", "data", "paragraphs", "context", "qas", "question",
          "answers", "answer_start", "is_impossible", ",", "\t", '"', "'", "\n", "\r\n", "\r", " ", "{", "}", "[", "]",
          ":", "\\", "\\ud800", "null", "true", "0", "-1", "1e999", "B-PER", "I-LOC", "O", "\ufeff", "好", "é", "\x00"]
raw_text = st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=40).map("".join)
json_scalar = st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True) | st.text(max_size=8)
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.sampled_from(TOKENS[:14]) | st.text(max_size=4), inner, max_size=5),
                          max_leaves=20)
records = st.lists(st.dictionaries(st.sampled_from(["text", "label", "pair", "tokens", "tags", "id"]), json_value,
                                   max_size=4), max_size=5)
counts = {"readers": 0, "server": 0}


def _read(task: str, suffix: str, content: bytes, **settings_: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(content)
        counts["readers"] += 1
        try:
            examples = TASKS[task](settings_ or None).read(path)
        except BertkitError as exc:
            assert "\n" not in str(exc), str(exc)
            return
        assert isinstance(examples, list)


@FUZZ
@given(suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]), content=raw_text, multi=st.booleans())
def test_classify_readers(suffix, content, multi):
    header = {".csv": "text,label\n", ".tsv": "text\tlabel\n", ".jsonl": ""}[suffix]
    _read("classify", suffix, (header + content).encode("utf-8", "surrogatepass"), multi_label=multi)


@FUZZ
@given(rows=records, multi=st.booleans())
def test_classify_jsonl_records(rows, multi):
    content = "".join(json.dumps(row) + "\n" for row in rows)
    _read("classify", ".jsonl", content.encode(), multi_label=multi)


@FUZZ
@given(suffix=st.sampled_from([".conll", ".jsonl"]), content=raw_text, rows=records)
def test_ner_readers(suffix, content, rows):
    _read("ner", suffix, content.encode("utf-8", "surrogatepass"))
    _read("ner", ".jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())


@FUZZ
@given(document=json_value, context=st.text(max_size=30), answer=json_value)
def test_squad_reader(document, context, answer):
    _read("qa", ".json", json.dumps(document).encode())
    squad = {"data": [{"paragraphs": [{"context": context, "qas": [{"id": "q", "question": "who ?",
                                                                     "answers": [answer]}]}]}]}
    _read("qa", ".json", json.dumps(squad).encode())


@pytest.fixture(scope="module")
def client(classify_dir):  # noqa: F811
    from bertkit.inference import Predictor
    from bertkit.server import ServerLimits

    with running(Predictor(classify_dir), ServerLimits(max_texts=4, max_chars=50)) as http:
        yield http


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["texts", "text_pairs", "items", "question", "context", "x"]),
                            json_value, max_size=3) | json_value)
def test_predict_bodies(client, body):
    _post(client, json.dumps(body).encode())


@FUZZ
@given(body=raw_text)
def test_predict_raw_bodies(client, body):
    _post(client, body.encode("utf-8", "surrogatepass"))


def _post(client, content: bytes) -> None:
    counts["server"] += 1
    response = client.post("/v1/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 200 or 400 <= response.status_code < 500, (content, response.text)
    if response.status_code != 200:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail, detail


def test_report_counts():
    """Runs last in this file: how many cases the fuzzers fed (shown with `pytest -s`)."""
    print(f"\nfuzz cases: readers {counts['readers']}, server {counts['server']}")
    assert counts["readers"] > 0 and counts["server"] > 0
