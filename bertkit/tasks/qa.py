"""Extractive question answering: question + context windows, best valid span across windows, SQuAD 2.0 no-answer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertkit.data import qa
from bertkit.errors import BertkitError
from bertkit.options import Options, option
from bertkit.tasks.base import Task


@dataclass
class QAOptions(Options):
    max_seq_len: int = option(384, "longest window (question + context), in tokens", min=16)
    doc_stride: int = option(128, "tokens between the starts of context windows", min=1)
    max_query_len: int = option(64, "longest question, in tokens (longer is cut)", min=1)
    max_answer_len: int = option(30, "longest answer, in tokens", min=1)
    null_threshold: float = option(0.0, "SQuAD 2.0: margin for answering nothing")
    version_2: bool = option(False)  # SQuAD 2.0 data (unanswerable questions): set by reading it, not a flag


class QATask(Task):
    """Extractive QA: question + context windows, best valid span across windows, SQuAD 2.0 no-answer."""

    name = "qa"
    help = "extractive question answering from SQuAD v1.1/v2.0 JSON"
    architecture = "BertForQuestionAnswering"
    main_metric = "f1"
    Options = QAOptions
    outputs = {"start_logits": True, "end_logits": True}
    labelled = False
    request_fields = frozenset({"items", "question", "context"})
    request_help = '{"items": [{"question": ..., "context": ...}, ...]} or {"question": ..., "context": ...}'

    def read(self, path: str | os.PathLike, require_labels: bool = True) -> list[qa.QAExample]:
        if Path(path).suffix.lower() in (".jsonl", ".ndjson"):
            return qa.read_qa_jsonl(path, self.encoding)
        examples, version_2 = qa.read_squad(path, require_answers=require_labels, encoding=self.encoding)
        self.options.version_2 = self.options.version_2 or version_2
        return examples

    def stream(self, path: str | os.PathLike) -> Iterator[qa.QAExample]:
        if Path(path).suffix.lower() in (".jsonl", ".ndjson"):
            return qa.iter_qa_jsonl(path, self.encoding)
        return super().stream(path)

    def example_id(self, example: qa.QAExample) -> str:
        """The SQuAD id (a .jsonl line's "id", else its 0-based line index)."""
        return example.id

    def from_text(self, text: str, line: int) -> qa.QAExample:
        raise BertkitError("question answering needs a question and a context: use --input FILE.jsonl "
                           'with {"question": ..., "context": ...} per line')

    def from_input(self, item: Any, line: int) -> qa.QAExample:
        """A {"question": ..., "context": ...} dict (an "id" is kept when given)."""
        if not isinstance(item, dict):
            raise BertkitError(f'input {line}: expected {{"question": ..., "context": ...}}, got {type(item).__name__}')
        where = f"input {line}"
        return qa.QAExample(qa._id_field(item, str(line - 1), where), qa._text_field(item, "question", where),
                            qa._text_field(item, "context", where), [])

    def from_request(self, fields: dict[str, Any], check: Callable[[str, list[str]], None]) -> tuple[list[Any], bool]:
        if "items" in fields and ("question" in fields or "context" in fields):
            raise BertkitError('give either "items" or one "question" and "context", not both')
        if "items" not in fields and ("question" not in fields or "context" not in fields):
            raise BertkitError('a single item needs both "question" and "context"')
        items = fields.get("items") or [{"question": fields["question"], "context": fields["context"]}]
        check("question", [item["question"] for item in items])
        check("context", [item["context"] for item in items])
        return [qa.QAExample(str(i), item["question"], item["context"], []) for i, item in enumerate(items)], False

    def features(self, examples: list[qa.QAExample], tokenizer, config) -> list:
        return [
            {"input_ids": f.input_ids, "token_type_ids": f.token_type_ids,
             "start_positions": f.start_position, "end_positions": f.end_position}
            for f in self._features(examples, tokenizer)
        ]

    def _features(self, examples: list[qa.QAExample], tokenizer) -> list[qa.QAFeature]:
        o = self.options
        return qa.encode_qa(examples, tokenizer, o.max_seq_len, o.doc_stride, o.max_query_len)

    def predict(self, model, tokenizer, examples: list[qa.QAExample], batch_size: int) -> list[dict]:
        features = self._features(examples, tokenizer)
        inputs = [{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids} for f in features]
        rows = self._rows(model, inputs, batch_size, tokenizer)
        o = self.options
        return qa.decode_qa(examples, features, [r["start_logits"].tolist() for r in rows],
                            [r["end_logits"].tolist() for r in rows], max_answer_len=o.max_answer_len,
                            allow_no_answer=o.version_2, null_threshold=o.null_threshold)

    def score(self, examples: list[qa.QAExample], predictions: list[dict], config) -> dict[str, Any]:
        from bertkit import metrics

        golds = {e.id: [a["text"] for a in e.answers] for e in examples}
        return metrics.squad_metrics(golds, {e.id: p["answer"] for e, p in zip(examples, predictions)})
