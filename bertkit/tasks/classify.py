"""Sentence and sentence-pair classification: one label (softmax) or several (sigmoid)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertkit.data import classify
from bertkit.errors import BertkitError
from bertkit.options import Options, option
from bertkit.tasks.base import Task


@dataclass
class ClassifyOptions(Options):
    max_seq_len: int = option(128, "longest input, in tokens (longer is cut)", min=8)
    text_column: str = option("text", "column of the text")
    text_pair_column: str | None = option(None, "column of the second text of sentence pairs")
    label_column: str = option("label", "column of the label")
    multi_label: bool = option(False, "labels are lists; sigmoid per label")
    long: str = option("truncate", "texts longer than --max-seq-len: keep the start (truncate), the start and the end "
                       "(head+tail), or read them all in overlapping windows whose outputs are pooled (windows)",
                       choices=classify.LONG_POLICIES)
    stride: int = option(32, "with --long windows: tokens shared by consecutive windows (less than a window)", min=0)
    window_pool: str = option("mean", "with --long windows: a document's logits are the mean or max of its windows' "
                              "logits, or read from a learned attention over its windows' [CLS] vectors",
                              choices=("mean", "max", "attention"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.long == "windows":  # a one-line error before any file is read
            classify.window_budget(self.max_seq_len, self.stride)
        if self.long != "truncate" and self.text_pair_column:
            raise BertkitError(f"--long {self.long} reads single texts; sentence pairs are truncated (--long truncate)")


class ClassifyTask(Task):
    """Single sentences or pairs, one label (softmax) or several (sigmoid)."""

    name = "classify"
    help = "sentence or sentence-pair classification from CSV/TSV/JSONL"
    architecture = "BertForSequenceClassification"
    main_metric = "accuracy"
    Options = ClassifyOptions
    outputs = {"logits": False}
    request_fields = frozenset({"texts", "text_pairs"})
    request_help = '{"texts": [...]} (and "text_pairs": [...] for sentence pairs)'
    empty_prediction = {"label": None, "score": None, "scores": {}}

    def read(self, path: str | os.PathLike, require_labels: bool = True) -> list[classify.ClassifyExample]:
        return list(self._iter(path, require_labels))

    def stream(self, path: str | os.PathLike) -> Iterator[classify.ClassifyExample]:
        return self._iter(path, require_labels=False)

    def _iter(self, path: str | os.PathLike, require_labels: bool) -> Iterator[classify.ClassifyExample]:
        o = self.options
        return classify.iter_classify(path, o.text_column, o.text_pair_column, o.label_column, o.multi_label,
                                      require_labels, self.encoding)

    def from_records(self, records: list[dict[str, Any]], what: str,
                     require_labels: bool = True) -> list[classify.ClassifyExample]:
        o = self.options
        rows = list(enumerate(records, start=1))
        for line, row in rows:
            if not isinstance(row, dict):
                raise BertkitError(f"{what}:{line}: expected a dict of columns, got {type(row).__name__}")
        return list(classify.classify_rows(rows, what, o.text_column, o.text_pair_column, o.label_column,
                                           o.multi_label, require_labels))

    def from_text(self, text: str, line: int) -> classify.ClassifyExample:
        return classify.ClassifyExample(text, None, None, line)

    def problem(self, example: classify.ClassifyExample) -> str | None:
        blank = not example.text.strip() or (example.pair is not None and not example.pair.strip())
        return "empty text" if blank else None

    def from_input(self, item: Any, line: int) -> classify.ClassifyExample:
        """A string, or a (text, pair) tuple for a model fine-tuned on sentence pairs."""
        if isinstance(item, tuple) and len(item) == 2:
            text, pair = item
            if not self.options.text_pair_column:
                raise BertkitError(f"input {line}: a (text, pair) tuple, but the model was fine-tuned on single texts")
            if not all(isinstance(part, str) for part in item):
                raise BertkitError(f"input {line}: a pair is two strings, got {item!r}")
            return classify.ClassifyExample(text, pair, None, line)
        return super().from_input(item, line)

    def from_request(self, fields: dict[str, Any], check: Callable[[str, list[str]], None]) -> tuple[list[Any], bool]:
        examples, _ = super().from_request(fields, check)
        pairs = fields.get("text_pairs")
        if pairs is None:
            return examples, False
        if not self.options.text_pair_column:
            raise BertkitError("this model was fine-tuned on single texts; it takes no text_pairs")
        if len(pairs) != len(examples):
            raise BertkitError(f"{len(examples)} texts but {len(pairs)} text_pairs; give one pair per text")
        check("text_pairs", pairs)
        return [classify.ClassifyExample(e.text, pair, None, e.line) for e, pair in zip(examples, pairs)], True

    def save_plots(self, out_dir: Path, dev_metrics: dict[str, Any]) -> None:
        if "confusion_matrix" in dev_metrics:
            from bertkit.plots import plot_confusion_matrix

            plot_confusion_matrix(dev_metrics["confusion_matrix"], list(dev_metrics["per_class"]), out_dir / "confusion_matrix.png")

    def label_list(self, examples: list[classify.ClassifyExample]) -> list[str]:
        labels = classify.label_list(examples)
        if len(labels) < 2 and not self.options.multi_label:
            raise BertkitError(f"the training data has only one label ({labels[0]!r}); classification needs at least two")
        return labels

    def config_for(self, config, labels: list[str] | None):
        config.problem_type = "multi_label_classification" if self.options.multi_label else "single_label_classification"
        return super().config_for(config, labels)

    def check_labels(self, examples: list[classify.ClassifyExample], config, path: str | os.PathLike) -> None:
        classify.check_labels(examples, config.label2id or {}, path)

    def stratify_labels(self, examples: list[classify.ClassifyExample]) -> list[str] | None:
        return None if self.options.multi_label else [e.label for e in examples]

    def label_prior(self, examples: list[classify.ClassifyExample]) -> dict[str, Any]:
        """How many examples carry each label (multi-label: each label an example has counts once)."""
        counts = Counter(label for e in examples for label in (e.label if isinstance(e.label, list) else [e.label]))
        return {"examples": len(examples), "counts": dict(sorted(counts.items()))}

    def prior_predictions(self, examples: list[classify.ClassifyExample], prior: dict[str, Any] | None) -> list[dict]:
        """Always the most frequent label (ties: the first in sorted order); multi-label: every label that
        more than half of the examples carry."""
        counts, total = prior["counts"], prior["examples"]
        scores = {label: count / total for label, count in counts.items()}
        if self.options.multi_label:
            label: str | list[str] = [name for name, share in scores.items() if share > 0.5]
            score = max(scores.values())
        else:
            label = max(sorted(counts), key=counts.__getitem__)
            score = scores[label]
        return [{"label": label, "score": score, "scores": scores} for _ in examples]

    def _encode(self, examples: list[classify.ClassifyExample], tokenizer, label2id: dict[str, int] | None) -> list:
        o = self.options
        return classify.encode_classify(examples, tokenizer, o.max_seq_len, label2id, o.long, o.stride)

    def features(self, examples: list[classify.ClassifyExample], tokenizer, config) -> list:
        return self._encode(examples, tokenizer, config.label2id)

    def _probabilities(self, logits):
        import torch

        return torch.sigmoid(logits) if self.options.multi_label else torch.softmax(logits, dim=-1)

    def predict(self, model, tokenizer, examples: list[classify.ClassifyExample], batch_size: int) -> list[dict]:
        labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
        features = self._encode(examples, tokenizer, None)
        if self.options.long == "windows":
            return self._predict_windows(model, tokenizer, features, batch_size, labels)
        return [self.prediction(self._probabilities(row["logits"]).tolist(), labels)
                for row in self._rows(model, features, batch_size, tokenizer)]

    def _predict_windows(self, model, tokenizer, documents: list, batch_size: int, labels: list[str]) -> list[dict]:
        """Every window of every document through the batched runner, then each document's windows pooled as in
        training. Each prediction also carries "windows": each window's character range and own scores (and its
        attention weight with --window-pool attention)."""
        import torch

        from bertkit.data.windows import window_inputs
        from bertkit.heads import pool_windows

        attention = self.options.window_pool == "attention"
        if attention and not hasattr(model, "window_attention"):
            raise BertkitError("this model pools windows with a learned attention that the loaded model lacks "
                               "(the ONNX backend runs without it; use --backend torch)")
        windows = [ids for document in documents for ids in window_inputs(document["input_ids"], document["windows"])]
        owners = torch.tensor([d for d, document in enumerate(documents) for _ in document["windows"]])
        outputs = {"logits": False, "pooled": False} if attention else {"logits": False}
        rows = self._rows(model, [{"input_ids": ids, "token_type_ids": [0] * len(ids)} for ids in windows],
                          batch_size, tokenizer, outputs)
        window_logits = torch.stack([row["logits"] for row in rows])
        if attention:
            device = model.window_attention.score.weight.device
            pooled = torch.stack([row["pooled"] for row in rows]).to(device)
            logits, weights = model.pool_documents(window_logits.to(device), pooled, owners.to(device))
            logits, weights = logits.float().cpu(), weights.float().cpu().tolist()
        else:
            logits, weights = pool_windows(window_logits, owners, self.options.window_pool), None
        window_probs = self._probabilities(window_logits).tolist()
        results, cursor = [], 0
        for document, probs in zip(documents, self._probabilities(logits).tolist()):
            prediction = self.prediction(probs, labels)
            prediction["windows"] = []
            for k, (start, end) in enumerate(document["spans"], start=cursor):
                window = {"start": start, "end": end, "scores": dict(zip(labels, window_probs[k]))}
                if weights is not None:
                    window["weight"] = weights[k]
                prediction["windows"].append(window)
            cursor += len(document["spans"])
            results.append(prediction)
        return results

    def prediction(self, probs: list[float], labels: list[str]) -> dict[str, Any]:
        """The JSON of one prediction from its probabilities in label order (softmax, or sigmoid per label)."""
        scores = dict(zip(labels, probs))
        if self.options.multi_label:  # every label above one half; score = the most confident one's
            return {"label": [label for label, p in scores.items() if p > 0.5], "score": max(probs), "scores": scores}
        best = max(range(len(probs)), key=probs.__getitem__)
        return {"label": labels[best], "score": probs[best], "scores": scores}

    def score(self, examples: list[classify.ClassifyExample], predictions: list[dict], config) -> dict[str, Any]:
        from bertkit import metrics

        labels = [config.id2label[i] for i in range(len(config.id2label))]
        index = {label: i for i, label in enumerate(labels)}
        if self.options.multi_label:
            def indicator(chosen: list[str]) -> list[int]:
                return [int(label in chosen) for label in labels]

            return metrics.multilabel_metrics(
                [indicator(e.label) for e in examples], [indicator(p["label"]) for p in predictions], labels
            )
        return metrics.classification_metrics(
            [index[e.label] for e in examples], [index[p["label"]] for p in predictions], labels
        )
