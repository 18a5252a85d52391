"""Plots of experiments (the demo's comparison of pre-trained against random-init fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import bertkit.plots  # noqa: F401  (selects the file-only Agg backend)
import matplotlib.pyplot as plt


def plot_comparison(
    scores: dict[str, list[float]], title: str, path: Path, dev_by_rate: dict[str, dict[str, float]] | None = None
) -> None:
    """One bar per setting at its mean, with each seed's score as a dot on it; with `dev_by_rate`
    ({setting: {learning rate: dev score}}), a second panel shows how each setting's rate was chosen."""
    colors = ["tab:blue", "tab:gray", "tab:orange", "tab:green"]
    fig, axes = plt.subplots(1, 2 if dev_by_rate else 1, figsize=(10 if dev_by_rate else 5, 4), squeeze=False)
    ax = axes[0][0]
    names = list(scores)
    means = [sum(v) / len(v) for v in scores.values()]
    ax.bar(names, means, color=colors[: len(names)], alpha=0.7)
    for i, values in enumerate(scores.values()):
        ax.scatter([i] * len(values), values, color="black", zorder=3, s=12)
        ax.text(i, means[i], f"{means[i]:.3f}", ha="center", va="bottom")
    low = min(min(v) for v in scores.values())
    ax.set_ylim(max(0.0, low - 0.1), min(1.0, max(max(v) for v in scores.values()) + 0.05))
    ax.set_title(title)
    if dev_by_rate:
        rate_ax = axes[0][1]
        for color, (name, by_rate) in zip(colors, dev_by_rate.items()):
            rates = sorted(by_rate, key=float)
            rate_ax.plot([float(r) for r in rates], [by_rate[r] for r in rates], "o-", color=color, label=name)
        rate_ax.set_xscale("log")
        rate_ax.set_xlabel("fine-tuning learning rate")
        rate_ax.set_ylabel("dev score (best epoch)")
        rate_ax.set_title("rate chosen on dev, per setting")
        rate_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
