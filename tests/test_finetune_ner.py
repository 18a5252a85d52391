"""`bertkit finetune ner` end to end on tiny data: train, evaluate, predict, load in transformers."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from bertkit.checkpoint import load_pretrained
from tests.conftest import run_cli

ENGLISH = [
    (["john", "smith", "lives", "in", "paris", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]),
    (["john", "works", "at", "google", "."], ["B-PER", "O", "O", "B-ORG", "O"]),
    (["smith", "lives", "in", "new", "york", "."], ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"]),
]
CHINESE = [
    (list("我在北京大学工作"), ["O", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O"]),
    (list("他在上海工作"), ["O", "O", "B-LOC", "I-LOC", "O", "O"]),
]


def write_conll(path, sentences) -> None:
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(*s)) for s in sentences) + "\n", encoding="utf-8")



def test_finetune_evaluate_predict_and_transformers_parity(tiny_model_dir, tmp_path, capsys):
    train = tmp_path / "train.conll"
    write_conll(train, (ENGLISH + CHINESE) * 6)
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"tokens": w, "tags": t}, ensure_ascii=False) + "\n" for w, t in ENGLISH + CHINESE),
                   encoding="utf-8")
    out = tmp_path / "ner"
    code, _, err = run_cli(["finetune", "ner", "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev),
                        "--out", str(out), "--epochs", "12", "--batch-size", "4", "--lr", "5e-3",
                        "--max-seq-len", "8", "--stride", "2"], capsys)  # 8 tokens: long sentences run in windows
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["0"] == "O" and config["architectures"] == ["BertForTokenClassification"]

    code, stdout, err = run_cli(["evaluate", "--model", str(out), "--data", str(dev)], capsys)
    assert code == 0, err
    metrics = json.loads(stdout)
    assert {"precision", "recall", "f1"} <= set(metrics)
    assert metrics["f1"] == pytest.approx(json.loads((out / "metrics.json").read_text())["best"])
    assert metrics["f1"] >= 0.8, "the toy task should be learned"

    code, stdout, err = run_cli(["predict", "--model", str(out), "john smith lives in paris .", "我在北京大学工作"], capsys)
    assert code == 0, err
    english, chinese = (json.loads(line) for line in stdout.splitlines())
    text = "john smith lives in paris ."
    for entity in english["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"] and 0 < entity["score"] <= 1
    assert {(e["type"], e["text"]) for e in english["entities"]} == {("PER", "john smith"), ("LOC", "paris")}
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in chinese["entities"]] == [("ORG", "北京大学", 2, 6)]

    theirs = transformers.BertForTokenClassification.from_pretrained(out).eval()
    ours, tokenizer, _ = load_pretrained(out)
    batch = tokenizer(["john lives in paris", "我在北京大学工作"])
    with torch.no_grad():
        mine = ours.eval()(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        reference = theirs(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(mine[real], reference[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("content", "expected"), [
    ('{"tokens": ["a", "b", "c"], "tags": ["O", "O"]}\n', "train.jsonl:1: 3 tokens but 2 tags"),
    ("", "train.jsonl: the file is empty"),
])
def test_bad_ner_input_is_one_line_and_writes_nothing(content, expected, tiny_model_dir, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli(["finetune", "ner", "--model", str(tiny_model_dir), "--train", str(train), "--out", str(out)], capsys)
    assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_unseen_dev_tag(tiny_model_dir, tmp_path, capsys):
    train, dev = tmp_path / "train.conll", tmp_path / "dev.conll"
    write_conll(train, ENGLISH)
    write_conll(dev, [(["paris"], ["B-MISC"])])
    code, _, err = run_cli(["finetune", "ner", "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev),
                        "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "dev.conll:1: tag 'B-MISC' is not one of the training tags" in err
