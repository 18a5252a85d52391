"""The three fine-tuning task families behind one small interface.

A task reads its files, turns examples into features, predicts JSON-ready results and scores them.
The trainer, `evaluate`, `predict` and the server only talk to this interface. A fine-tuned model
directory records its task and settings in config.json under "bertkit", so later commands need only
`--model DIR`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from bertkit import metrics
from bertkit.batching import Feature, forward_in_batches
from bertkit.data import classify, ner, qa
from bertkit.data.io import DEFAULT_ENCODING
from bertkit.errors import BertkitError
from bertkit.config import BertConfig
from bertkit.plots import plot_confusion_matrix
from bertkit.tokenizer import BertTokenizer


class Task(ABC):
    name: ClassVar[str]
    architecture: ClassVar[str]
    main_metric: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {"max_seq_len": 128}
    # The answer to an input that cannot be predicted (an empty text), with an "error" field added next to these.
    empty_prediction: ClassVar[dict[str, Any]] = {}

    def __init__(self, settings: dict[str, Any] | None = None, encoding: str = DEFAULT_ENCODING) -> None:
        self.settings = {**self.defaults, **(settings or {})}
        self.encoding = encoding  # of the files this run reads; not a model setting, so not saved with it

    @abstractmethod
    def read(self, path: str | os.PathLike, require_labels: bool = True) -> list[Any]:
        """Examples from a file in the task's training format (labels optional when predicting)."""

    def stream(self, path: str | os.PathLike) -> Iterator[Any]:
        """Prediction input, one example at a time, so a file larger than memory can be predicted.
        Formats that are one document (SQuAD JSON) are read whole."""
        return iter(self.read(path, require_labels=False))

    @abstractmethod
    def from_text(self, text: str, line: int) -> Any:
        """An unlabelled example from one raw text (a command-line argument or a line of a .txt file), even a blank one."""

    def problem(self, example: Any) -> str | None:
        """Why an example cannot be predicted (it then gets `empty_prediction` with this "error"), or None."""
        return None

    @staticmethod
    def example_id(example: Any) -> str | int:
        """The input's own id where it has one, else its line number, so every prediction joins back to its row."""
        return example.id if example.id is not None else example.line

    def save_plots(self, out_dir: Path, dev_metrics: dict[str, Any]) -> None:
        """Task-specific pictures of the best epoch's dev results."""

    def label_list(self, examples: list[Any]) -> list[str] | None:
        """The labels of a new model, from its training examples; None for tasks without labels."""
        return None

    def check_labels(self, examples: list[Any], config: BertConfig, path: str | os.PathLike) -> None:
        """Fail on labels the model does not know (a dev file with a label the training file lacks)."""

    @abstractmethod
    def features(self, examples: list[Any], tokenizer: BertTokenizer, config: BertConfig) -> list[Feature]:
        """Training features, labels included."""

    @abstractmethod
    def predict(self, model: torch.nn.Module, tokenizer: BertTokenizer, examples: list[Any], batch_size: int) -> list[dict]:
        """One JSON-ready prediction per example, in example order."""

    @abstractmethod
    def score(self, examples: list[Any], predictions: list[dict], config: BertConfig) -> dict[str, Any]:
        """Metrics of predictions against the examples' gold labels."""

    def config_for(self, config: BertConfig, labels: list[str] | None) -> BertConfig:
        """The model config for this task: labels, problem type, and our settings for later commands."""
        if labels is not None:
            config.id2label = dict(enumerate(labels))
            config.label2id = {label: i for i, label in enumerate(labels)}
        config.extra["bertkit"] = {"task": self.name, **self.settings}
        return config


class ClassifyTask(Task):
    """Single sentences or pairs, one label (softmax) or several (sigmoid)."""

    name = "classify"
    architecture = "BertForSequenceClassification"
    main_metric = "accuracy"
    defaults = {"max_seq_len": 128, "text_column": "text", "text_pair_column": None, "label_column": "label", "multi_label": False}
    empty_prediction = {"label": None, "score": None, "scores": {}}

    def read(self, path: str | os.PathLike, require_labels: bool = True) -> list[classify.ClassifyExample]:
        return list(self._iter(path, require_labels))

    def stream(self, path: str | os.PathLike) -> Iterator[classify.ClassifyExample]:
        return self._iter(path, require_labels=False)

    def _iter(self, path: str | os.PathLike, require_labels: bool) -> Iterator[classify.ClassifyExample]:
        s = self.settings
        return classify.iter_classify(path, s["text_column"], s["text_pair_column"], s["label_column"], s["multi_label"],
                                      require_labels, self.encoding)

    def from_text(self, text: str, line: int) -> classify.ClassifyExample:
        return classify.ClassifyExample(text, None, None, line)

    def problem(self, example: classify.ClassifyExample) -> str | None:
        return "empty text" if not example.text.strip() or (example.pair is not None and not example.pair.strip()) else None

    def save_plots(self, out_dir: Path, dev_metrics: dict[str, Any]) -> None:
        if "confusion_matrix" in dev_metrics:
            plot_confusion_matrix(dev_metrics["confusion_matrix"], list(dev_metrics["per_class"]), out_dir / "confusion_matrix.png")

    def label_list(self, examples: list[classify.ClassifyExample]) -> list[str]:
        labels = classify.label_list(examples)
        if len(labels) < 2 and not self.settings["multi_label"]:
            raise BertkitError(f"the training file has only one label ({labels[0]!r}); classification needs at least two")
        return labels

    def config_for(self, config: BertConfig, labels: list[str] | None) -> BertConfig:
        config.problem_type = "multi_label_classification" if self.settings["multi_label"] else "single_label_classification"
        return super().config_for(config, labels)

    def check_labels(self, examples: list[classify.ClassifyExample], config: BertConfig, path: str | os.PathLike) -> None:
        classify.check_labels(examples, config.label2id or {}, path)

    def features(self, examples: list[classify.ClassifyExample], tokenizer: BertTokenizer, config: BertConfig) -> list[Feature]:
        return classify.encode_classify(examples, tokenizer, self.settings["max_seq_len"], config.label2id)

    def predict(self, model: torch.nn.Module, tokenizer: BertTokenizer, examples: list[classify.ClassifyExample], batch_size: int) -> list[dict]:
        id2label = model.config.id2label
        features = classify.encode_classify(examples, tokenizer, self.settings["max_seq_len"])
        results: list[dict] = [{} for _ in examples]
        for indices, output in forward_in_batches(model, features, batch_size, tokenizer.pad_token_id):
            logits = output.logits.float()
            probs = torch.sigmoid(logits) if self.settings["multi_label"] else torch.softmax(logits, dim=-1)
            for i, row in zip(indices, probs.tolist()):
                scores = {id2label[j]: p for j, p in enumerate(row)}
                if self.settings["multi_label"]:  # every label above one half; score = the most confident one's
                    chosen = [label for label, p in scores.items() if p > 0.5]
                    results[i] = {"label": chosen, "score": max(row), "scores": scores}
                else:
                    best = max(range(len(row)), key=row.__getitem__)
                    results[i] = {"label": id2label[best], "score": row[best], "scores": scores}
        return results

    def score(self, examples: list[classify.ClassifyExample], predictions: list[dict], config: BertConfig) -> dict[str, Any]:
        labels = [config.id2label[i] for i in range(len(config.id2label))]
        index = {label: i for i, label in enumerate(labels)}
        if self.settings["multi_label"]:
            def indicator(chosen: list[str]) -> list[int]:
                return [int(label in chosen) for label in labels]

            return metrics.multilabel_metrics(
                [indicator(e.label) for e in examples], [indicator(p["label"]) for p in predictions], labels
            )
        return metrics.classification_metrics(
            [index[e.label] for e in examples], [index[p["label"]] for p in predictions], labels
        )


@dataclass
class _TextNerExample(ner.NerExample):
    """A raw text to tag: entity offsets point into `text` itself."""

    text: str = ""


class NerTask(Task):
    """Token tagging: the first piece of each word is labelled; long sentences run in overlapping windows."""

    name = "ner"
    architecture = "BertForTokenClassification"
    main_metric = "f1"
    defaults = {"max_seq_len": 128, "stride": 32}
    empty_prediction = {"entities": [], "tags": []}

    def read(self, path: str | os.PathLike, require_labels: bool = True) -> list[ner.NerExample]:
        return ner.read_ner(path, require_tags=require_labels, encoding=self.encoding)

    def stream(self, path: str | os.PathLike) -> Iterator[ner.NerExample]:
        return ner.iter_ner(path, require_tags=False, encoding=self.encoding)

    def from_text(self, text: str, line: int) -> ner.NerExample:
        return _TextNerExample(ner.split_words(text)[0], None, line, text=text)

    def problem(self, example: ner.NerExample) -> str | None:
        return None if example.words else "empty text"

    def label_list(self, examples: list[ner.NerExample]) -> list[str]:
        return ner.label_list(examples)

    def check_labels(self, examples: list[ner.NerExample], config: BertConfig, path: str | os.PathLike) -> None:
        known = config.label2id or {}
        for example in examples:
            for tag in example.tags or []:
                if tag not in known:
                    raise BertkitError(f"{path}:{example.line}: tag {tag!r} is not one of the training tags ({', '.join(known)})")

    def _windows(self, example: ner.NerExample, tokenizer: BertTokenizer, label2id: dict[str, int] | None) -> list[ner.NerWindow]:
        return ner.encode_ner(example.words, tokenizer, self.settings["max_seq_len"], self.settings["stride"],
                              label2id, example.tags if label2id is not None else None)

    def features(self, examples: list[ner.NerExample], tokenizer: BertTokenizer, config: BertConfig) -> list[Feature]:
        return [
            {"input_ids": w.input_ids, "token_type_ids": w.token_type_ids, "labels": w.labels}
            for example in examples
            for w in self._windows(example, tokenizer, config.label2id)
        ]

    def predict(self, model: torch.nn.Module, tokenizer: BertTokenizer, examples: list[ner.NerExample], batch_size: int) -> list[dict]:
        id2label = model.config.id2label
        windows = [self._windows(example, tokenizer, None) for example in examples]
        flat = [(e, w) for e, ws in enumerate(windows) for w in ws]
        features = [{"input_ids": w.input_ids, "token_type_ids": w.token_type_ids} for _, w in flat]
        logits: list[torch.Tensor | None] = [None] * len(flat)
        for indices, output in forward_in_batches(model, features, batch_size, tokenizer.pad_token_id):
            for i, row in zip(indices, output.logits.float()):
                logits[i] = row[: len(flat[i][1].input_ids)]
        results, cursor = [], 0
        for example, example_windows in zip(examples, windows):
            window_logits = logits[cursor : cursor + len(example_windows)]
            cursor += len(example_windows)
            label_ids, scores = ner.word_predictions(example_windows, window_logits, len(example.words))
            tags = [id2label[i] for i in label_ids]
            if isinstance(example, _TextNerExample):  # offsets into the text exactly as the user gave it
                text, spans = example.text, ner.split_words(example.text)[1]
            else:
                text, spans = ner.join_words(example.words)
            results.append({"entities": ner.decode_entities(text, spans, tags, scores), "tags": tags})
        return results

    def score(self, examples: list[ner.NerExample], predictions: list[dict], config: BertConfig) -> dict[str, Any]:
        return metrics.entity_metrics([e.tags for e in examples], [p["tags"] for p in predictions])


class QATask(Task):
    """Extractive QA: question + context windows, best valid span across windows, SQuAD 2.0 no-answer."""

    name = "qa"
    architecture = "BertForQuestionAnswering"
    main_metric = "f1"
    defaults = {"max_seq_len": 384, "doc_stride": 128, "max_query_len": 64, "max_answer_len": 30, "null_threshold": 0.0,
                "version_2": False}

    def read(self, path: str | os.PathLike, require_labels: bool = True) -> list[qa.QAExample]:
        if Path(path).suffix.lower() in (".jsonl", ".ndjson"):
            return qa.read_qa_jsonl(path, self.encoding)
        examples, version_2 = qa.read_squad(path, require_answers=require_labels, encoding=self.encoding)
        self.settings["version_2"] = self.settings["version_2"] or version_2
        return examples

    def stream(self, path: str | os.PathLike) -> Iterator[qa.QAExample]:
        if Path(path).suffix.lower() in (".jsonl", ".ndjson"):
            return qa.iter_qa_jsonl(path, self.encoding)
        return super().stream(path)

    def from_text(self, text: str, line: int) -> qa.QAExample:
        raise BertkitError("question answering needs a question and a context: use --input FILE.jsonl "
                           'with {"question": ..., "context": ...} per line')

    def features(self, examples: list[qa.QAExample], tokenizer: BertTokenizer, config: BertConfig) -> list[Feature]:
        return [
            {"input_ids": f.input_ids, "token_type_ids": f.token_type_ids,
             "start_positions": f.start_position, "end_positions": f.end_position}
            for f in self._features(examples, tokenizer)
        ]

    def _features(self, examples: list[qa.QAExample], tokenizer: BertTokenizer) -> list[qa.QAFeature]:
        s = self.settings
        return qa.encode_qa(examples, tokenizer, s["max_seq_len"], s["doc_stride"], s["max_query_len"])

    def predict(self, model: torch.nn.Module, tokenizer: BertTokenizer, examples: list[qa.QAExample], batch_size: int) -> list[dict]:
        features = self._features(examples, tokenizer)
        inputs = [{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids} for f in features]
        starts: list[list[float]] = [[] for _ in features]
        ends: list[list[float]] = [[] for _ in features]
        for indices, output in forward_in_batches(model, inputs, batch_size, tokenizer.pad_token_id):
            for i, start, end in zip(indices, output.start_logits.float(), output.end_logits.float()):
                length = len(features[i].input_ids)
                starts[i], ends[i] = start[:length].tolist(), end[:length].tolist()
        s = self.settings
        return qa.decode_qa(examples, features, starts, ends, max_answer_len=s["max_answer_len"],
                            allow_no_answer=s["version_2"], null_threshold=s["null_threshold"])

    def score(self, examples: list[qa.QAExample], predictions: list[dict], config: BertConfig) -> dict[str, Any]:
        golds = {e.id: [a["text"] for a in e.answers] for e in examples}
        return metrics.squad_metrics(golds, {e.id: p["answer"] for e, p in zip(examples, predictions)})


TASKS: dict[str, type[Task]] = {task.name: task for task in (ClassifyTask, NerTask, QATask)}


# What a directory fine-tuned elsewhere (say with the transformers Trainer) is for, by its architecture.
_TASK_OF_ARCHITECTURE = {task.architecture: name for name, task in TASKS.items()}


def task_of(config: BertConfig) -> Task:
    """The task a fine-tuned model directory is for, with the settings it was trained with."""
    settings = dict(config.extra.get("bertkit") or {})
    name = settings.pop("task", None) or _TASK_OF_ARCHITECTURE.get((config.architectures or [""])[0])
    if name not in TASKS:
        raise BertkitError(
            f"the model is a {(config.architectures or ['BertModel'])[0]}, not fine-tuned for a task; "
            "fine-tune it first with `bertkit finetune`"
        )
    return TASKS[name](settings)
