"""Shared pieces of the benchmark scripts: real text, machine facts, timing.

Every benchmark runs bertkit and the transformers baseline in the same process, on the same inputs,
and prints one JSON line with both figures and their ratio.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bertkit.data.pretrain import Instance, Shards, create_instances
from bertkit.datasets import chinese_reviews, package_file, peoples_daily_ner, peoples_daily_sentences, polarity_reviews  # noqa: F401 (re-exported)
from bertkit.tokenizer import BertTokenizer, train_tokenizer


def english_texts() -> list[str]:
    """Real English of very different lengths: 200 one-line movie reviews and 300 news articles."""
    test_data = "gensim/test/test_data/"
    # The polarity file is Windows-1252 (em dashes, accented letters), not UTF-8.
    polarity = package_file("gensim", test_data + "pang_lee_polarity.cor").read_text(encoding="cp1252").splitlines()
    news = package_file("gensim", test_data + "lee_background.cor").read_text(encoding="utf-8").splitlines()
    reviews = [line.split(" ", 1)[1] for line in polarity if line.strip()]
    return reviews + [line for line in news if line.strip()]


def short_ner_sentences(rows: list[tuple[list[str], list[str]]], low: int, high: int) -> list[tuple[list[str], list[str]]]:
    """The NER sentences of `low`..`high` words (characters, for People's Daily). Within one 128-token window
    bertkit's overlapping windows and the transformers recipe's truncation do the same work, and a small
    compute budget sees more sentences and optimizer steps than with whole paragraphs."""
    return [row for row in rows if low <= len(row[0]) <= high]


def interleave(texts: list[str], seed: int = 0) -> list[str]:
    """A fixed shuffle, so batches mix short and long texts as real request streams do."""
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    return [texts[i] for i in order]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
    }


def best_time(run: Callable[[], None], repeats: int) -> float:
    """Fastest of `repeats` runs, after one warm-up: the least disturbed by other work on the machine."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def emit(result: dict[str, object]) -> None:
    print(json.dumps(result, ensure_ascii=False))


def split(rows: list, seed: int, sizes: tuple[int, ...]) -> list[list]:
    """Disjoint random subsets of the given sizes, the same for every library and run."""
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    parts, start = [], 0
    for size in sizes:
        parts.append([rows[i] for i in order[start : start + size]])
        start += size
    return parts


def matmul_peak_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The machine's measured matmul rate (FLOP/s) for `dtype`: the ceiling that achieved FLOP/s is read against."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    return 2 * size**3 / best_time(lambda: a @ b, repeats)


def encoder_forward_flops(hidden: int, layers: int, lengths: list[int], vocab_size: int = 0, scored_tokens: int = 0,
                          last_layer_outputs: list[int] | None = None) -> float:
    """Matmul FLOPs of one encoder forward over sequences of these real (unpadded) lengths.

    Per layer and sequence of n tokens: QKV, output and feed-forward projections 24·n·h², attention scores and
    their weighted sum 4·n²·h. An MLM decoder adds 2·h·V (plus its 2·h² transform) per scored token. Padding is
    not counted: it is work a padded implementation wastes, not work the model needs. Neither, given
    `last_layer_outputs` (per sequence, how many positions' final vectors are read: 1 for a classifier's [CLS],
    the masked tokens + [CLS] in pre-training), is the last layer's work for the other positions: it needs keys
    and values of all n tokens (4·n·h²), and for each of the w read positions its query, attention, output
    projection and feed-forward block (20·h² + 4·n·h).
    """
    per_layer = [24 * n * hidden**2 + 4 * n * n * hidden for n in lengths]
    total = layers * sum(per_layer) + scored_tokens * (2 * hidden * vocab_size + 2 * hidden**2)
    if last_layer_outputs is not None:
        needed = [4 * n * hidden**2 + w * (20 * hidden**2 + 4 * n * hidden) for n, w in zip(lengths, last_layer_outputs)]
        total += sum(needed) - sum(per_layer)
    return total


def polarity_classifier(out: Path, epochs: int = 3, lr: float = 2e-4) -> tuple[Path, list[tuple[str, str]]]:
    """MiniLM fine-tuned on 150 reviews, saved in `out`; returns it and the 50 held-out reviews."""
    from bertkit.finetuning import finetune
    from bertkit.tasks import ClassifyTask
    from bertkit.trainer import TrainConfig

    reviews = polarity_reviews()
    train_file = out.parent / "polarity-train.jsonl"
    train_file.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in reviews[:150]), encoding="utf-8")
    finetune(ClassifyTask(), train_file, out, None, train_config=TrainConfig(epochs=epochs, batch_size=16, lr=lr, seed=1, bf16=False))
    return out, reviews[150:]


def peoples_daily_pretraining(work: Path, max_len: int) -> tuple[BertTokenizer, list[Instance]]:
    """People's Daily 1998 as NSP pre-training instances, with a char-level 8,000-token vocab trained on it."""
    corpus = work / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(d) for d in peoples_daily_sentences()) + "\n", encoding="utf-8")
    tokenizer = train_tokenizer([corpus], 8000, show_progress=False)
    tokenizer.save_pretrained(work / "tok")
    shards = Shards.open_or_build([corpus], tokenizer, work / "shards", chinese_words=False, show_progress=False)
    return tokenizer, create_instances(shards, max_len, random.Random(0))
