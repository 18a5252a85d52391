"""`bertkit finetune classify` end to end on tiny data: train, evaluate, predict, load in transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from bertkit.checkpoint import load_pretrained
from bertkit.cli import main
from tests.conftest import run_cli

POSITIVE = ["good movie", "great film", "i love the plot", "fun story", "the actor was great", "love love love"]
NEGATIVE = ["bad movie", "awful film", "i hate the plot", "boring story", "the actor was awful", "hate hate hate"]


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{text},{label}\n" for text, label in rows), encoding="utf-8")
    return path


@pytest.fixture()
def sentiment_files(tmp_path: Path) -> tuple[Path, Path]:
    rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    return write_csv(tmp_path / "train.csv", rows * 3), write_csv(tmp_path / "dev.csv", rows)



def test_finetune_evaluate_predict_and_transformers_parity(tiny_model_dir, sentiment_files, tmp_path, capsys):
    train, dev = sentiment_files
    out = tmp_path / "clf"
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev),
                            "--out", str(out), "--epochs", "6", "--batch-size", "8", "--lr", "3e-3", "--seed", "1"], capsys)
    assert code == 0, err
    for name in ("config.json", "model.safetensors", "vocab.txt", "metrics.json", "training_curve.png", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    assert not (out / "trainer_state").exists()
    history = json.loads((out / "metrics.json").read_text())
    assert len(history["epochs"]) == 6 and history["main_metric"] == "accuracy"
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["architectures"] == ["BertForSequenceClassification"]

    code, stdout, err = run_cli(["evaluate", "--model", str(out), "--data", str(dev)], capsys)
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["accuracy"] == pytest.approx(history["best"])
    assert metrics["accuracy"] >= 0.9, "a separable toy task should be learned"
    assert set(metrics["per_class"]) == {"neg", "pos"} and len(metrics["confusion_matrix"]) == 2

    code, stdout, err = run_cli(["predict", "--model", str(out), "great film", "awful plot", "i love the story"], capsys)
    assert code == 0, err
    predictions = [json.loads(line) for line in stdout.splitlines()]
    assert [p["label"] for p in predictions] == ["pos", "neg", "pos"]
    assert all(abs(sum(p["scores"].values()) - 1) < 1e-5 and p["score"] == max(p["scores"].values()) for p in predictions)

    # The output directory is a transformers checkpoint with the same logits.
    theirs = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    ours, tokenizer, _ = load_pretrained(out)
    batch = tokenizer(["great film", "the actor was awful and the plot was boring"])
    with torch.no_grad():
        mine = ours.eval()(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        reference = theirs(**batch).logits
    torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)


def test_predict_from_file_keeps_input_order(tiny_model_dir, sentiment_files, tmp_path, capsys):
    train, _ = sentiment_files
    out = tmp_path / "clf"
    assert main(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--out", str(out),
                 "--epochs", "1", "--batch-size", "8"]) == 0
    texts = ["a", "the movie was good and the story was fun and the actor was great", "bad", "what a plot"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    capsys.readouterr()
    code, stdout, err = run_cli(["predict", "--model", str(out), "--input", str(tmp_path / "in.txt")], capsys)
    assert code == 0, err
    from_file = [json.loads(line) for line in stdout.splitlines()]
    one_by_one = []
    for text in texts:
        _, line, _ = run_cli(["predict", "--model", str(out), text], capsys)
        one_by_one.append(json.loads(line))
    assert [p["label"] for p in from_file] == [p["label"] for p in one_by_one]
    for a, b in zip(from_file, one_by_one):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_multi_label_and_sentence_pairs(tiny_model_dir, tmp_path, capsys):
    rows = [
        {"a": "good movie", "b": "great film", "tags": ["pos", "film"]},
        {"a": "bad plot", "b": "boring story", "tags": ["neg"]},
        {"a": "john smith", "b": "lives in paris", "tags": ["person"]},
    ] * 4
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "ml"
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(train),
                            "--out", str(out), "--text-column", "a", "--text-pair-column", "b", "--label-column", "tags",
                            "--multi-label", "--epochs", "2", "--batch-size", "4"], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert sorted(config["id2label"].values()) == ["film", "neg", "person", "pos"]
    code, stdout, err = run_cli(["evaluate", "--model", str(out), "--data", str(train)], capsys)
    assert code == 0, err
    assert {"accuracy", "micro_f1", "macro_f1"} <= set(json.loads(stdout))
    code, stdout, _ = run_cli(["predict", "--model", str(out), "--input", str(train)], capsys)
    first = json.loads(stdout.splitlines()[0])
    assert isinstance(first["label"], list) and set(first["scores"]) == {"film", "neg", "person", "pos"}


BAD_INPUTS = {
    "missing column": ("sentence,label\ngood movie,pos\nbad movie,neg\n", "no column 'text'"),
    "empty text": ("text,label\ngood movie,pos\n ,neg\n", "train.csv:3: empty text"),
    "empty file": ("", "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_training_input_is_one_line_and_writes_nothing(case, tiny_model_dir, tmp_path, capsys):
    content, expected = BAD_INPUTS[case]
    train = tmp_path / "train.csv"
    train.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--out", str(out)], capsys)
    assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_encoding_error_and_unseen_dev_label(tiny_model_dir, sentiment_files, tmp_path, capsys):
    train, _ = sentiment_files
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,label\ngood,pos\ncaf\xe9 bad,neg\n".encode("latin-1"))
    out = tmp_path / "out"
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(bad), "--out", str(out)], capsys)
    assert code == 2 and "latin1.csv:3: not valid UTF-8" in err and err.count("\n") == 1
    dev = write_csv(tmp_path / "dev.csv", [("good movie", "pos"), ("so so", "neutral")])
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev),
                            "--out", str(out)], capsys)
    assert code == 2 and "dev.csv:3: label 'neutral' is not one of the training labels" in err
    assert not out.exists()


def test_resume_with_nothing_to_resume(tiny_model_dir, sentiment_files, tmp_path, capsys):
    train, _ = sentiment_files
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train),
                            "--out", str(tmp_path / "none"), "--resume"], capsys)
    assert code == 2 and "nothing to resume" in err
