"""Baselines beside every evaluation: the majority-class (prior) score in `evaluate`, and `bertkit baseline`
(TF-IDF + logistic regression)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import bertkit
from tests.conftest import run_cli
from tests.test_finetune_classify import NEGATIVE, POSITIVE, write_csv
from tests.test_finetune_ner import CHINESE, ENGLISH, write_conll

# Chinese reviews written without spaces: word n-grams would see each whole text as one unseen term.
ZH_POSITIVE = ["这部电影很好看", "我很喜欢这本书", "故事很好看", "演员很好", "我喜欢这个故事", "这本书很好"]
ZH_NEGATIVE = ["这部电影很难看", "我讨厌这本书", "故事很难看", "演员很差", "我讨厌这个故事", "这本书很差"]


def _rows(positive: list[str], negative: list[str]) -> list[tuple[str, str]]:
    return [(t, "pos") for t in positive] + [(t, "neg") for t in negative]


def test_evaluate_reports_the_training_prior_beside_the_model(tiny_model_dir, tmp_path, capsys):
    # Training is two-thirds "pos"; the test file is three-quarters "neg", so the prior scores 1/4 on it.
    train = write_csv(tmp_path / "train.csv", [(t, "pos") for t in POSITIVE * 2] + [(t, "neg") for t in NEGATIVE])
    test = write_csv(tmp_path / "test.csv", [(t, "pos") for t in POSITIVE[:2]] + [(t, "neg") for t in NEGATIVE])
    out = tmp_path / "clf"
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train),
                            "--out", str(out), "--epochs", "1", "--batch-size", "8"], capsys)
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())["bertkit"]["label_prior"]
    assert saved == {"examples": 18, "counts": {"neg": 6, "pos": 12}}

    code, stdout, err = run_cli(["evaluate", "--model", str(out), "--data", str(test)], capsys)
    assert code == 0, err
    prior = json.loads(stdout)["prior"]
    assert prior["from"] == "training labels"
    assert prior["accuracy"] == pytest.approx(2 / 8)
    assert prior["confusion_matrix"] == [[0, 6], [0, 2]]  # every row predicted "pos"
    assert prior["macro_f1"] == pytest.approx((0 + 2 * 2 / (2 + 8)) / 2)

    # A model trained elsewhere has no saved prior: the evaluated labels' majority stands in, and says so.
    config = json.loads((out / "config.json").read_text())
    del config["bertkit"]["label_prior"]
    (out / "config.json").write_text(json.dumps(config))
    prior = bertkit.load(out).evaluate(str(test))["prior"]
    assert prior["from"].startswith("evaluated labels") and prior["accuracy"] == pytest.approx(6 / 8)


def test_evaluate_reports_the_all_o_score_for_ner(tiny_model_dir, tmp_path, capsys):
    train, dev = tmp_path / "train.conll", tmp_path / "dev.conll"
    write_conll(train, (ENGLISH + CHINESE) * 2)
    write_conll(dev, ENGLISH + CHINESE)
    out = tmp_path / "ner"
    code, _, err = run_cli(["finetune", "ner", "--model", str(tiny_model_dir), "--train", str(train),
                            "--out", str(out), "--epochs", "1", "--batch-size", "4"], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["evaluate", "--model", str(out), "--data", str(dev)], capsys)
    assert code == 0, err
    prior = json.loads(stdout)["prior"]
    assert prior["f1"] == prior["recall"] == 0.0 and "from" not in prior


def test_multi_label_prior_predicts_the_labels_most_examples_carry():
    from bertkit.baselines import prior_metrics
    from bertkit.tasks.classify import ClassifyTask

    task = ClassifyTask({"multi_label": True})
    rows = [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["x"]}, {"text": "c", "label": ["y", "z"]}]
    examples = task.examples(rows, "train")
    assert task.label_prior(examples) == {"examples": 3, "counts": {"x": 2, "y": 2, "z": 1}}
    assert task.prior_predictions(examples, task.label_prior(examples))[0]["label"] == ["x", "y"]
    config = SimpleNamespace(id2label={0: "x", 1: "y", 2: "z"}, extra={})  # no saved prior: the rows' own
    assert prior_metrics(task, examples, config)["accuracy"] == pytest.approx(1 / 3)  # only row 1 is exactly {x, y}


def test_baseline_learns_english_and_matches_evaluate_shape(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", _rows(POSITIVE, NEGATIVE) * 3)
    test = write_csv(tmp_path / "test.csv", [("great plot", "pos"), ("i love the film", "pos"),
                                             ("awful plot", "neg"), ("i hate the movie", "neg")])
    out = tmp_path / "base"
    code, stdout, err = run_cli(["baseline", "--train", str(train), "--test", str(test), "--out", str(out)], capsys)
    assert code == 0, err
    metrics = json.loads(stdout)
    assert set(metrics) == {"accuracy", "macro_f1", "per_class", "confusion_matrix", "prior"}
    assert metrics["accuracy"] == 1.0
    assert metrics["prior"]["accuracy"] == 0.5 and metrics["prior"]["from"] == "training labels"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["baseline"]["analyzer"] == "word" and saved["accuracy"] == 1.0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["label"] for p in predictions] == ["pos", "pos", "neg", "neg"]
    assert all(abs(sum(p["scores"].values()) - 1) < 1e-6 for p in predictions)

    code, _, err = run_cli(["baseline", "--train", str(train), "--test", str(test), "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_baseline_uses_character_ngrams_for_chinese(tmp_path):
    train = [{"text": t, "label": label} for t, label in _rows(ZH_POSITIVE, ZH_NEGATIVE)]
    test = [{"text": "这个电影很好看", "label": "pos"}, {"text": "这个演员很差", "label": "neg"},
            {"text": "我很喜欢这部电影", "label": "pos"}, {"text": "我讨厌这部电影", "label": "neg"}]
    chars = bertkit.baseline(train, test, out=tmp_path / "zh")
    assert json.loads((tmp_path / "zh" / "metrics.json").read_text())["baseline"]["analyzer"] == "char"
    assert chars["accuracy"] == 1.0
    words = bertkit.baseline(train, test, analyzer="word")  # whole texts as terms: nothing carries over
    assert words["accuracy"] < chars["accuracy"]


def test_baseline_is_deterministic_for_a_seed(tmp_path):
    rows = [{"text": t, "label": label} for t, label in _rows(POSITIVE + ZH_POSITIVE, NEGATIVE + ZH_NEGATIVE)]
    first = bertkit.baseline(rows, rows[::2], out=tmp_path / "a", seed=7, c=0.5)
    second = bertkit.baseline(rows, rows[::2], out=tmp_path / "b", seed=7, c=0.5)
    assert first == second
    assert (tmp_path / "a" / "predictions.jsonl").read_bytes() == (tmp_path / "b" / "predictions.jsonl").read_bytes()


def test_baseline_multi_label_and_bad_input(tmp_path):
    rows = [{"text": "good fun", "label": ["pos", "fun"]}, {"text": "bad boring", "label": ["neg"]},
            {"text": "great fun", "label": ["pos", "fun"]}, {"text": "awful boring", "label": ["neg"]}] * 3
    metrics = bertkit.baseline(rows, rows[:4], multi_label=True, c=10.0)
    assert metrics["accuracy"] == 1.0 and "micro_f1" in metrics
    with pytest.raises(bertkit.BertkitError, match="label 'other' is not one of the training labels"):
        bertkit.baseline(rows[:4], [{"text": "x", "label": "other"}])
    with pytest.raises(bertkit.BertkitError, match="baseline has no option 'epochs'"):
        bertkit.baseline(rows, rows, epochs=3)
    with pytest.raises(bertkit.BertkitError, match=r"c \(--c\) must be above 0"):
        bertkit.baseline(rows, rows, c=0.0)
