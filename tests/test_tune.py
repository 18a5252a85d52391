"""`bertkit tune`: a tiny search end to end, resuming an interrupted study, pruning, and bad search spaces."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import optuna
import pytest

import bertkit
from bertkit.tuning import Pruning
from tests.conftest import run_cli
from tests.test_finetune_classify import NEGATIVE, POSITIVE, write_csv

TINY_SEARCH = {"lr_range": [1e-3, 5e-3], "epochs_range": [1, 2], "batch_sizes": [8], "seed_range": [0, 3]}


@pytest.fixture()
def files(tmp_path):
    rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    return write_csv(tmp_path / "train.csv", rows * 2), write_csv(tmp_path / "dev.csv", rows)


def _leaderboard(out) -> list[dict[str, str]]:
    with (out / "leaderboard.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_two_trial_search_keeps_only_the_best_model(tiny_model_dir, files, tmp_path, capsys):
    train, dev = files
    out = tmp_path / "search"
    code, _, err = run_cli(["tune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev),
                            "--out", str(out), "--trials", "2", "--lr-range", "1e-3", "5e-3", "--epochs-range", "1", "2",
                            "--batch-sizes", "8", "--seed-range", "0", "3"], capsys)
    assert code == 0, err
    assert "best dev accuracy" in err
    rows = _leaderboard(out)
    assert len(rows) == 2 and {r["state"] for r in rows} <= {"complete", "pruned"}
    assert set(rows[0]) == {"trial", "state", "accuracy", "lr", "epochs", "batch_size", "warmup_ratio", "seed", "seconds"}
    assert not (out / "trials").exists() and (out / "study.db").is_file()
    assert (out / "trials.png").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir() if (p / "model.safetensors").exists()) == ["best"]
    best = max(float(r["accuracy"]) for r in rows if r["state"] == "complete")
    assert float(rows[0]["accuracy"]) == best
    assert bertkit.load(out / "best").evaluate(str(dev))["accuracy"] == pytest.approx(best)
    assert json.loads((out / "best" / "metrics.json").read_text())["best"] == pytest.approx(best)


def test_an_interrupted_search_resumes_without_repeating_finished_trials(tiny_model_dir, files, tmp_path):
    train, dev = files
    out = tmp_path / "search"
    first = bertkit.tune("classify", str(train), str(dev), out, model=str(tiny_model_dir), trials=1, **TINY_SEARCH)
    (done,) = first.study.trials
    # A search killed mid-trial leaves the trial RUNNING in the database and its half-trained model behind.
    killed = optuna.load_study(study_name="bertkit", storage=f"sqlite:///{out / 'study.db'}")
    killed.ask()
    (out / "trials" / "1").mkdir(parents=True)

    resumed = bertkit.tune("classify", str(train), str(dev), out, model=str(tiny_model_dir), trials=2, **TINY_SEARCH)
    trials = resumed.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", trials[2].state.name]
    assert trials[2].state.name in ("COMPLETE", "PRUNED") and len(trials) == 3
    assert trials[0].params == done.params and trials[0].value == done.value  # not run again
    assert trials[2].params != done.params
    assert not (out / "trials").exists()
    assert resumed.value == max(t.value for t in trials if t.state.name == "COMPLETE")

    again = bertkit.tune("classify", str(train), str(dev), out, model=str(tiny_model_dir), trials=2, **TINY_SEARCH)
    assert len(again.study.trials) == 3  # the budget is spent: nothing more runs


def test_pruning_stops_the_run_at_an_epoch_end():
    reported = []
    trial = SimpleNamespace(report=lambda value, step: reported.append((value, step)), should_prune=lambda: True)
    trainer = SimpleNamespace(main_metric="f1", should_stop=False)
    callback = Pruning(trial)
    callback.on_epoch_end(trainer, {"epoch": 2, "dev": {"f1": 0.25}})
    assert reported == [(0.25, 2)] and trainer.should_stop and callback.pruned


def test_bad_search_spaces_are_one_line_errors(tiny_model_dir, files, tmp_path, capsys):
    train, dev = files
    with pytest.raises(bertkit.BertkitError, match=r"lr_range \(--lr-range\) is an empty range: 0.001 > 0.0001"):
        bertkit.tune("classify", str(train), str(dev), tmp_path / "a", lr_range=[1e-3, 1e-4])
    with pytest.raises(bertkit.BertkitError, match="batch_sizes"):
        bertkit.tune("classify", str(train), str(dev), tmp_path / "a", batch_sizes=[])
    with pytest.raises(bertkit.BertkitError, match="tune searches lr"):
        bertkit.tune("classify", str(train), str(dev), tmp_path / "a", lr=1e-4)
    code, _, err = run_cli(["tune", "classify", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "b"),
                            "--epochs-range", "4", "2"], capsys)
    assert code == 2 and "empty range" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
