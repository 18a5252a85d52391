"""K-fold cross-validation for small data sets (`finetune TASK --folds K`).

Each fold trains on the other K-1 folds for the configured epochs and is scored on its own fold (no
epoch is chosen on it, so the scores are not flattered); the report gives each metric's mean and
standard deviation over the folds. The model kept in --out is then trained on all the data as usual.
Single-label classification folds are stratified: each keeps the label shares of the whole.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertkit.errors import BertkitError
from bertkit.tasks.base import ReadExamples

if TYPE_CHECKING:
    from bertkit.tasks import Task
    from bertkit.trainer import TrainConfig

REPORT_FILE = "cross_validation.json"


def fold_indices(count: int, folds: int, seed: int, labels: list[str] | None = None) -> list[list[int]]:
    """`folds` disjoint lists of indices of 0..count-1 that together hold every index once, shuffled by
    `seed`. With `labels`, every label is dealt round the folds in turn, so each fold keeps its share."""
    if folds < 2:
        raise BertkitError(f"--folds must be at least 2, got {folds}")
    if folds > count:
        raise BertkitError(f"--folds {folds} is more than the {count} training examples")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for index in range(count):
        groups[labels[index] if labels is not None else ""].append(index)
    if labels is not None:
        smallest = min(groups, key=lambda label: (len(groups[label]), label))
        if len(groups[smallest]) < folds:
            raise BertkitError(f"--folds {folds} is more than the {len(groups[smallest])} examples of the smallest "
                               f"class ({smallest!r}); every fold needs each class")
    result: list[list[int]] = [[] for _ in range(folds)]
    position = 0  # continues across labels, so the folds' sizes differ by at most one
    for label in sorted(groups):
        members = groups[label]
        rng.shuffle(members)
        for index in members:
            result[position % folds].append(index)
            position += 1
    return [sorted(fold) for fold in result]


def summarize(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over the folds of every top-level number the task's score reports."""
    names = [k for k, v in scores[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {
        "folds": len(scores),
        "mean": {k: statistics.fmean(s[k] for s in scores) for k in names},
        "std": {k: statistics.stdev(s[k] for s in scores) for k in names},
        "per_fold": [{k: s[k] for k in names} for s in scores],
    }


def cross_validate(task: Task, examples: list[Any], model: Any, config: TrainConfig, folds: int,
                   eval_batch_size: int, **finetune_keywords: Any) -> dict[str, Any]:
    """Train and score one model per fold (each in a temporary directory, removed after); the summary."""
    from bertkit.finetuning import finetune
    from bertkit.inference import Predictor

    labels = task.stratify_labels(examples)
    scores = []
    for number, held_out in enumerate(fold_indices(len(examples), folds, config.seed, labels), start=1):
        kept = set(held_out)
        train = ReadExamples(e for i, e in enumerate(examples) if i not in kept)
        with tempfile.TemporaryDirectory(prefix=".bertkit-tmp-fold-") as directory:
            finetune(task, train, Path(directory), model, None, config, eval_batch_size, **finetune_keywords)
            predictor = Predictor(directory, eval_batch_size, fp32=not config.bf16)
            score = predictor.task.score([examples[i] for i in held_out],
                                         predictor.predict([examples[i] for i in held_out]), predictor.config)
        scores.append(score)
        print(f"fold {number}/{folds}: {task.main_metric} {score[task.main_metric]:.4f}", file=sys.stderr)
    return summarize(scores)
