"""`bertkit demo`: the BERT paradigm end to end, offline.

`bertkit demo` (the main job) pre-trains a small Chinese BERT from scratch and measures whether fine-tuning it
beats the same network from random weights, each fine-tuned at the rate that suits it best on a dev set.
`bertkit demo --encoder` is the one-minute tour below:

Loads a real checkpoint, tokenizes English and Chinese, runs the encoder, ranks sentence similarity
with mean-pooled embeddings (how all-MiniLM-L6-v2 was trained to be used), and saves and reloads the
checkpoint to show that the round trip is exact.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


# --- The main job: the BERT paradigm in one command -------------------------------------------------


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


def _import_benchmarks() -> None:
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "benchmarks" / "__init__.py").is_file():
        raise BertkitError("the story demo needs the benchmarks/ folder of a bertkit source checkout")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))


def run_story(config: StoryConfig) -> dict:
    """Pre-train a small Chinese BERT from scratch, fine-tune it on 1,000 labelled reviews next to the same
    network from random initialisation, and compare: the case for pre-training, measured."""
    from bertkit.datasets import chinese_reviews, peoples_daily_sentences, split_sentences
    from bertkit.finetuning import finetune
    from bertkit.heads import BertForPreTraining
    from bertkit.inference import Predictor
    # Experiment code lives in benchmarks/ beside the package (the demo is to be redesigned around it); the
    # installed `bertkit` script does not put the checkout on sys.path, so the demo does.
    _import_benchmarks()
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
