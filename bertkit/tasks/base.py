"""The interface every fine-tuning task family implements, and the lookup of a model directory's task.

A task reads its files, turns examples into features, predicts JSON-ready results and scores them; it
also names its options (flags and keywords), the model outputs it decodes (which an ONNX graph must
have) and the inputs `predict` accepts. The trainer, `evaluate`, `predict`, the API and the server only
talk to this interface. A fine-tuned model directory records its task and options in config.json under
"bertkit", so later commands need only `--model DIR`.
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bertkit.data.io import DEFAULT_ENCODING
from bertkit.errors import BertkitError

if TYPE_CHECKING:
    import torch

    from bertkit.batching import Feature
    from bertkit.config import BertConfig
    from bertkit.tokenizer import BertTokenizer


class ReadExamples(list):
    """Examples already read and checked (a fold of cross-validation): `Task.examples` passes them through."""


class Task(ABC):
    name: ClassVar[str]
    help: ClassVar[str]  # one line for `bertkit finetune --help`
    architecture: ClassVar[str]
    main_metric: ClassVar[str]
    Options: ClassVar[type]  # an options.Options dataclass: the task's flags and keywords
    # The model outputs the task decodes, each marked True when it has one row per token: the batched
    # runner cuts those to each feature's length, and an exported graph must provide them all.
    outputs: ClassVar[dict[str, bool]]
    labelled: ClassVar[bool] = True  # predictions are among the model's labels (id2label); QA's are spans

    # The body of `POST /v1/predict` for this task: the request fields it takes, and how to say it in errors.
    request_fields: ClassVar[frozenset[str]]
    request_help: ClassVar[str]
    # The answer to an input that cannot be predicted (an empty text); an "error" field goes next to these.
    empty_prediction: ClassVar[dict[str, Any]] = {}

    def __init__(self, settings: dict[str, Any] | None = None, encoding: str = DEFAULT_ENCODING) -> None:
        known = {f.name for f in dataclasses.fields(self.Options)}
        self.options = self.Options(**{k: v for k, v in (settings or {}).items() if k in known})
        self.encoding = encoding  # of the files this run reads: not a model setting, so not saved with it

    @property
    def settings(self) -> dict[str, Any]:
        """The options as a plain dict (what config.json records)."""
        return dataclasses.asdict(self.options)

    @abstractmethod
    def read(self, path: str | os.PathLike, require_labels: bool = True) -> list[Any]:
        """Examples from a file in the task's training format (labels optional when predicting)."""

    def stream(self, path: str | os.PathLike) -> Iterator[Any]:
        """Prediction input, one example at a time, so a file larger than memory can be predicted.
        Formats that are one document (SQuAD JSON) are read whole."""
        return iter(self.read(path, require_labels=False))

    def from_records(self, records: list[dict[str, Any]], what: str, require_labels: bool = True) -> list[Any]:
        """Examples from in-memory rows (a list of dicts, a DataFrame's records), as `read` gives from a file;
        errors name them `what:row` as a file's name `path:line`."""
        raise BertkitError(f"the {self.name} task reads files only; give a path")

    def examples(self, data: Any, what: str, require_labels: bool = True) -> list[Any]:
        """Examples from a path, a list of dicts, or a pandas DataFrame (its rows as dicts); `what` names the data
        in errors ("train", "dev")."""
        if isinstance(data, (str, os.PathLike)):
            return self.read(data, require_labels)
        if isinstance(data, ReadExamples):
            return list(data)
        if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a DataFrame, without importing pandas
            data = data.to_dict(orient="records")
        if not isinstance(data, list):
            raise BertkitError(f"{what}= takes a path, a list of dicts or a pandas DataFrame, not {type(data).__name__}")
        if not data:
            raise BertkitError(f"{what}= is empty; give at least one example")
        return self.from_records(data, what, require_labels)

    @abstractmethod
    def from_text(self, text: str, line: int) -> Any:
        """An unlabelled example from one raw text (a command-line argument or a line of a .txt file), even a
        blank one: `problem` then says why it cannot be predicted."""

    def problem(self, example: Any) -> str | None:
        """Why an example cannot be predicted (it then gets `empty_prediction` with this "error"), or None."""
        return None

    def example_id(self, example: Any) -> str | int:
        """The input's own id where it has one, else its 1-based line or row number, so that every prediction
        line joins back to its input."""
        return example.id if example.id is not None else example.line

    def from_input(self, item: Any, line: int) -> Any:
        """An unlabelled example from one `predict` input of the Python API (a string by default)."""
        if not isinstance(item, str):
            raise BertkitError(f"input {line}: expected a string, got {type(item).__name__}")
        return self.from_text(item, line)

    def from_request(self, fields: dict[str, Any], check: Callable[[str, list[str]], None]) -> tuple[list[Any], bool]:
        """Examples from the given fields of a `/v1/predict` body (a subset of `request_fields`, not empty), and
        whether they are sentence pairs (encoded apart from single texts). `check(name, texts)` applies the
        server's limits; a request of the wrong shape is a BertkitError (HTTP 422)."""
        texts = fields.get("texts")
        if texts is None:
            raise BertkitError(f"this model ({self.name}) takes {self.request_help}, not {', '.join(sorted(fields))}")
        check("texts", texts)
        return [self.from_text(text, number) for number, text in enumerate(texts, start=1)], False

    def save_plots(self, out_dir: Path, dev_metrics: dict[str, Any]) -> None:
        """Task-specific pictures of the best epoch's dev results."""

    def label_list(self, examples: list[Any]) -> list[str] | None:
        """The labels of a new model, from its training examples; None for tasks without labels."""
        return None

    def check_labels(self, examples: list[Any], config: BertConfig, path: str | os.PathLike) -> None:
        """Fail on labels the model does not know (a dev file with a label the training file lacks)."""

    def stratify_labels(self, examples: list[Any]) -> list[str] | None:
        """One label per example for stratified cross-validation folds; None where folds are plain random."""
        return None

    def label_prior(self, examples: list[Any]) -> dict[str, Any] | None:
        """What the majority-class baseline predicts from, counted on labelled examples (saved with a new model
        so `evaluate` can score the baseline without the training file); None where it needs nothing."""
        return None

    def prior_predictions(self, examples: list[Any], prior: dict[str, Any] | None) -> list[dict] | None:
        """The majority-class (prior) baseline's prediction for each example, scored as the model's are;
        None for tasks without one (QA)."""
        return None

    @abstractmethod
    def features(self, examples: list[Any], tokenizer: BertTokenizer, config: BertConfig) -> list[Feature]:
        """Training features, labels included."""

    def training_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss `finetune` minimises when it is given no loss_fn: the head's own."""
        return model(**batch).loss, {}

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

    def _rows(self, model: torch.nn.Module, features: list[Feature], batch_size: int, tokenizer: BertTokenizer,
              outputs: dict[str, bool] | None = None) -> list[dict[str, torch.Tensor]]:
        """Each feature's model outputs: the task's `outputs`, or those named here."""
        from bertkit.batching import forward_rows

        return forward_rows(model, features, batch_size, tokenizer.pad_token_id, outputs or self.outputs)
