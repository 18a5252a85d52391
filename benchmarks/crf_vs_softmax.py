"""`finetune ner --crf` against the plain softmax head on People's Daily NER, same split, settings and seeds.

    python -m benchmarks.crf_vs_softmax [--seeds 1 2 3] [--train-size 400] [--test-size 200] [--epochs 2]

People's Daily sentences of 20..60 characters (--chars), each within one 128-token window.

Entity-level F1 (seqeval's rules) on the held-out sentences, mean ± std over the seeds, training seconds
and prediction speed (test sentences per second through `Predictor.evaluate`, which predicts and scores).
Both start from the packaged all-MiniLM-L6-v2, whose English vocab maps most Chinese characters to [UNK]:
the absolute F1 is low for both heads alike; the comparison is between the heads. Prints one JSON line
per seed and run, then a summary line with the CRF/softmax ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit, machine, peoples_daily_ner, short_ner_sentences, split
from benchmarks.finetune_real import write_ner
from bertkit.checkpoint import default_model_dir, load_config
from bertkit.defaults import default_lr_for
from bertkit.finetuning import finetune
from bertkit.inference import Predictor
from bertkit.tasks import TASKS
from bertkit.trainer import TrainConfig


def run(crf: bool, train: Path, test: Path, args: argparse.Namespace, seed: int, work: Path, max_steps: int = 0) -> dict:
    out = work / f"{'crf' if crf else 'softmax'}-{seed}-{max_steps}"
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, bf16=False,
                         max_steps=max_steps)
    history = finetune(TASKS["ner"]({"max_seq_len": args.max_len, "crf": crf}), train, out, None, train_config=config,
                       overwrite=True)
    train_s = sum(epoch["seconds"] for epoch in history.epochs)  # the loop alone, not the model's loading
    predictor = Predictor(out, batch_size=64, fp32=True)
    start = time.perf_counter()
    metrics = predictor.evaluate(test)
    predict_s = time.perf_counter() - start
    return {"head": "crf" if crf else "softmax", "seed": seed, "f1": round(metrics["f1"], 4),
            "train_s": round(train_s, 1), "predict_texts_per_s": round(args.test_size / predict_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--train-size", type=int, default=400)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--chars", type=int, nargs=2, default=[20, 60], metavar=("LOW", "HIGH"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="default: bertkit's default rule for the model")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--timing-rounds", type=int, default=0,
                        help="instead: time both heads in turn, N rounds of --timing-steps steps and a prediction "
                             "of the test set each (best round), for a fair speed figure on a busy machine")
    parser.add_argument("--timing-steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.lr = args.lr or default_lr_for(load_config(default_model_dir()), "ner")

    rows = short_ner_sentences(peoples_daily_ner(), *args.chars)
    train_rows, test_rows = split(rows, seed=0, sizes=(args.train_size, args.test_size))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, test = write_ner(train_rows, work / "train.jsonl"), write_ner(test_rows, work / "test.jsonl")
        if args.timing_rounds:
            rounds = [[run(crf, train, test, args, args.seeds[0], work, args.timing_steps) for crf in (False, True)]
                      for _ in range(args.timing_rounds)]
            speed = {head: {"step_ms": round(1000 * min(r[k]["train_s"] for r in rounds) / args.timing_steps, 1),
                            "predict_texts_per_s": max(r[k]["predict_texts_per_s"] for r in rounds)}
                     for k, head in enumerate(("softmax", "crf"))}
            emit({"benchmark": "crf_vs_softmax_speed", "rounds": args.timing_rounds, "steps": args.timing_steps,
                  "batch_size": args.batch_size, **speed,
                  "step_time_ratio": round(speed["crf"]["step_ms"] / speed["softmax"]["step_ms"], 2),
                  "predict_speed_ratio": round(speed["crf"]["predict_texts_per_s"] / speed["softmax"]["predict_texts_per_s"], 2),
                  **machine()})
            return
        for seed in args.seeds:
            for crf in (False, True):
                runs.append(run(crf, train, test, args, seed, work))
                emit({"benchmark": "crf_vs_softmax", **runs[-1]})

    def summary(head: str) -> dict:
        mine = [r for r in runs if r["head"] == head]
        f1 = [r["f1"] for r in mine]
        return {"f1_mean": round(statistics.mean(f1), 4), "f1_std": round(statistics.stdev(f1), 4) if len(f1) > 1 else 0.0,
                "train_s_mean": round(statistics.mean(r["train_s"] for r in mine), 1),
                "predict_texts_per_s_mean": round(statistics.mean(r["predict_texts_per_s"] for r in mine), 1)}

    crf, softmax = summary("crf"), summary("softmax")
    emit({"benchmark": "crf_vs_softmax", "seeds": args.seeds, "train_size": args.train_size, "test_size": args.test_size,
          "chars": args.chars,
          "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "max_len": args.max_len,
          "crf": crf, "softmax": softmax,
          "f1_paired_diffs": [round(c["f1"] - s["f1"], 4) for c, s in zip(runs[1::2], runs[0::2])],
          "train_s_ratio": round(crf["train_s_mean"] / softmax["train_s_mean"], 2),
          "predict_speed_ratio": round(crf["predict_texts_per_s_mean"] / softmax["predict_texts_per_s_mean"], 2),
          **machine()})


if __name__ == "__main__":
    main()
