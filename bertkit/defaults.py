"""Defaults that fit the model in hand: the peak learning rate from the model's width and depth and the task.

One rate for every model is wrong by a factor of several: BERT-base fine-tunes best at 2e-5..5e-5 (the
BERT paper's grid), the small models (all-MiniLM-L6-v2 at 384 wide, Google's BERT miniatures at 128..512)
want 1e-4..3e-4 (the miniatures' grid is 3e-5, 5e-5, 1e-4, 3e-4), and token tagging, which trains one
decision per word from a fresh head, wants about twice the rate sentence classification does. The rule
is a table on the hidden size (and a cut for very deep models); docs/cli.md gives it, docs/benchmarks.md
("Defaults, search and CRF") the measurements behind it. A rate the user passes (--lr) always wins.
"""

from __future__ import annotations

from typing import Any

# (smallest hidden size, rate for sentence classification and QA, rate for token tagging), widest first.
LR_TABLE: tuple[tuple[int, float, float], ...] = (
    (1024, 2e-5, 3e-5),  # BERT-large
    (768, 3e-5, 5e-5),   # BERT-base
    (512, 5e-5, 1e-4),   # BERT-small, BERT-medium
    (384, 1e-4, 2e-4),   # all-MiniLM-L6-v2
    (256, 1e-4, 2e-4),   # BERT-mini
    (0, 3e-4, 5e-4),     # BERT-tiny (128)
)
DEEP_LAYERS = 24  # this deep or deeper: two thirds of the rate (BERT-large recipes run below base's)
LR_SOURCE_DEFAULT = "default rule"
LR_SOURCE_USER = "user"


def default_lr(hidden_size: int, num_layers: int, task: str) -> float:
    """The default peak learning rate for a model `hidden_size` wide and `num_layers` deep fine-tuned on `task`
    ("classify", "qa": sentence-level rates; "ner": token tagging's)."""
    for low, sentence, token in LR_TABLE:
        if hidden_size >= low:
            rate = token if task == "ner" else sentence
            break
    if num_layers >= DEEP_LAYERS:
        rate = float(f"{rate * 2 / 3:.1g}")
    return rate


def default_lr_for(config: Any, task: str) -> float:
    """`default_lr` read from a model config (anything with hidden_size and num_hidden_layers)."""
    return default_lr(int(config.hidden_size), int(config.num_hidden_layers), task)


def lr_search_range(rate: float) -> list[float]:
    """`tune`'s default learning-rate range around the default rule's `rate`: a tenth of it to three times it,
    the span of the published grids (1e-5..3e-4 for the 1e-4 of all-MiniLM-L6-v2's classification)."""
    return [float(f"{rate / 10:.2g}"), float(f"{rate * 3:.2g}")]
