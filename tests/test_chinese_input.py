"""Chinese users: GBK/GB18030 files with --encoding, and a warning when the vocabulary turns the text into [UNK]."""

from __future__ import annotations

import json
import logging

from tests.conftest import run_cli

ROWS = [("我在北京大学工作", "pos"), ("他很好", "pos"), ("不喜欢电影", "neg"), ("上海人民日报", "neg")] * 2
UNKNOWN_ROWS = [("这本书写得非常精彩", "pos"), ("物流太慢包装破损", "neg")] * 4  # characters outside the tiny vocab


def write_gbk(path, rows):
    path.write_bytes(("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows)).encode("gbk"))
    return path


def finetune_args(model, train, out, *extra):
    return ["finetune", "classify", "--model", str(model), "--train", str(train), "--out", str(out),
            "--epochs", "1", "--batch-size", "4", *extra]


def test_gbk_files_through_finetune_evaluate_and_predict(tiny_model_dir, tmp_path, capsys, caplog):
    train = write_gbk(tmp_path / "train.csv", ROWS)
    out = tmp_path / "model"
    code, _, err = run_cli(finetune_args(tiny_model_dir, train, out), capsys)
    assert code == 2 and f"{train}:2: not valid UTF-8" in err and "--encoding gb18030" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()

    with caplog.at_level(logging.WARNING, logger="bertkit"):
        code, _, err = run_cli(finetune_args(tiny_model_dir, train, out, "--encoding", "gb18030"), capsys)
    assert code == 0, err
    assert not [r for r in caplog.records if "[UNK]" in r.getMessage()]  # the tiny vocab holds these characters

    code, stdout, err = run_cli(["evaluate", "--model", str(out), "--data", str(train), "--encoding", "gb18030"], capsys)
    assert code == 0, err
    assert "accuracy" in json.loads(stdout)
    texts = tmp_path / "in.txt"
    texts.write_bytes("我在北京\n他很好\n".encode("gb18030"))
    code, stdout, err = run_cli(["predict", "--model", str(out), "--input", str(texts), "--encoding", "gb18030"], capsys)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in stdout.splitlines()] == [1, 2]


def test_mostly_unknown_training_text_warns_once_naming_a_fitting_model(tiny_model_dir, tmp_path, capsys, caplog):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in UNKNOWN_ROWS), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        code, _, err = run_cli(finetune_args(tiny_model_dir, train, tmp_path / "model"), capsys)
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if "[UNK]" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "Chinese BERT" in warnings[0] and "bertkit pretrain" in warnings[0]
