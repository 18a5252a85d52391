"""`bertkit finetune TASK`: read and check every input first, then train, keeping the best model.

Nothing is written to the output directory until all inputs have been read and checked, so a bad
file never leaves a half-made model directory behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from bertkit.checkpoint import load_config, load_pretrained, resolve_model_dir, save_model
from bertkit.errors import BertkitError
from bertkit.tasks import Task
from bertkit.trainer import History, Trainer, TrainConfig, set_seed

MODEL_FILES = ("config.json", "model.safetensors")


def refuse_existing_model(out: Path, overwrite: bool, resume: bool | None = None) -> None:
    """A model already in `out` is replaced only on request; `resume` None: the command cannot resume."""
    if not resume and not overwrite and any((out / name).exists() for name in MODEL_FILES):
        hint = "" if resume is None else ", or --resume to continue"
        raise BertkitError(f"{out} already holds a model; pass --overwrite to replace it{hint}")


def finetune(
    task: Task,
    train_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_name: str | None = None,
    dev_path: str | os.PathLike | None = None,
    train_config: TrainConfig | None = None,
    eval_batch_size: int = 64,
    resume: bool = False,
    overwrite: bool = False,
) -> History:
    out = Path(out_dir)
    refuse_existing_model(out, overwrite, resume)
    train = task.read(train_path)
    dev = task.read(dev_path) if dev_path else None
    train_config = train_config or TrainConfig()
    set_seed(train_config.seed)  # before the model exists: the fresh head's initialisation is seeded too
    model_dir = resolve_model_dir(model_name)
    config = task.config_for(load_config(model_dir), task.label_list(train))
    if dev is not None:
        task.check_labels(dev, config, dev_path)
    model, tokenizer, _ = load_pretrained(model_dir, task.architecture, config)
    features = task.features(train, tokenizer, config)

    def save(trained, directory: Path) -> None:
        save_model(trained, directory)
        tokenizer.save_pretrained(directory)

    def evaluate(trained) -> dict:
        return task.score(dev, task.predict(trained, tokenizer, dev, eval_batch_size), config)

    trainer = Trainer(
        model, features, train_config, out, tokenizer.pad_token_id, save,
        evaluate=evaluate if dev is not None else None, main_metric=task.main_metric,
    )
    history = trainer.fit(resume=resume)
    if history.best_epoch is not None:
        task.save_plots(out, history.epochs[history.best_epoch - 1]["dev"])
    return history
