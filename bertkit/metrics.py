"""Evaluation metrics for the three fine-tuning task families: classification, NER and extractive QA.

Plain Python on plain lists (no torch, no numpy), so scoring is cheap, deterministic and easy to test.
Every function returns a JSON-ready dict of raw (unrounded) floats and ints. Each metric reproduces a
reference definition exactly, so numbers are comparable with published results:

- single-label classification: scikit-learn's per-class precision / recall / F1 with
  `labels=range(len(labels))` and `zero_division=0`;
- NER: seqeval's default (conlleval-compatible, non-strict) entity chunking and scores;
- QA: the official SQuAD v2.0 evaluation script (which also scores v1.1 data).

Bad input (mismatched lengths, out-of-range label ids, ...) raises BertkitError with a one-line message.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from typing import Any

from bertkit.errors import BertkitError

__all__ = [
    "classification_metrics",
    "multilabel_metrics",
    "regression_metrics",
    "get_entities",
    "entity_metrics",
    "normalize_answer",
    "squad_exact",
    "squad_f1",
    "squad_metrics",
]


# ---------------------------------------------------------------------------------------------------------
# Shared helpers


def _divide(numerator: float, denominator: float) -> float:
    """numerator / denominator, or 0.0 when the denominator is 0 (scikit-learn's / seqeval's zero_division=0)."""
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    """Harmonic mean, computed as seqeval does (2*p*r/(p+r), 0 when both are 0) so floats match bit for bit."""
    denom = precision + recall
    return 2.0 * precision * recall / denom if denom else 0.0


def _check_same_length(what: str, y_true: list, y_pred: list) -> None:
    if len(y_true) != len(y_pred):
        raise BertkitError(f"{what}: {len(y_true)} gold values but {len(y_pred)} predictions")
    if not y_true:
        raise BertkitError(f"{what}: nothing to score (no examples)")


def _check_labels(labels: list[str]) -> None:
    if not labels:
        raise BertkitError("no labels given")
    if len(set(labels)) != len(labels):
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        raise BertkitError(f"duplicate labels: {', '.join(map(str, duplicates))}")


def _class_scores(tp: int, pred: int, true: int) -> dict[str, Any]:
    """Per-class precision / recall / F1 / support from counts, zero_division=0.

    F1 is 2*tp / (true + pred), the count form scikit-learn uses, so it equals sklearn's f1_score exactly.
    """
    return {
        "precision": _divide(tp, pred),
        "recall": _divide(tp, true),
        "f1": _divide(2 * tp, true + pred),
        "support": true,
    }


# ---------------------------------------------------------------------------------------------------------
# Sequence / pair classification


def classification_metrics(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro F1, per-class scores and the confusion matrix for single-label classification.

    Macro F1 averages over *every* label in `labels`, including labels that never occur in gold or
    predictions (they score 0), so it does not flatter a model that ignores rare classes. This is
    sklearn's f1_score(average="macro", labels=range(len(labels)), zero_division=0).
    The confusion matrix has rows = gold label, columns = predicted label, both in `labels` order.
    """
    _check_labels(labels)
    _check_same_length("classification", y_true, y_pred)
    n = len(labels)
    matrix = [[0] * n for _ in range(n)]
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        for name, value in (("gold", t), ("predicted", p)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
                raise BertkitError(f"example {i}: {name} label id {value!r} is not in 0..{n - 1}")
        matrix[t][p] += 1
    per_class = {}
    for k, label in enumerate(labels):
        tp = matrix[k][k]
        pred = sum(matrix[r][k] for r in range(n))
        true = sum(matrix[k])
        per_class[label] = _class_scores(tp, pred, true)
    correct = sum(matrix[k][k] for k in range(n))
    return {
        "accuracy": correct / len(y_true),
        "macro_f1": sum(s["f1"] for s in per_class.values()) / n,
        "per_class": per_class,
        "confusion_matrix": matrix,
    }


def multilabel_metrics(y_true: list[list[int]], y_pred: list[list[int]], labels: list[str]) -> dict[str, Any]:
    """Subset accuracy, micro / macro F1 and per-class scores for multi-label classification.

    Rows are 0/1 indicator vectors in `labels` order. Accuracy is exact match (every label right), the
    strict number; micro F1 pools all label decisions (dominated by frequent labels); macro F1 averages
    per-label F1 over all labels (zero_division=0), exposing rare labels. Same as sklearn on indicators.
    """
    _check_labels(labels)
    _check_same_length("multi-label classification", y_true, y_pred)
    n = len(labels)
    tp, pred, true = [0] * n, [0] * n, [0] * n
    exact = 0
    for i, (t_row, p_row) in enumerate(zip(y_true, y_pred)):
        for name, row in (("gold", t_row), ("predicted", p_row)):
            if len(row) != n:
                raise BertkitError(f"example {i}: {name} row has {len(row)} entries but there are {n} labels")
            if any(isinstance(v, bool) or v not in (0, 1) for v in row):
                raise BertkitError(f"example {i}: {name} row must hold only 0 and 1, got {list(row)!r}")
        exact += list(t_row) == list(p_row)
        for k in range(n):
            tp[k] += t_row[k] and p_row[k]
            pred[k] += p_row[k]
            true[k] += t_row[k]
    per_class = {label: _class_scores(tp[k], pred[k], true[k]) for k, label in enumerate(labels)}
    return {
        "accuracy": exact / len(y_true),
        "micro_f1": _divide(2 * sum(tp), sum(true) + sum(pred)),
        "macro_f1": sum(s["f1"] for s in per_class.values()) / n,
        "per_class": per_class,
    }


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata's default), for Spearman."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(x: list[float], y: list[float]) -> float:
    """Pearson r; 0.0 when either side is constant (r is undefined there, and NaN would not be valid JSON)."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return 0.0
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def regression_metrics(y_true: list[float], y_pred: list[float]) -> dict[str, float]:
    """MSE plus Pearson and Spearman correlation (the STS-B metrics).

    Correlations measure agreement in trend, independent of scale; MSE measures the actual error.
    Spearman is Pearson on average-tie ranks. A correlation with a constant side is undefined and
    reported as 0.0 (no measurable association), keeping the output strict JSON.
    """
    _check_same_length("regression", y_true, y_pred)
    x = [float(v) for v in y_true]
    y = [float(v) for v in y_pred]
    if not all(math.isfinite(v) for v in x + y):
        raise BertkitError("regression: values must be finite numbers (found NaN or infinity)")
    return {
        "mse": sum((a - b) ** 2 for a, b in zip(x, y)) / len(x),
        "pearson": _pearson(x, y),
        "spearman": _pearson(_ranks(x), _ranks(y)),
    }


# ---------------------------------------------------------------------------------------------------------
# Token classification (NER): seqeval default mode


def _split_tag(tag: str) -> tuple[str, str]:
    """(prefix letter, entity type) the way seqeval's default mode reads a tag.

    The prefix is the first character and the type is whatever follows the first "-" ("_" when empty):
    "B-PER" -> ("B", "PER"), "O" -> ("O", "_"), "B" -> ("B", "_"), "PER" -> ("P", "ER").
    """
    if not isinstance(tag, str) or not tag:
        raise BertkitError(f"invalid NER tag {tag!r}: tags are non-empty strings like 'O' or 'B-PER'")
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk ended just before the current token (seqeval's end_of_chunk)."""
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk starts at the current token (seqeval's start_of_chunk)."""
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def _chunks(tags: list[str], prev_type: str = "") -> list[tuple[str, int, int]]:
    prev_tag = "O"
    begin = 0
    chunks = []
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = _split_tag(chunk)
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def get_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end_inclusive) entity spans of one tag sequence, exactly as seqeval's get_entities.

    Lenient, conlleval-style chunking that works for BIO (IOB2), IOB1 and BIOES/IOBES alike: an I-X or
    E-X after O (or after a different type) starts an entity, B-X I-Y splits into two, S-X is a one-token
    entity, E-X closes one. Using the exact seqeval rules keeps reported F1 comparable with the literature
    and makes what is predicted (bertkit.data.ner decodes with this) identical to what is scored.
    """
    return _chunks(list(tags))


def entity_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, Any]:
    """Entity-level micro precision / recall / F1 and per-type scores, as seqeval's default mode.

    An entity counts only if type, start and end all match; O tokens earn nothing, so this is the
    standard CoNLL measure (token accuracy would be dominated by O). Overall numbers equal seqeval's
    precision_score / recall_score / f1_score; per_type equals its classification_report rows
    (types found in gold or predictions, support = gold entities of that type).
    """
    if len(true_tags) != len(pred_tags):
        raise BertkitError(f"NER: {len(true_tags)} gold sentences but {len(pred_tags)} predicted")
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if isinstance(t, str) or isinstance(p, str):
            raise BertkitError(f"NER: sentence {i} must be a list of tags, not a string")
        if len(t) != len(p):
            raise BertkitError(f"NER: sentence {i} has {len(t)} gold tags but {len(p)} predicted tags")

    def entities(sentences: list[list[str]]) -> dict[str, set[tuple[int, int]]]:
        # seqeval joins the sentences with an "O" between them and chunks the whole stream; doing the same
        # keeps even odd tags (which depend on the previous token's type) identical, and offsets unique.
        flat = [tag for sentence in sentences for tag in [*sentence, "O"]]
        found: dict[str, set[tuple[int, int]]] = defaultdict(set)
        for type_, start, end in _chunks(flat, prev_type=""):
            found[type_].add((start, end))
        return found

    gold, pred = entities(true_tags), entities(pred_tags)
    per_type = {}
    tp_all = pred_all = true_all = 0
    for type_ in sorted(set(gold) | set(pred)):
        tp, n_pred, n_true = len(gold[type_] & pred[type_]), len(pred[type_]), len(gold[type_])
        precision, recall = _divide(tp, n_pred), _divide(tp, n_true)
        per_type[type_] = {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "support": n_true}
        tp_all, pred_all, true_all = tp_all + tp, pred_all + n_pred, true_all + n_true
    precision, recall = _divide(tp_all, pred_all), _divide(tp_all, true_all)
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "per_type": per_type}


# ---------------------------------------------------------------------------------------------------------
# Extractive QA: the official SQuAD v2.0 evaluation script

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """The official SQuAD normalisation: lower-case, drop ASCII punctuation, drop a/an/the, squeeze spaces.

    Punctuation is deleted, not replaced by a space ("Eiffel-Tower" -> "eiffeltower"), exactly as the
    official script does, so scores match the leaderboard definition.
    """
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact(gold: str, pred: str) -> float:
    """1.0 if the normalised answers are identical, else 0.0."""
    return float(normalize_answer(gold) == normalize_answer(pred))


def squad_f1(gold: str, pred: str) -> float:
    """Bag-of-tokens F1 between normalised answers, giving partial credit for overlapping spans.

    As in the official v2.0 script: if either side has no tokens (a no-answer), F1 is 1.0 when both are
    empty and 0.0 otherwise.
    """
    gold_tokens = normalize_answer(gold).split()
    pred_tokens = normalize_answer(pred).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_metrics(golds: dict[str, list[str]], preds: dict[str, str]) -> dict[str, Any]:
    """SQuAD exact match and F1 in percent (0-100), max over each question's gold answers.

    golds: question id -> gold answer texts. Gold texts that normalise to nothing are dropped, and a
    question left with none (`[]`, `[""]`) is a no-answer question scored against "" (official v2.0
    script). preds: question id -> predicted text, "" meaning no answer. A question with no prediction is
    scored as if "" had been predicted (right for a no-answer question, wrong otherwise); predictions for
    ids not in `golds` are ignored. When any question is a no-answer one (SQuAD 2.0), the result also
    splits into HasAns_* / NoAns_* (exact, f1, total); a split with no questions reports 0.0 scores.
    """
    if not golds:
        raise BertkitError("QA: nothing to score (no questions)")
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    has_answer: dict[str, bool] = {}
    for qid, answers in golds.items():
        if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
            raise BertkitError(f"QA: gold answers for question {qid!r} must be a list of strings")
        texts = [a for a in answers if normalize_answer(a)]
        has_answer[qid] = bool(texts)
        texts = texts or [""]
        pred = preds.get(qid, "")
        if not isinstance(pred, str):
            raise BertkitError(f"QA: prediction for question {qid!r} must be a string, got {type(pred).__name__}")
        exact[qid] = max(squad_exact(a, pred) for a in texts)
        f1[qid] = max(squad_f1(a, pred) for a in texts)

    def summary(qids: list[str], exact_key: str, f1_key: str, total_key: str) -> dict[str, Any]:
        total = len(qids)
        return {
            exact_key: 100.0 * sum(exact[q] for q in qids) / total if total else 0.0,
            f1_key: 100.0 * sum(f1[q] for q in qids) / total if total else 0.0,
            total_key: total,
        }

    result = summary(list(golds), "exact_match", "f1", "total")
    if not all(has_answer.values()):
        for prefix, wanted in (("HasAns_", True), ("NoAns_", False)):
            qids = [q for q in golds if has_answer[q] is wanted]
            result.update(summary(qids, f"{prefix}exact", f"{prefix}f1", f"{prefix}total"))
    return result
