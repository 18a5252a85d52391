"""`finetune --folds K`: the folds partition the data (stratified for classification), the report, bad K."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import bertkit
from bertkit.folds import fold_indices, summarize
from tests.conftest import run_cli
from tests.test_finetune_classify import NEGATIVE, POSITIVE, write_csv


@pytest.mark.parametrize("count,folds", [(10, 2), (17, 5), (9, 9)])
def test_the_folds_partition_the_data(count, folds):
    result = fold_indices(count, folds, seed=3)
    assert len(result) == folds
    assert sorted(i for fold in result for i in fold) == list(range(count))  # every index once: disjoint and whole
    assert max(map(len, result)) - min(map(len, result)) <= 1
    assert fold_indices(count, folds, seed=3) == result
    if count > folds:
        assert fold_indices(count, folds, seed=4) != result


def test_classification_folds_keep_each_label_share():
    labels = ["a"] * 12 + ["b"] * 6 + ["c"] * 3
    result = fold_indices(len(labels), 3, seed=0, labels=labels)
    assert sorted(i for fold in result for i in fold) == list(range(len(labels)))
    for fold in result:
        assert Counter(labels[i] for i in fold) == {"a": 4, "b": 2, "c": 1}


def test_bad_fold_counts_are_one_line_errors():
    with pytest.raises(bertkit.BertkitError, match=r"--folds 4 is more than the 3 examples of the smallest class \('c'\)"):
        fold_indices(12, 4, seed=0, labels=["a"] * 4 + ["b"] * 5 + ["c"] * 3)
    with pytest.raises(bertkit.BertkitError, match="at least 2"):
        fold_indices(10, 1, seed=0)
    with pytest.raises(bertkit.BertkitError, match="more than the 3 training examples"):
        fold_indices(3, 4, seed=0)


def test_summarize_gives_mean_and_std_of_each_number():
    report = summarize([{"accuracy": 0.5, "per_class": {}}, {"accuracy": 1.0, "per_class": {}}])
    assert report["mean"] == {"accuracy": 0.75} and report["std"]["accuracy"] == pytest.approx(0.3535533906)
    assert report["folds"] == 2 and report["per_fold"] == [{"accuracy": 0.5}, {"accuracy": 1.0}]


def test_finetune_with_folds_end_to_end(tiny_model_dir, tmp_path, capsys):
    rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    train = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "cv"
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--out", str(out),
                            "--folds", "3", "--epochs", "2", "--batch-size", "4", "--lr", "3e-3"], capsys)
    assert code == 0, err
    assert "3-fold cross-validation: accuracy" in err and "±" in err
    report = json.loads((out / "cross_validation.json").read_text())
    assert report["folds"] == 3 and len(report["per_fold"]) == 3
    assert report["mean"]["accuracy"] == pytest.approx(sum(f["accuracy"] for f in report["per_fold"]) / 3)
    assert (out / "model.safetensors").is_file() and bertkit.load(out).cross_validation == report
    assert not list(tmp_path.glob(".bertkit-tmp-*"))

    with pytest.raises(bertkit.BertkitError, match="smallest class"):
        bertkit.finetune("classify", str(train), out=tmp_path / "too_many", model=str(tiny_model_dir), folds=7)
    assert not (tmp_path / "too_many").exists()
