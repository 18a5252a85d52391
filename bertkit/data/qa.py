"""Extractive question answering data: SQuAD v1.1/v2.0 JSON -> examples -> windowed features -> answers.

The windowing follows the original BERT run_squad.py: `[CLS] question [SEP] context-window [SEP]`, the
question cut to `max_query_length` tokens, long contexts split into windows that advance by `doc_stride`
tokens, and each context token scored only in the window where it has the most context on both sides.
Answers travel as character offsets into the context the user gave, so predictions keep its case and accents.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertkit.data.io import DEFAULT_ENCODING, iter_jsonl, read_text
from bertkit.data.windows import max_context_owners, stride_windows
from bertkit.errors import BertkitError
from bertkit.tokenizer import BertTokenizer


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    # [{"text": str, "answer_start": int}]; [] when unanswerable (SQuAD 2.0) or unknown (prediction input).
    answers: list[dict]
    is_impossible: bool = False


@dataclass
class QAFeature:
    """One window of one example, ready for the model, with what decoding needs to map tokens back to text."""

    input_ids: list[int]
    token_type_ids: list[int]
    example_index: int
    offsets: list[tuple[int, int] | None]  # char span in the context for context tokens, None otherwise
    max_context: list[bool]  # this window is the one where that context token has the most context
    start_position: int  # token index of the answer in this window; 0 ([CLS]) if it is not wholly inside
    end_position: int


def _quote(text: str) -> str:
    """A string as JSON writes it: quoted, newlines escaped, so an error message stays on one line."""
    return json.dumps(text, ensure_ascii=False)


def _load_json(path: Path, encoding: str) -> Any:
    """Parse a JSON file; decoding and syntax errors name the line (and column) at fault."""
    text = read_text(path, encoding)  # whole, not split in lines: JSON strings may hold U+2028 and the like
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BertkitError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None


def _list_field(parent: dict, key: str, where: str) -> list:
    """parent[key], which SQuAD requires to be a list."""
    value = parent.get(key)
    if not isinstance(value, list):
        problem = "missing" if value is None else f"not a list ({type(value).__name__})"
        raise BertkitError(f"{where}: {_quote(key)} is {problem}")
    return value


def _text_field(parent: dict, key: str, where: str) -> str:
    """parent[key], which must be a non-blank string."""
    value = parent.get(key)
    if not isinstance(value, str) or not value.strip():
        problem = "missing" if value is None else "empty" if isinstance(value, str) else f"not text ({value!r})"
        raise BertkitError(f"{where}: {_quote(key)} is {problem}")
    return value


def _id_field(record: dict, default: str | None, where: str) -> str:
    """record["id"] as text (integers accepted, as some converters write them), or `default` when absent."""
    value = record.get("id", default)
    if value is None:
        raise BertkitError(f'{where}: "id" is missing')
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise BertkitError(f'{where}: "id" is not text ({value!r})')
    return str(value)


def _nearest_occurrence(context: str, text: str, around: int) -> int | None:
    """Where `text` occurs in the context closest to `around`: the likely intended answer_start, for the hint."""
    best = None
    index = context.find(text)
    while index != -1:
        if best is None or abs(index - around) < abs(best - around):
            best = index
        index = context.find(text, index + 1)
    return best


def _check_answer(answer: object, context: str, where: str) -> dict:
    """An answer {"text", "answer_start"} whose text is exactly the context at answer_start.

    Answers are never moved to where the text "probably" is: a silent fix would train the model on a span the
    annotator did not mark, so the user has to correct the file (the error says where the text does occur).
    """
    if not isinstance(answer, dict):
        raise BertkitError(f"{where}: expected an object with \"text\" and \"answer_start\", got {answer!r}")
    text = _text_field(answer, "text", where)
    start = answer.get("answer_start")
    if not isinstance(start, int) or isinstance(start, bool):
        problem = "missing" if start is None else f"not an integer ({start!r})"
        raise BertkitError(f"{where}: \"answer_start\" is {problem}")
    if start < 0:
        raise BertkitError(f"{where}: answer_start {start} is negative")
    if start + len(text) > len(context):
        raise BertkitError(
            f"{where}: answer text {_quote(text)} at answer_start {start} runs past the end of the context "
            f"({len(context)} characters)"
        )
    found = context[start : start + len(text)]
    if found != text:
        nearest = _nearest_occurrence(context, text, start)
        hint = "" if nearest is None else f"; the text occurs at {nearest}"
        raise BertkitError(
            f"{where}: answer text {_quote(text)} does not match the context at answer_start {start} "
            f"({_quote(found)}){hint}"
        )
    return {"text": text, "answer_start": start}


def read_squad(
    path: str | os.PathLike, require_answers: bool = True, encoding: str = DEFAULT_ENCODING
) -> tuple[list[QAExample], bool]:
    """Read SQuAD v1.1/v2.0 JSON, checking every question and answer; also say whether the file is v2.0.

    A file is v2.0 if its "version" says so or any question is "is_impossible". With `require_answers`
    (training), every question that is not impossible needs at least one answer; evaluation and prediction
    inputs may omit them. Ids must be unique, since predictions are scored against gold answers by id.
    """
    path = Path(path)
    root = _load_json(path, encoding)
    if not isinstance(root, dict) or "data" not in root:
        raise BertkitError(f'{path}: no "data" key; expected SQuAD JSON {{"version": ..., "data": [...]}}')
    articles = _list_field(root, "data", str(path))
    if not articles:
        raise BertkitError(f'{path}: "data" is empty: no articles')
    version_2 = str(root.get("version", "")).lstrip("v").startswith("2")
    examples: list[QAExample] = []
    first_seen: dict[str, str] = {}
    for a, article in enumerate(articles):
        where = f"{path}: data[{a}]"
        if not isinstance(article, dict):
            raise BertkitError(f"{where}: expected an object with \"paragraphs\"")
        for p, paragraph in enumerate(_list_field(article, "paragraphs", where)):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                raise BertkitError(f"{where}: expected an object with \"context\" and \"qas\"")
            context = _text_field(paragraph, "context", where)
            for q, qa in enumerate(_list_field(paragraph, "qas", where)):
                location = f"data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, dict):
                    raise BertkitError(f'{path}: {location}: expected an object with "id", "question", "answers"')
                qa_id = _id_field(qa, None, f"{path}: {location}")
                if qa_id in first_seen:
                    raise BertkitError(
                        f"{path}: {location}: duplicate id {_quote(qa_id)} (first at {first_seen[qa_id]})"
                    )
                first_seen[qa_id] = location
                where = f"{path}: {location} (id {_quote(qa_id)})"
                question = _text_field(qa, "question", where)
                is_impossible = qa.get("is_impossible", False)
                if not isinstance(is_impossible, bool):
                    raise BertkitError(f"{where}: \"is_impossible\" is not true/false ({is_impossible!r})")
                raw_answers = _list_field(qa, "answers", where) if "answers" in qa else []
                answers = [_check_answer(x, context, f"{where}: answers[{i}]") for i, x in enumerate(raw_answers)]
                if is_impossible and answers:
                    raise BertkitError(f"{where}: \"is_impossible\" is true but it has {len(answers)} answer(s)")
                if require_answers and not is_impossible and not answers:
                    raise BertkitError(
                        f"{where}: no answers; a training question needs at least one "
                        '(for SQuAD 2.0, mark an unanswerable question "is_impossible": true)'
                    )
                version_2 = version_2 or is_impossible
                examples.append(QAExample(qa_id, question, context, answers, is_impossible))
    if not examples:
        raise BertkitError(f"{path}: no questions in any paragraph")
    return examples, version_2


def iter_qa_jsonl(path: str | os.PathLike, encoding: str = DEFAULT_ENCODING) -> Iterator[QAExample]:
    """Prediction input, streamed: one {"question", "context", optional "id"} per line.

    The id defaults to the 0-based line index, so predictions can be matched to lines by id as well as by order.
    """
    for line, record in iter_jsonl(path, encoding):
        where = f"{path}:{line}"
        question = _text_field(record, "question", where)
        context = _text_field(record, "context", where)
        yield QAExample(_id_field(record, str(line - 1), where), question, context, [])


def read_qa_jsonl(path: str | os.PathLike, encoding: str = DEFAULT_ENCODING) -> list[QAExample]:
    return list(iter_qa_jsonl(path, encoding))


def _answer_tokens(example: QAExample, offsets: list[tuple[int, int]]) -> tuple[int, int] | None:
    """First and last context token (indices into the whole tokenized context) covering the first answer.

    None when there is no answer, or when no token overlaps it (an answer made only of characters the
    normalizer drops): such an example trains as "no answer in this window" everywhere.
    """
    if not example.answers:
        return None
    char_start = example.answers[0]["answer_start"]
    char_end = char_start + len(example.answers[0]["text"])
    overlapping = [i for i, (start, end) in enumerate(offsets) if start < char_end and end > char_start]
    return (overlapping[0], overlapping[-1]) if overlapping else None


def encode_qa(
    examples: list[QAExample],
    tokenizer: BertTokenizer,
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> list[QAFeature]:
    """Features `[CLS] question [SEP] context-window [SEP]`, one per window, in example order.

    Each context is tokenized once, with offsets, and sliced into windows of `max_length - len(question) - 3`
    tokens; so offsets always point into the original context. The answer (the first one, as in training)
    is located in every window that holds it whole; elsewhere the window's positions are 0 ([CLS]).
    """
    if doc_stride < 1 or max_query_length < 1:
        raise BertkitError(f"doc_stride ({doc_stride}) and max_query_length ({max_query_length}) must be at least 1")
    questions = tokenizer.encode_batch([e.question for e in examples], truncation="do_not_truncate")
    contexts = tokenizer.encode_batch([e.context for e in examples], truncation="do_not_truncate")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    features = []
    for index, (example, question, context) in enumerate(zip(examples, questions, contexts)):
        question_ids = question.input_ids[1:-1][:max_query_length]  # without [CLS] and [SEP]
        context_ids, context_offsets = context.input_ids[1:-1], context.offsets[1:-1]
        window = max_length - len(question_ids) - 3
        if window < 1:
            raise BertkitError(
                f"question {_quote(example.id)}: max_length={max_length} leaves no room for the context after "
                f"its {len(question_ids)}-token question; raise max_length or lower max_query_length"
            )
        answer = _answer_tokens(example, context_offsets)
        spans = stride_windows(len(context_ids), window, doc_stride)
        best_window = max_context_owners([1] * len(context_ids), spans)
        prefix = [cls, *question_ids, sep]
        for w, (start, end) in enumerate(spans):
            length = end - start
            start_position = end_position = 0
            if answer is not None and start <= answer[0] and answer[1] < end:
                start_position = answer[0] - start + len(prefix)
                end_position = answer[1] - start + len(prefix)
            features.append(
                QAFeature(
                    input_ids=prefix + context_ids[start:end] + [sep],
                    token_type_ids=[0] * len(prefix) + [1] * (length + 1),
                    example_index=index,
                    offsets=[None] * len(prefix) + list(context_offsets[start:end]) + [None],
                    max_context=[False] * len(prefix) + [best_window[t] == w for t in range(start, end)] + [False],
                    start_position=start_position,
                    end_position=end_position,
                )
            )
    return features


def _top_indices(logits: list[float], n: int) -> list[int]:
    """Indices of the n largest logits, largest first."""
    return heapq.nlargest(n, range(len(logits)), key=logits.__getitem__)


def _window_spans(
    feature: QAFeature, start_logits: list[float], end_logits: list[float], n_best: int, max_answer_len: int
) -> Iterator[tuple[float, int, int]]:
    """(score, char start, char end) of each valid pair among one window's top start and end tokens.

    Valid: both tokens in the context, start <= end, at most max_answer_len tokens, and the start token
    scored in its max-context window (so a span is proposed by one window only). Logits past the feature's
    length (padding) are ignored.
    """
    n_tokens = len(feature.offsets)
    for s in _top_indices(start_logits, n_best):
        if s >= n_tokens or feature.offsets[s] is None or not feature.max_context[s]:
            continue
        for e in _top_indices(end_logits, n_best):
            if e >= n_tokens or e < s or e - s + 1 > max_answer_len or feature.offsets[e] is None:
                continue
            yield start_logits[s] + end_logits[e], feature.offsets[s][0], feature.offsets[e][1]


def decode_qa(
    examples: list[QAExample],
    features: list[QAFeature],
    start_logits: list[list[float]],
    end_logits: list[list[float]],
    n_best: int = 20,
    max_answer_len: int = 30,
    allow_no_answer: bool = False,
    null_threshold: float = 0.0,
) -> list[dict]:
    """The best answer of each example, in example order: {"answer", "start", "end", "score"}.

    start/end are character offsets into the context (end exclusive; answer == context[start:end]). A span's
    raw score is start logit + end logit, best over all windows. "score" is the softmax probability of the
    chosen span among the example's n_best highest-scoring valid spans (as the Hugging Face QA pipeline
    reports), so it is comparable across examples but says nothing about spans outside that list.

    No answer (SQuAD 2.0): the null score is the lowest [CLS] start+end score over the example's windows.
    With allow_no_answer, when null score - best span score > null_threshold the result is
    {"answer": "", "start": -1, "end": -1, "score": that margin}. An example with no valid span at all
    (e.g. a context that has no tokens) gets the same empty answer with score 0.0.
    """
    if n_best < 1 or max_answer_len < 1:
        raise BertkitError(f"n_best ({n_best}) and max_answer_len ({max_answer_len}) must be at least 1")
    windows_of: list[list[int]] = [[] for _ in examples]
    for i, feature in enumerate(features):
        windows_of[feature.example_index].append(i)
    results = []
    for example, windows in zip(examples, windows_of):
        spans: list[tuple[float, int, int]] = []
        null_score = math.inf
        for i in windows:
            starts, ends = start_logits[i], end_logits[i]
            null_score = min(null_score, starts[0] + ends[0])
            spans.extend(_window_spans(features[i], starts, ends, n_best, max_answer_len))
        spans = heapq.nlargest(n_best, spans)
        if not spans:
            results.append({"answer": "", "start": -1, "end": -1, "score": 0.0})
            continue
        best_score, start, end = spans[0]
        if allow_no_answer and null_score - best_score > null_threshold:
            results.append({"answer": "", "start": -1, "end": -1, "score": float(null_score - best_score)})
            continue
        probability = 1.0 / sum(math.exp(score - best_score) for score, _, _ in spans)
        results.append({"answer": example.context[start:end], "start": start, "end": end, "score": probability})
    return results
