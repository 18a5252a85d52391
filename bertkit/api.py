"""The Python API: `finetune`, `distill`, `load`, `pretrain`, `embed`, `zeroshot`, `prompt_classifier`, and the
fine-tuned model they hand back.

Each keyword is an option of the command line with the same name and default (both come from the
option dataclasses), and bad input raises the same one-line BertkitError the command line prints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertkit.errors import BertkitError
from bertkit.options import split_keywords

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from bertkit.inference import Predictor
    from bertkit.prompt import PromptClassifier
    from bertkit.tokenizer import BertTokenizer
    from bertkit.trainer import History


class FineTuned:
    """A fine-tuned model directory, ready to predict and evaluate (what `finetune` and `load` return).

    `predict(inputs)` gives the same JSON as `bertkit predict`, `evaluate(data)` the same dict as
    `bertkit evaluate`. `model` and `tokenizer` are the PyTorch model (torch backend) and its tokenizer;
    `history` holds the training run's epochs and loss curve (None for a directory trained elsewhere).
    The model is loaded on first use.
    """

    def __init__(self, directory: str | os.PathLike, history: History | None = None, **options: Any) -> None:
        from bertkit.inference import InferenceOptions

        (inference,) = split_keywords(options, InferenceOptions, what="load")
        self.options = InferenceOptions(**inference)
        self.directory = Path(directory)
        self._history = history
        self._predictor: Predictor | None = None

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            from bertkit.inference import Predictor

            o = self.options
            self._predictor = Predictor(self.directory, o.batch_size, fp32=o.fp32, backend=o.backend, onnx_file=o.onnx,
                                        encoding=o.encoding)
        return self._predictor

    @property
    def model(self) -> nn.Module:
        return self.predictor.model

    @property
    def tokenizer(self) -> BertTokenizer:
        return self.predictor.tokenizer

    @property
    def task(self) -> str:
        return self.predictor.task.name

    @property
    def history(self) -> History | None:
        """The training run: the History `finetune` returned, or the one metrics.json records."""
        if self._history is None and (self.directory / "metrics.json").is_file():
            from bertkit.trainer import History

            record = json.loads((self.directory / "metrics.json").read_text(encoding="utf-8"))
            self._history = History(**{k: record[k] for k in ("epochs", "steps", "best", "best_epoch") if k in record})
        return self._history

    @property
    def cross_validation(self) -> dict[str, Any] | None:
        """`finetune(folds=K)`'s report: folds, mean, std and per_fold of each metric (None without folds)."""
        from bertkit.folds import REPORT_FILE

        path = self.directory / REPORT_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def predict(self, inputs: list[Any]) -> list[dict]:
        """One prediction per input, in order: strings (classification, NER), `(text, pair)` tuples, or
        `{"question": ..., "context": ...}` dicts (QA). An empty text gets the task's empty prediction with an
        "error" field (`{"label": None, "score": None, "scores": {}, "error": "empty text"}`), so the list stays
        aligned with `inputs`."""
        predictor = self.predictor
        return predictor.predict(predictor.from_inputs(inputs))

    def evaluate(self, data: Any) -> dict[str, Any]:
        """Metrics on labelled data: a path, a list of dicts or a DataFrame, read as the training data is."""
        return self.predictor.evaluate(data)

    def embed(self, texts: list[str], **options: Any) -> np.ndarray:
        """Sentence embeddings from this model's encoder, (len(texts), hidden) float32, as `bertkit embed`
        computes them. `options`: pooling="mean"|"cls"|"max", normalize=True, layers="-1", max_seq_len."""
        from bertkit.embeddings import EmbedOptions, encode

        if self.options.backend != "torch":
            raise BertkitError("embeddings need the torch backend; the ONNX graph returns the task's outputs only")
        (embed_options,) = split_keywords(options, EmbedOptions, what="embed")
        return encode(self.model, self.tokenizer, texts, batch_size=self.options.batch_size, **embed_options)

    def __repr__(self) -> str:
        return f"FineTuned({str(self.directory)!r})"


def finetune(
    task: str,
    train: Any,
    *,
    out: str | os.PathLike,
    dev: Any = None,
    model: Any = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
    loss_fn: Callable[[nn.Module, dict[str, Any]], tuple[Any, dict[str, float]]] | None = None,
    tokenizer: BertTokenizer | None = None,
    **options: Any,
) -> FineTuned:
    """Fine-tune a pre-trained BERT for `task` ("classify", "ner", "qa", "setfit") and return the best model.

    `train`/`dev`: a path, a list of dicts (classify: columns; ner: {"tokens", "tags"}) or a DataFrame.
    `model`: a directory, a hub id, or a bertkit model (a FineTuned, or a module with `tokenizer=`);
    default the packaged all-MiniLM-L6-v2. `prepare_model(model) -> model` runs before the optimizer is
    built (freezing, adapters); `loss_fn(model, batch) -> (loss, logs)` replaces the head's loss.
    `options`: every flag of `bertkit finetune TASK` (epochs=3, max_seq_len=128, lr: by default
    from the model's size and the task, see bertkit/defaults.py, ...), among them
    what trains: freeze="encoder" or N, peft="lora" | "bitfit" | "adapter" (with lora_rank, lora_alpha,
    lora_dropout, lora_targets, adapter_size); these run before `prepare_model`. Classification also takes
    continual=True with `model` a fine-tuned classifier (continual_strategy="rehearsal" | "ewc" | "none",
    rehearsal_size, rehearsal_ratio, ewc_lambda, stage_name, stage_dev_size; see bertkit.continual).

    "setfit" (few-shot, same data as "classify"): contrastive pairs tune the encoder, then a logistic
    regression on the embeddings becomes the head; options k, num_pairs, epochs, batch_size, lr, head_c,
    seed, the classify columns and max_seq_len, overwrite. The result is a classify model directory.
    """
    if task == "setfit":
        from bertkit.setfit import train_setfit

        if prepare_model is not None or loss_fn is not None or tokenizer is not None:
            raise BertkitError("finetune setfit takes no prepare_model, loss_fn or tokenizer")
        return FineTuned(out, train_setfit(train, out, model, dev, **options))

    from bertkit.continual import ContinualOptions
    from bertkit.efficient import EfficientOptions, preparer
    from bertkit.finetuning import FinetuneOptions
    from bertkit.finetuning import finetune as run
    from bertkit.tasks import get_task
    from bertkit.trainer import TrainConfig

    task_class = get_task(task)
    task_options, train_options, extra, efficient, continual_options = split_keywords(
        options, task_class.Options, TrainConfig, FinetuneOptions, EfficientOptions, ContinualOptions,
        what=f"finetune {task}"
    )
    settings, continual = FinetuneOptions(**extra), ContinualOptions(**continual_options)
    efficient = EfficientOptions(**efficient)
    prepare_model = preparer(efficient, then=prepare_model)
    task, train_config = task_class(task_options, encoding=settings.encoding), TrainConfig(**train_options)
    if settings.mlm_weight:
        from bertkit.auxiliary import mlm_hooks

        prepare_model, loss_fn = mlm_hooks(settings.mlm_weight, model, prepare_model, loss_fn)
    stage = None
    if continual.continual and task.name != "classify":
        raise BertkitError(f"--continual is not supported yet for {task.name}; classification only")
    if continual.continual and (settings.folds or efficient.peft in ("lora", "adapter")):
        raise BertkitError("--continual does not go with --folds, --peft lora or --peft adapter")
    if task.name == "classify":  # every classify run is a stage a later --continual run can build on
        from bertkit.checkpoint import refuse_to_replace_model
        from bertkit.continual import Stage

        refuse_to_replace_model(Path(out), settings.overwrite, settings.resume)
        stage = Stage(task, continual, model, Path(out), train, dev, train_config.seed)
        train, dev = stage.train, stage.dev
        prepare_model, loss_fn = stage.hooks(prepare_model, loss_fn)
    hooks = {"prepare_model": prepare_model, "loss_fn": loss_fn, "tokenizer": tokenizer}
    report = None
    if settings.folds:
        from bertkit.checkpoint import refuse_to_replace_model
        from bertkit.folds import cross_validate
        from bertkit.tasks.base import ReadExamples

        if settings.resume:
            raise BertkitError("--folds and --resume do not go together; cross-validate in a fresh run")
        refuse_to_replace_model(Path(out), settings.overwrite)
        train = ReadExamples(task.examples(train, "train"))  # read once, for the folds and the final model
        report = cross_validate(task, train, model, train_config, settings.folds, settings.eval_batch_size, **hooks)
    history = run(task, train, out, model, dev, train_config, settings.eval_batch_size, settings.resume,
                  settings.overwrite, **hooks, labels=stage.labels if stage is not None else None)
    if stage is not None:
        stage.finish(history, settings.eval_batch_size)
    if report is not None:
        from bertkit.callbacks import to_json
        from bertkit.fileio import atomic_write_text
        from bertkit.folds import REPORT_FILE

        atomic_write_text(Path(out) / REPORT_FILE, to_json(report))
    return FineTuned(out, history)


def distill(teacher: str | os.PathLike, train: Any, *, out: str | os.PathLike, dev: Any = None,
            **options: Any) -> FineTuned:
    """Distil a fine-tuned classify or NER model (`teacher`, a directory) into a smaller student in `out`.

    `train`/`dev` as for `finetune`, in the teacher's format and columns. `options`: every flag of
    `bertkit distill`: unlabeled=FILE (texts the teacher labels), student_layers=N (default half the
    teacher's, every other one) | student_size="tiny"|"mini"|... | student_config=FILE, temperature=2.0,
    alpha=0.5 (soft vs hard), hidden_loss=False, and the training flags (epochs, lr, batch_size, ...).
    The student predicts, serves and exports like any model of the teacher's task.
    """
    from bertkit.distillation import distill as run

    return FineTuned(out, run(teacher, train, out, dev, **options))


def load(directory: str | os.PathLike, **options: Any) -> FineTuned:
    """A fine-tuned model directory (bertkit's or a transformers BertFor* one) for predict and evaluate.

    `options`: those of `bertkit predict`: backend="torch" | "onnx", onnx=FILE, batch_size=64, fp32=False,
    encoding="utf-8" (of the files given to `evaluate`).
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise BertkitError(f"load takes a model directory, not {type(directory).__name__}")
    return FineTuned(directory, **options)


def pretrain(corpus: list[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, **options: Any) -> History:
    """Pre-train BERT (masked LM, and next-sentence prediction unless nsp=False) on plain-text files.

    `options`: every flag of `bertkit pretrain` (steps, model_size, vocab_size, tokenizer, lr, ...).
    Returns the run's History; the model is in `out`, ready for `finetune(model=out)`.
    """
    from bertkit.pretraining import TRAIN_DEFAULTS, PretrainSettings
    from bertkit.pretraining import pretrain as run
    from bertkit.trainer import TrainConfig

    files = [str(corpus)] if isinstance(corpus, (str, os.PathLike)) else [str(path) for path in corpus]
    settings, train_options = split_keywords(options, PretrainSettings, TrainConfig, what="pretrain")
    train = TrainConfig(**{**TRAIN_DEFAULTS, **train_options})
    return run(PretrainSettings(corpus=files, out=str(out), train=train, **settings))


def embed(texts: list[str], model: str | os.PathLike | None = None, *, batch_size: int = 64, **options: Any) -> np.ndarray:
    """Sentence embeddings of `texts` from any model directory's encoder (default the packaged
    all-MiniLM-L6-v2), (len(texts), hidden) float32 in input order, as `bertkit embed` writes them.

    `options`: pooling="mean"|"cls"|"max" (mean and max read real tokens only), normalize=True (L2),
    layers="-1" (or (-1, -2): averaged before pooling), max_seq_len. The defaults are the
    sentence-transformers recipe (mean pooling, L2 norm).
    """
    from bertkit.embeddings import EmbedOptions, encode, load_encoder

    (embed_options,) = split_keywords(options, EmbedOptions, what="embed")
    encoder, tokenizer = load_encoder(model)
    return encode(encoder, tokenizer, texts, batch_size=batch_size, **embed_options)


def zeroshot(labels: dict[str, str] | str | os.PathLike, *, out: str | os.PathLike, model: str | os.PathLike | None = None,
             **options: Any) -> FineTuned:
    """A zero-shot classifier from a sentence encoder: each text scores softmax(cosine(text, description) /
    temperature) against each label's description. No training; saved to `out` as a classify model.

    `labels`: {label: description} or a JSON file of that object. `options`: temperature=0.05, overwrite.
    """
    from bertkit.setfit import zeroshot_classifier

    zeroshot_classifier(labels, out, model, **options)
    return FineTuned(out)


def prompt_classifier(prompt: str | os.PathLike | dict[str, Any], verbalizer: dict[str, Any] | str | os.PathLike | None = None,
                      *, model: str | os.PathLike | None = None, calibrate: bool = False,
                      batch_size: int = 32) -> PromptClassifier:
    """Zero-shot classification with a masked-LM checkpoint (PET style); `.predict(texts)` gives the JSON
    of a fine-tuned classifier, `.evaluate(data)` its metrics.

    `prompt` is a template such as "{text} It was [MASK]." with `verbalizer` {label: word or [words]}
    (a dict or a JSON file), or, without `verbalizer`, a dict or JSON file {"template", "verbalizer"}.
    `calibrate` divides the scores by those of the content-free input "N/A".
    """
    from bertkit.prompt import Prompt, load_prompt_classifier

    loaded = Prompt.load(prompt) if verbalizer is None else Prompt.make(str(prompt), verbalizer)
    return load_prompt_classifier(model, loaded, calibrate, batch_size)
