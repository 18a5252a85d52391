"""Classifying documents longer than the model reads: `--long truncate|head+tail|windows` on real Usenet posts.

    python -m benchmarks.long_docs [--train-size 100] [--test-size 100] [--epochs 2] [--max-chars 4000]

Data: gensim's mini_newsgroup (200 posts of 20 Newsgroups, alt.atheism vs sci.space, 100 each), labelled by each
post's `Newsgroups:` header, the headers dropped (`bertkit.datasets.newsgroup_posts`); bodies cut at --max-chars
characters to bound the cost of the few very long posts. Model: the packaged all-MiniLM-L6-v2 at --max-seq-len 128,
so most posts are longer than one input. Each policy is fine-tuned with the same split, settings and seed; the
baseline is truncation (today's default). One thread. Prints one JSON line: each policy's accuracy, training
seconds and prediction speed, and its ratio to truncation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import bertkit
from benchmarks.common import emit, machine, split
from bertkit.checkpoint import default_model_dir
from bertkit.datasets import newsgroup_posts
from bertkit.tokenizer import BertTokenizer

POLICIES = {
    "truncate": {"long": "truncate"},
    "head+tail": {"long": "head+tail"},
    "windows_mean": {"long": "windows", "window_pool": "mean"},
    "windows_attention": {"long": "windows", "window_pool": "attention"},
}


def run(policy: dict, train: list[dict], test: list[dict], args: argparse.Namespace, work: Path) -> dict:
    out = work / "-".join(policy.values())
    start = time.perf_counter()
    bertkit.finetune("classify", train=train, out=out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     seed=args.seed, max_seq_len=args.max_seq_len, stride=args.stride, bf16=False, **policy)
    train_s = time.perf_counter() - start
    model = bertkit.load(out, batch_size=32)
    start = time.perf_counter()
    predictions = model.predict([row["text"] for row in test])
    predict_s = time.perf_counter() - start
    correct = sum(p["label"] == row["label"] for p, row in zip(predictions, test))
    result = {"accuracy": correct / len(test), "train_s": round(train_s, 1),
              "predict_texts_per_s": round(len(test) / predict_s, 2)}
    if "windows" in predictions[0]:
        result["windows_per_text"] = round(sum(len(p["windows"]) for p in predictions) / len(test), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=100)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--max-chars", type=int, default=4000)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [{"text": text[: args.max_chars], "label": label} for text, label in newsgroup_posts()]
    train, test = split(rows, args.seed, (args.train_size, args.test_size))
    tokenizer = BertTokenizer.from_pretrained(default_model_dir())
    lengths = [len(e.input_ids) for e in tokenizer.encode_batch([r["text"] for r in test], truncation="do_not_truncate")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.policies:
            results[name] = run(POLICIES[name], train, test, args, Path(tmp))
    base = results.get("truncate")
    if base is not None:
        for name, result in results.items():
            result["accuracy_minus_truncate"] = round(result["accuracy"] - base["accuracy"], 4)
            result["train_s_ratio_to_truncate"] = round(result["train_s"] / base["train_s"], 2)
            result["predict_speed_ratio_to_truncate"] = round(result["predict_texts_per_s"] / base["predict_texts_per_s"], 3)
    emit({"benchmark": "long_docs", "data": "mini_newsgroup alt.atheism vs sci.space", "train": len(train),
          "test": len(test), "test_over_max_seq_len": sum(n > args.max_seq_len for n in lengths),
          "test_median_tokens": sorted(lengths)[len(lengths) // 2], "model": "all-MiniLM-L6-v2",
          **{k: getattr(args, k) for k in ("max_seq_len", "stride", "epochs", "batch_size", "lr", "seed", "max_chars")},
          "policies": results, "machine": machine()})


if __name__ == "__main__":
    main()
