"""Continual learning on real data: two English classification tasks in sequence, forgetting per strategy.

    OMP_NUM_THREADS=1 nice -n 19 python -m benchmarks.continual [--seeds 1 2] [--epochs-a 6] [--epochs 3]

Task A is Pang & Lee movie-review polarity (pos/neg), task B gensim's mini 20-newsgroups (alt.atheism against
sci.space, headers dropped): different label sets, so after task B the head has 4 labels. all-MiniLM-L6-v2 is
fine-tuned on A (stage 1), then from that model on B with each `--continual-strategy` (stage 2): none (plain
sequential fine-tuning, the baseline), rehearsal and ewc; `joint` trains A and B together from MiniLM, the usual
upper bound of what one model can hold. Each task is split 120 train / 40 dev / 40 test.

Scores are class-incremental: after stage 2 a review must be told apart from all 4 labels (calling a review
"space" is wrong). `a_test_within` also scores task A restricted to its own two labels (task-aware), which
separates forgetting in the head from forgetting in the encoder. One JSON line: every strategy's figures, mean
over seeds, and the ratio of task-A test accuracy lost against plain sequential fine-tuning.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit, machine, split
from bertkit.continual import ContinualOptions
from bertkit.datasets import mini_newsgroups, polarity_reviews

STRATEGIES = ("none", "rehearsal", "ewc")
SIZES = (120, 40, 40)


def rows(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"text": text, "label": label} for text, label in pairs]


def within(model, test: list[dict[str, str]], labels: tuple[str, ...]) -> float:
    """Accuracy when the prediction is the best of `labels` only (the task is known)."""
    predictions = model.predict([row["text"] for row in test])
    best = [max(labels, key=p["scores"].__getitem__) for p in predictions]
    return sum(b == row["label"] for b, row in zip(best, test)) / len(test)


def run_seed(seed: int, work: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    import bertkit

    a_train, a_dev, a_test = (rows(part) for part in split(polarity_reviews(), seed, SIZES))
    b_train, b_dev, b_test = (rows(part) for part in split(mini_newsgroups(), seed, SIZES))
    train = {"epochs": args.epochs, "batch_size": 16, "lr": args.lr, "seed": seed, "max_seq_len": 128, "bf16": False}
    first_train = {**train, "epochs": args.epochs_a}
    quiet = contextlib.redirect_stderr(io.StringIO())
    results: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    with quiet:
        first = bertkit.finetune("classify", a_train, dev=a_dev, out=work / "a", stage_name="A",
                                 rehearsal_size=args.rehearsal_size, **first_train)
    a_after_1 = {"a_dev_1": json.loads((work / "a" / "stages.json").read_text())["scores"]["A"],
                 "a_test_1": first.evaluate(a_test)["accuracy"], "seconds_1": time.perf_counter() - start}
    runs = [(s, None) for s in args.strategies if s != "ewc"] + [("ewc", lam) for lam in args.ewc_lambda
                                                                   if "ewc" in args.strategies]
    for strategy, lam in runs:
        name = strategy if lam is None or len(args.ewc_lambda) == 1 else f"ewc_{lam:g}"
        start = time.perf_counter()
        extra = {"ewc_lambda": lam} if strategy == "ewc" else {}
        with quiet:
            if strategy == "joint":
                model = bertkit.finetune("classify", a_train + b_train, dev=a_dev + b_dev, out=work / name, **first_train)
            else:
                model = bertkit.finetune("classify", b_train, dev=b_dev, out=work / name, model=work / "a",
                                         continual=True, continual_strategy=strategy, stage_name="B", **extra, **train)
        seconds = time.perf_counter() - start
        record = {"a_test_2": model.evaluate(a_test)["accuracy"], "a_test_within": within(model, a_test, ("neg", "pos")),
                  "b_dev_2": None, "b_test_2": model.evaluate(b_test)["accuracy"], "seconds_2": seconds}
        if strategy != "joint":
            metrics = json.loads((work / name / "metrics.json").read_text())
            (row,) = metrics["forgetting"]
            record.update(a_dev_2=row["after"], a_drop_dev=row["drop"], b_dev_2=metrics["continual"]["scores"]["B"],
                          **({"ewc_penalty_last": model.history.steps[-1].get("ewc")} if strategy == "ewc" else {}))
        else:
            record["a_dev_2"] = model.evaluate(a_dev)["accuracy"]
        results[name] = {**a_after_1, **record}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--epochs-a", type=int, default=6, help="epochs on task A (and of the joint run)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs on task B")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rehearsal-size", type=int, default=60)
    parser.add_argument("--ewc-lambda", type=float, nargs="+", default=[ContinualOptions().ewc_lambda])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES) + ["joint"],
                        choices=list(STRATEGIES) + ["joint"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    per_seed = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="bertkit-continual-") as work:
            per_seed.append(run_seed(seed, Path(work), args))
    mean = {s: {k: statistics.fmean(r[s][k] for r in per_seed) for k in per_seed[0][s] if per_seed[0][s][k] is not None}
            for s in per_seed[0]}
    lost = {s: mean[s]["a_test_1"] - mean[s]["a_test_2"] for s in mean}
    baseline = lost.get("none")
    emit({
        "benchmark": "continual", "model": "all-MiniLM-L6-v2", "task_a": "pang_lee_polarity", "task_b": "mini_newsgroups",
        "sizes": {"train": SIZES[0], "dev": SIZES[1], "test": SIZES[2]}, "seeds": args.seeds, "epochs_a": args.epochs_a, "epochs_b": args.epochs,
        "lr": args.lr, "rehearsal_size": args.rehearsal_size, "rehearsal_ratio": ContinualOptions().rehearsal_ratio, "ewc_lambda": args.ewc_lambda,
        "mean": mean, "per_seed": per_seed,
        "a_test_lost": lost,
        "lost_ratio_vs_sequential": {s: (lost[s] / baseline if baseline else None) for s in lost if s != "none"},
        "seconds": time.perf_counter() - start, "cpu_seconds": resource.getrusage(resource.RUSAGE_SELF).ru_utime,
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
