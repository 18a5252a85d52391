"""Fault injection, the slow part: `kill -9` at random moments of `finetune`, `pretrain` and `predict --output`.

Each killed run is resumed (or rerun when nothing was saved yet) and its result must equal an uninterrupted
run's, with no temporary file left. Run with `python -m pytest benchmarks/faults.py -s`: it prints the kill
points tried and how many ended in a lost or corrupt result. The fast fault tests are in tests/test_faults.py.
`BERTKIT_KILL_POINTS` sets the points per command (default 2).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import english_texts, tiny_model_dir  # noqa: F401 (fixtures)
from tests.test_faults import debris
from tests.test_finetune_classify import NEGATIVE, POSITIVE, write_csv

KILL_POINTS = int(os.environ.get("BERTKIT_KILL_POINTS", "2"))
RNG = random.Random(14)
tally = {"tried": 0, "lost_or_corrupt": 0}
def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bertkit.cli", *args]


def kill_at_random(args: list[str], before: float, after: float) -> bool:
    """Start the command, `kill -9` it at a random moment between `before` and `after` seconds; False if it ended first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + RNG.uniform(before, after)
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    if process.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    tally["tried"] += 1
    return True


def finish(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def check(same: bool, directory: Path) -> None:
    if not same or debris(directory):
        tally["lost_or_corrupt"] += 1
    assert same, "the resumed run differs from the uninterrupted one"
    assert not debris(directory), debris(directory)


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory) -> Path:
    rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    return write_csv(tmp_path_factory.mktemp("faults") / "train.csv", rows * 6)


def predictions_of(model: Path, texts: list[str]) -> list[dict]:
    from bertkit.inference import Predictor

    predictor = Predictor(model)
    return predictor.predict(predictor.from_texts(texts))


def test_kill_finetune_then_resume(tiny_model_dir, train_csv, tmp_path):
    base = ["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train_csv), "--epochs", "4",
            "--batch-size", "2", "--seed", "3", "--no-bf16", "--save-every", "3"]
    finish(cli(*base, "--out", str(tmp_path / "clean")))
    expected = predictions_of(tmp_path / "clean", POSITIVE + NEGATIVE)
    for point in range(KILL_POINTS):
        out = tmp_path / f"killed{point}"
        if not kill_at_random(cli(*base, "--out", str(out)), 2.0, 8.0):
            continue
        resumable = (out / "trainer_state" / "state.pt").is_file()
        finish(cli(*base, "--out", str(out), "--resume" if resumable else "--overwrite"))
        check(predictions_of(out, POSITIVE + NEGATIVE) == expected, out)


def test_kill_pretrain_then_resume(english_texts, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(english_texts[i:i + 4]) for i in range(0, 120, 4)) + "\n", encoding="utf-8")
    # One vocab for every run: WordPiece training breaks ties in no fixed order, so two trainings can differ.
    finish(cli("tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "200", "--out", str(tmp_path / "vocab")))
    base = ["pretrain", "--corpus", str(corpus), "--tokenizer", str(tmp_path / "vocab"), "--model-size", "tiny", "--max-seq-len", "32",
            "--steps", "40", "--batch-size", "8", "--save-every", "5", "--no-bf16"]
    finish(cli(*base, "--out", str(tmp_path / "clean")))
    expected = (tmp_path / "clean" / "model.safetensors").read_bytes()
    for point in range(KILL_POINTS):
        out = tmp_path / f"killed{point}"
        if not kill_at_random(cli(*base, "--out", str(out)), 3.0, 10.0):
            continue
        resumable = (out / "trainer_state" / "state.pt").is_file()
        if not resumable:
            shutil.rmtree(out, ignore_errors=True)
        finish(cli(*base, "--out", str(out), *(["--resume"] if resumable else [])))
        check((out / "model.safetensors").read_bytes() == expected, out)


def test_kill_predict_output_then_resume(tiny_model_dir, train_csv, tmp_path):
    model = tmp_path / "model"
    finish(cli("finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train_csv), "--epochs", "1",
               "--out", str(model)))
    big = write_csv(tmp_path / "big.csv", [(f"{a} {b}", "pos") for a in POSITIVE + NEGATIVE for b in POSITIVE + NEGATIVE] * 40)
    base = ["predict", "--model", str(model), "--input", str(big), "--batch-size", "4"]
    finish(cli(*base, "--output", str(tmp_path / "clean.jsonl")))
    expected = (tmp_path / "clean.jsonl").read_bytes()
    for point in range(KILL_POINTS):
        out = tmp_path / f"killed{point}.jsonl"
        if not kill_at_random(cli(*base, "--output", str(out)), 2.0, 6.0):
            continue
        finish(cli(*base, "--output", str(out), *(["--resume"] if out.exists() else [])))
        check(out.read_bytes() == expected, tmp_path)


def test_report_kill_points():
    print(f"\nkill points tried {tally['tried']}, lost or corrupt results {tally['lost_or_corrupt']}")
    assert tally["lost_or_corrupt"] == 0
