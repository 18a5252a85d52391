"""`bertkit finetune TASK`: read and check every input first, then train, keeping the best model.

Nothing is written to the output directory until all inputs have been read and checked, so a bad
file never leaves a half-made model directory behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from bertkit.baselines import PRIOR_KEY
from bertkit.callbacks import Callback
from bertkit.checkpoint import load_config, load_pretrained, refuse_to_replace_model, resolve_model_dir, save_model
from bertkit.data.io import ReadOptions
from bertkit.defaults import LR_SOURCE_DEFAULT, LR_SOURCE_USER, default_lr_for
from bertkit.efficient import check_base, save_trained
from bertkit.errors import BertkitError
from bertkit.options import option
from bertkit.tasks import Task
from bertkit.tokenizer import BertTokenizer, warn_if_unknown
from bertkit.trainer import History, Trainer, TrainConfig, set_seed

# A model to start from: a directory or hub id, or a model object (with `tokenizer=` unless it carries one).
ModelSource = str | os.PathLike | nn.Module | Any | None
# loss_fn(model, batch) -> (loss, figures for the progress bar), in place of the head's own loss.
LossFn = Callable[[nn.Module, dict[str, Any]], tuple[Any, dict[str, float]]]


@dataclass
class FinetuneOptions(ReadOptions):
    """The settings of `bertkit finetune` that are neither training nor task settings (the files' --encoding
    among them)."""

    eval_batch_size: int = option(64, "examples per batch when scoring the dev data", min=1)
    resume: bool = option(False, "continue an interrupted run in --out")
    overwrite: bool = option(False, "replace a model already in --out")
    mlm_weight: float = option(0.0, "add this times a masked-LM loss on each batch (for models with an MLM head)",
                               min=0, metavar="λ")
    folds: int = option(0, "first cross-validate: K folds, mean and std of each metric in cross_validation.json "
                           "(0: none); the model kept is then trained on all the data", min=0, metavar="K")


def _start_from(model: ModelSource, tokenizer: BertTokenizer | None, staging: Path) -> Path:
    """A model directory for `model`: itself when it is a path or hub id; a model object is saved to `staging`
    first, so it loads through the same checks and head mapping as a directory does."""
    if model is None or isinstance(model, (str, os.PathLike)):
        return resolve_model_dir(model)
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    module = getattr(model, "model", model)  # a FineTuned carries its module and tokenizer
    if not isinstance(module, nn.Module) or tokenizer is None:
        raise BertkitError("model= is a directory, a hub id, or a bertkit model (with tokenizer= for a bare module)")
    save_model(module, staging)
    tokenizer.save_pretrained(staging)
    return staging


def with_learning_rate(train_config: TrainConfig, config: Any, task_name: str) -> TrainConfig:
    """`train_config` with its learning rate: the user's when given, else the default rule's for this model and
    task (announced on stderr), and where it came from in `lr_source` (metrics.json records both)."""
    if train_config.lr is not None:
        return train_config if train_config.lr_source else replace(train_config, lr_source=LR_SOURCE_USER)
    lr = default_lr_for(config, task_name)
    print(f"learning rate {lr:g}: the default for {task_name} with a model {config.hidden_size} wide and "
          f"{config.num_hidden_layers} layers deep (--lr sets another)", file=sys.stderr)
    return replace(train_config, lr=lr, lr_source=LR_SOURCE_DEFAULT)


def finetune(
    task: Task,
    train: Any,
    out_dir: str | os.PathLike,
    model_name: ModelSource = None,
    dev: Any = None,
    train_config: TrainConfig | None = None,
    eval_batch_size: int = 64,
    resume: bool = False,
    overwrite: bool = False,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
    loss_fn: LossFn | None = None,
    tokenizer: BertTokenizer | None = None,
    callbacks: Sequence[Callback] = (),
    labels: list[str] | None = None,
) -> History:
    """Fine-tune and keep the best model in `out_dir`. `train` and `dev` are paths or in-memory rows (see
    `Task.examples`). `prepare_model(model) -> model` runs on the loaded model before the optimizer is built
    (freezing, adapters); `loss_fn(model, batch) -> (loss, logs)` replaces the head's own loss. `callbacks` run
    after the trainer's own (best model, early stopping, metrics.json): `tune` prunes trials with one. `labels`
    orders the head's labels (continual learning keeps a model's own first); by default the training data's, sorted."""
    FinetuneOptions(eval_batch_size=eval_batch_size, resume=resume, overwrite=overwrite)
    out = Path(out_dir)
    refuse_to_replace_model(out, overwrite, resume)
    train_examples = task.examples(train, "train")
    dev_examples = task.examples(dev, "dev") if dev is not None else None
    train_config = train_config or TrainConfig()
    set_seed(train_config.seed)  # before the model exists: the fresh head's initialisation is seeded too
    with tempfile.TemporaryDirectory(prefix=".bertkit-tmp-model-") as staging:
        model_dir = _start_from(model_name, tokenizer, Path(staging))
        config = task.config_for(load_config(model_dir), labels or task.label_list(train_examples))
        if (prior := task.label_prior(train_examples)) is not None:  # for evaluate's majority-class baseline
            config.extra["bertkit"][PRIOR_KEY] = prior
        if dev_examples is not None:
            task.check_labels(dev_examples, config, dev if isinstance(dev, (str, os.PathLike)) else "dev")
        model, tokenizer, _ = load_pretrained(model_dir, task.architecture, config)
    train_config = with_learning_rate(train_config, config, task.name)
    if prepare_model is not None:
        model = prepare_model(model)
    # A model object was staged in a directory that is gone by now: no adapter can refer to it as its base.
    base_dir = model_dir if model_name is None or isinstance(model_name, (str, os.PathLike)) else None
    check_base(model, base_dir)
    features = task.features(train_examples, tokenizer, config)
    warn_if_unknown((feature["input_ids"] for feature in features), tokenizer)

    def save(trained, directory: Path) -> None:
        save_trained(trained, directory, base_dir)
        tokenizer.save_pretrained(directory)

    def evaluate(trained) -> dict:
        return task.score(dev_examples, task.predict(trained, tokenizer, dev_examples, eval_batch_size), config)

    trainer = Trainer(
        model, features, train_config, out, tokenizer.pad_token_id, save,
        evaluate=evaluate if dev_examples is not None else None, main_metric=task.main_metric,
        loss_fn=loss_fn or task.training_loss,
    )
    trainer.callbacks += list(callbacks)
    history = trainer.fit(resume=resume)
    if history.best_epoch is not None:
        task.save_plots(out, history.epochs[history.best_epoch - 1]["dev"])
    return history
