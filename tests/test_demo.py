"""The main job, on its quick budget, end to end through the command line: results.json's schema and plots."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = subprocess.run([sys.executable, "-m", "bertkit.cli", "demo", "--quick", "--out", str(out)],
                            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout, json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_results_follow_the_schema(quick_demo):
    _, _, results = quick_demo
    paradigm = results["paradigm"]
    for start in ("pretrained", "random_init"):
        scores = paradigm[start]["per_seed"]
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
        assert paradigm[start]["accuracy"] == pytest.approx(sum(scores) / len(scores))
        # The rate is the grid point with the best dev accuracy.
        by_lr = paradigm[start]["dev_accuracy_by_lr"]
        assert by_lr[f"{paradigm[start]['lr']:g}"] == max(by_lr.values())
    assert paradigm["train_size"] == 110 and paradigm["test_size"] == 60 and isinstance(paradigm["task"], str)
    methods = {m["method"]: m for m in results["methods"]}
    assert len(methods) == 5
    for m in methods.values():
        assert set(m) >= {"method", "k", "accuracy", "trainable_params", "train_seconds"}
        assert 0 <= m["trainable_params"] <= m["total_params"]
    frozen, full = methods["frozen encoder + head"], methods["full fine-tuning"]
    assert full["trainable_params"] == full["total_params"]
    assert 0 < frozen["trainable_params"] < 0.01 * frozen["total_params"]
    assert 0 < methods["LoRA (r=8)"]["trainable_params"] < 0.05 * full["total_params"]
    pretraining = results["pretraining"]
    assert pretraining["steps"] == 30 and pretraining["tokens"] > 30 * 32
    assert 0.0 <= pretraining["mlm_accuracy"] <= 1.0 and 0.0 <= pretraining["bigram_accuracy"] <= 1.0
    assert results["seconds"] > 0 and len(results["predictions"]) == 4


def test_it_prints_the_table_and_writes_the_plot(quick_demo):
    out, printed, results = quick_demo
    assert (out / "demo.png").stat().st_size > 10_000
    assert "pre-training adds" in printed and "bertkit serve --model" in printed
    assert f"{results['paradigm']['pretrained']['accuracy']:.3f}" in printed
