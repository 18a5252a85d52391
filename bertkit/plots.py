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


def _smoothed(values: list[float], window: int) -> list[float]:
    """Running mean over the last `window` points: per-batch training figures are noisy."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_demo(results: dict, path: Path) -> None:
    """`bertkit demo` at a glance: pre-trained against random weights, the practices at K labels per class,
    and the from-scratch pre-training curve against the bigram table's accuracy."""
    fig = Figure(figsize=(16, 4.6))
    paradigm_ax, methods_ax, curve_ax = fig.subplots(1, 3, gridspec_kw={"width_ratios": [0.7, 1.3, 1.0]})

    p = results["paradigm"]
    names = {"pretrained": "all-MiniLM-L6-v2\n(pre-trained)", "random_init": "same network,\nrandom weights"}
    for i, (key, color) in enumerate((("pretrained", "tab:blue"), ("random_init", "tab:gray"))):
        paradigm_ax.bar(i, p[key]["accuracy"], color=color, alpha=0.75)
        paradigm_ax.scatter([i] * len(p[key]["per_seed"]), p[key]["per_seed"], color="black", s=14, zorder=3)
        paradigm_ax.text(i, max(p[key]["per_seed"]) + 0.03, f"{p[key]['accuracy']:.2f}", ha="center")
    paradigm_ax.axhline(0.5, color="black", linestyle=":", linewidth=1)
    paradigm_ax.set_xticks([0, 1], list(names.values()))
    paradigm_ax.set_ylim(0, 1)
    paradigm_ax.set_ylabel("test accuracy (dots: seeds)")
    paradigm_ax.set_title(f"pre-training pays ({p['train_size']} labels)")

    methods = results["methods"]
    rows = list(range(len(methods)))[::-1]
    methods_ax.barh(rows, [m["accuracy"] for m in methods], xerr=[m["std"] for m in methods], color="tab:green",
                    alpha=0.35)
    methods_ax.axvline(0.5, color="black", linestyle=":", linewidth=1)
    methods_ax.set_yticks(rows, [m["method"] for m in methods])
    for row, m in zip(rows, methods):
        share = 100 * m["trainable_params"] / m["total_params"] if m["total_params"] else 0.0
        methods_ax.text(0.02, row, f"{m['accuracy']:.2f}  |  {share:.3g}% of weights trained, {m['train_seconds']:.0f} s",
                        va="center", fontsize=9)
    methods_ax.set_xlim(0, 1)
    methods_ax.set_xlabel("test accuracy")
    methods_ax.set_title(f"the practices at K={methods[0]['k']} labels per class")

    t = results["pretraining"]
    steps = [s["step"] for s in t["curve"]]
    window = max(1, len(steps) // 20)
    curve_ax.plot(steps, _smoothed([s["loss"] for s in t["curve"]], window), color="tab:blue")
    curve_ax.set_xlabel("pre-training step")
    curve_ax.set_ylabel("train loss (MLM + NSP)", color="tab:blue")
    accuracy_ax = curve_ax.twinx()
    accuracy_ax.plot(steps, _smoothed([s.get("mlm_acc", 0.0) for s in t["curve"]], window), color="tab:orange",
                     label="masked-LM accuracy (train batches)")
    accuracy_ax.axhline(t["bigram_accuracy"], color="tab:red", linestyle="--", label="bigram table (held out)")
    accuracy_ax.scatter([steps[-1] if steps else 0], [t["mlm_accuracy"]], color="tab:orange", marker="*", s=90,
                        zorder=3, label="model (held out)")
    accuracy_ax.set_ylabel("masked-LM accuracy", color="tab:orange")
    # Headroom above the bigram line leaves the legend's corner free of curves.
    top = max([t["bigram_accuracy"], t["mlm_accuracy"]] + [s.get("mlm_acc", 0.0) for s in t["curve"]])
    accuracy_ax.set_ylim(0, 1.6 * top)
    accuracy_ax.legend(loc="upper right", fontsize=8)
    curve_ax.set_title("Chinese BERT-tiny from scratch, briefly")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_forgetting(rows: list[dict], new_score: float | None, new_stage: str, metric: str, path: Path) -> None:
    """A continual stage at a glance: each earlier task's dev score before and after it, and the new task's."""
    fig = Figure(figsize=(max(4.5, 1.4 * len(rows) + 3), 4))
    ax = fig.subplots()
    for i, row in enumerate(rows):
        for offset, key, color in ((-0.2, "before", "tab:gray"), (0.2, "after", "tab:blue")):
            if row[key] is not None:
                ax.bar(i + offset, row[key], width=0.4, color=color, label=key if i == 0 else None)
                ax.text(i + offset, row[key] + 0.01, f"{row[key]:.2f}", ha="center", fontsize=8)
    if new_score is not None:
        ax.bar(len(rows), new_score, width=0.4, color="tab:green", label="new task")
        ax.text(len(rows), new_score + 0.01, f"{new_score:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(rows) + 1), [row["task"] for row in rows] + [new_stage])
    ax.set_ylim(0, 1.25)  # room above the bars for the legend
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(f"forgetting: earlier tasks before and after {new_stage}")
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
