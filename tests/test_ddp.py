"""Two gloo processes under torchrun take the same optimizer step as one process accumulating both batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.ddp_worker import one_step
from tests.test_trainer import tiny_classifier

ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_equal_one_process_with_accumulation(tmp_path):
    weights = tmp_path / "ddp.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "ddp"), str(weights)],
        capture_output=True, text=True, env=env, timeout=240, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(weights)
    single = one_step(str(tmp_path / "single"), grad_accum=2)  # rank 0's batch, then rank 1's, averaged
    initial = tiny_classifier(dropout=0.0).state_dict()
    assert any(not torch.equal(initial[k], single[k]) for k in single), "the step must change the weights"
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], atol=1e-6, rtol=1e-5, msg=key)


def test_pretrain_under_torchrun(tmp_path):
    """rank 0 alone trains the vocab and builds shards; both ranks train; rank 0 alone saves."""
    corpus = tmp_path / "corpus.txt"
    documents = [" ".join(f"w{d}x{i}" for i in range(s, s + 6)) for d in range(8) for s in range(0, 30, 6)]
    corpus.write_text("\n\n".join("\n".join(documents[i : i + 5]) for i in range(0, len(documents), 5)) + "\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "bertkit.cli",
         "pretrain", "--corpus", str(corpus), "--out", str(out), "--vocab-size", "200", "--model-size", "tiny",
         "--steps", "3", "--batch-size", "4", "--max-seq-len", "32", "--no-bf16"],
        capture_output=True, text=True, env=env, timeout=240, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and (out / "vocab.txt").is_file()
    assert result.stderr.count("model in") == 1


def test_early_stopping_under_torchrun_stops_every_rank(tmp_path):
    """Rank 0 runs out of patience after epoch 2; rank 1 would go on. Both must stop there (no hang)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tests" / "ddp_worker.py"), "early-stop", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 ran 2 epochs" in result.stdout and "rank 1 ran 2 epochs" in result.stdout
