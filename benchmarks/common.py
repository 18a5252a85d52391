"""Shared pieces of the benchmark scripts: real text, machine facts, timing.

Every benchmark runs bertkit and the transformers baseline in the same process, on the same inputs,
and prints one JSON line with both figures and their ratio.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bertkit.datasets import chinese_reviews, package_file, peoples_daily_ner  # noqa: F401 (re-exported)


def english_texts() -> list[str]:
    """Real English of very different lengths: 200 one-line movie reviews and 300 news articles."""
    test_data = "gensim/test/test_data/"
    # The polarity file is Windows-1252 (em dashes, accented letters), not UTF-8.
    polarity = package_file("gensim", test_data + "pang_lee_polarity.cor").read_text(encoding="cp1252").splitlines()
    news = package_file("gensim", test_data + "lee_background.cor").read_text(encoding="utf-8").splitlines()
    reviews = [line.split(" ", 1)[1] for line in polarity if line.strip()]
    return reviews + [line for line in news if line.strip()]


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
