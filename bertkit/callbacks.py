"""What happens around the training loop: keeping the best model, stopping early, writing metrics.json
and the training curve. The loop calls the hooks; a callback asks it to stop through `trainer.should_stop`,
which the loop makes one decision for every process before acting on it."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from bertkit.fileio import atomic_write_text

if TYPE_CHECKING:
    from bertkit.trainer import Trainer


class Callback:
    """Hooks the loop calls; each does nothing unless overridden."""

    def on_step_end(self, trainer: Trainer, record: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class BestModel(Callback):
    """Saves the model whenever the dev score improves (rank 0 writes; every rank keeps the same best)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if "dev" not in record:
            return
        score = record["dev"][trainer.main_metric]
        history = trainer.history
        if history.best is None or score > history.best:
            history.best, history.best_epoch = score, record["epoch"]
            if trainer.is_main:
                trainer.save(trainer.model, trainer.out_dir)


class EarlyStopping(Callback):
    """Asks the loop to stop after `patience` epochs without a better dev score."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        best_epoch = trainer.history.best_epoch
        if self.patience and best_epoch is not None and record["epoch"] - best_epoch >= self.patience:
            trainer.should_stop = True
            if trainer.is_main:
                print(f"early stopping: no better {trainer.main_metric} for {self.patience} epochs", file=sys.stderr)


def finite_or_null(value: Any) -> Any:
    """JSON has no NaN or Infinity: a non-finite float becomes null (its reason is recorded beside it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_null(v) for v in value]
    return value


def to_json(data: Any) -> str:
    """Strict JSON text of `data`, with non-finite numbers as null (json's allow_nan=False backs this up)."""
    cleaned = finite_or_null(data)
    if cleaned != data and isinstance(cleaned, dict):
        cleaned["null_values"] = "non-finite numbers (NaN or Infinity) are written as null"
    return json.dumps(cleaned, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


class MetricsWriter(Callback):
    """Writes metrics.json and training_curve.png into the output directory when training ends (rank 0)."""

    def on_train_end(self, trainer: Trainer) -> None:
        if not trainer.is_main:
            return
        from bertkit.plots import plot_training_curve

        history = trainer.history
        parameters = list(trainer.model.parameters())
        summary = {
            "main_metric": trainer.main_metric,
            # What this run trained: all of it, or what freezing or an adapter left trainable.
            "trainable_params": sum(p.numel() for p in parameters if p.requires_grad),
            "total_params": sum(p.numel() for p in parameters),
            "best": history.best,
            "best_epoch": history.best_epoch,
            "bf16": trainer.use_bf16,
            "config": asdict(trainer.config),
            "epochs": history.epochs,
        }
        if history.changes:
            summary["resumed_with_changes"] = history.changes
        atomic_write_text(trainer.out_dir / "metrics.json", to_json(summary))
        plot_training_curve(history, trainer.main_metric, trainer.out_dir / "training_curve.png")
