"""PNG plots people would rather look at than read: training curves and confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# Figures made directly, not through pyplot: nothing here touches the user's backend or open figures
# (a notebook keeps its inline plots), and no display is ever needed.
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from bertkit.trainer import History


def plot_training_curve(history: History, main_metric: str | None, path: Path) -> None:
    """Training loss per step and, when there is a dev set, the main dev metric per epoch."""
    fig = Figure(figsize=(7, 4))
    loss_ax = fig.subplots()
    steps = [s["step"] for s in history.steps]
    loss_ax.plot(steps, [s["loss"] for s in history.steps], color="tab:blue", linewidth=0.8, label="train loss")
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("train loss", color="tab:blue")
    dev = [(e["epoch"], e["dev"][main_metric]) for e in history.epochs if "dev" in e and main_metric]
    if dev and steps:
        per_epoch = max(steps) / max(e["epoch"] for e in history.epochs)
        metric_ax = loss_ax.twinx()
        metric_ax.plot([e * per_epoch for e, _ in dev], [v for _, v in dev], "o-", color="tab:orange", label=f"dev {main_metric}")
        metric_ax.set_ylabel(f"dev {main_metric}", color="tab:orange")
    loss_ax.set_title("training curve")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path) -> None:
    """Rows are true labels, columns predicted, each cell annotated with its count."""
    size = max(4.0, 0.6 * len(labels) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    ax.set_title("confusion matrix (dev)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
