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


def test_a_search_killed_with_sigkill_resumes_without_repeating_finished_trials(tiny_model_dir, files, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    train, dev = files
    out = tmp_path / "search"
    command = [sys.executable, "-m", "bertkit.cli", "tune", "classify", "--model", str(tiny_model_dir), "--train",
               str(train), "--dev", str(dev), "--out", str(out), "--trials", "3", "--lr-range", "1e-3", "5e-3",
               "--epochs-range", "2", "3", "--batch-sizes", "4", "--seed-range", "0", "3"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while not ((out / "leaderboard.csv").exists() and _leaderboard(out)) and process.poll() is None:
        assert time.monotonic() < deadline, "the first trial never finished"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # most likely in the second trial's training
    process.wait()
    storage = f"sqlite:///{out / 'study.db'}"
    before = {t.number: (t.params, t.value) for t in optuna.load_study(study_name="bertkit", storage=storage).trials
              if t.state.is_finished() and t.state.name != "FAIL"}
    assert before, "a finished trial should be in the study"

    result = bertkit.tune("classify", str(train), str(dev), out, model=str(tiny_model_dir), trials=3,
                          lr_range=[1e-3, 5e-3], epochs_range=[2, 3], batch_sizes=[4], seed_range=[0, 3])
    finished = [t for t in result.study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    for t in finished:  # the trials finished before the kill are the same trials, not run again
        if t.number in before:
            assert (t.params, t.value) == before[t.number]
    assert all(t.state.name == "FAIL" for t in result.study.trials if t not in finished)
    assert not (out / "trials").exists() and (out / "best" / "model.safetensors").is_file()
    assert not list(out.glob(".bertkit-tmp-*"))


def test_settling_after_a_kill_mid_swap_keeps_the_studys_best(tmp_path):
    from bertkit.fileio import TEMP_PREFIX
    from bertkit.tuning import _settle

    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.75):
        study.add_trial(optuna.trial.create_trial(value=value))
    out = tmp_path / "search"
    for name, number in ((f"{TEMP_PREFIX}old-best", 0), ("trials/1", 1), ("trials/2", 2)):
        (out / name).mkdir(parents=True)
        (out / name / "model.safetensors").write_text(str(number))
    _settle(study, out)  # killed after DIR/best moved aside, before trial 1 took its place; trial 2 half-trained
    assert (out / "best" / "model.safetensors").read_text() == "1"
    assert sorted(p.name for p in out.iterdir()) == ["best"]

    (out / "best").rename(out / f"{TEMP_PREFIX}old-best")  # cut short with nothing to promote: the old best returns
    _settle(study, out)
    assert (out / "best" / "model.safetensors").read_text() == "1" and sorted(p.name for p in out.iterdir()) == ["best"]


def test_without_lr_range_the_search_spans_the_default_rate_for_the_model(tiny_model_dir, files, tmp_path, capsys):
    from bertkit.checkpoint import load_config
    from bertkit.defaults import default_lr_for, lr_search_range

    assert lr_search_range(1e-4) == [1e-5, 3e-4] and lr_search_range(2e-4) == [2e-5, 6e-4]
    train, dev = files
    rate = default_lr_for(load_config(tiny_model_dir), "classify")
    low, high = lr_search_range(rate)
    result = bertkit.tune("classify", str(train), str(dev), tmp_path / "search", model=str(tiny_model_dir), trials=3,
                          epochs_range=[1, 1], batch_sizes=[8], seed_range=[0, 3])
    assert f"searching learning rates {low:g}..{high:g}, around the default {rate:g}" in capsys.readouterr().err
    rates = [t.params["lr"] for t in result.study.trials]
    assert len(rates) == 3 and all(low <= r <= high for r in rates)
    assert {t.distributions["lr"].low for t in result.study.trials} == {low}
