"""Chinese users: GBK/GB18030 files with --encoding (or encoding=), and a warning when the vocabulary turns the
training text into [UNK]."""

from __future__ import annotations

import json
import logging

import pytest

import bertkit
from bertkit.errors import BertkitError
from tests.conftest import run_cli

ROWS = [("我在北京大学工作", "pos"), ("他很好", "pos"), ("不喜欢电影", "neg"), ("上海人民日报", "neg")] * 2
UNKNOWN_ROWS = [("这本书写得非常精彩", "pos"), ("物流太慢包装破损", "neg")] * 4  # characters outside the tiny vocab


def write_gbk(path, rows):
    path.write_bytes(("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows)).encode("gbk"))
    return path


def finetune_args(model, train, out, *extra):
    return ["finetune", "classify", "--model", str(model), "--train", str(train), "--out", str(out),
            "--epochs", "1", "--batch-size", "4", *extra]


def unknown_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "[UNK]" in r.getMessage()]


def test_gbk_files_through_finetune_evaluate_and_predict(tiny_model_dir, tmp_path, capsys, caplog):
    train = write_gbk(tmp_path / "train.csv", ROWS)
    out = tmp_path / "model"
    code, _, err = run_cli(finetune_args(tiny_model_dir, train, out), capsys)
    assert code == 2 and f"{train}:2: not valid UTF-8" in err and "--encoding gb18030" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()

    with caplog.at_level(logging.WARNING, logger="bertkit"):
        code, _, err = run_cli(finetune_args(tiny_model_dir, train, out, "--encoding", "gb18030"), capsys)
    assert code == 0, err
    assert not unknown_warnings(caplog)  # the tiny vocab holds these characters
    assert "encoding" not in json.loads((out / "config.json").read_text(encoding="utf-8"))["bertkit"]

    code, stdout, err = run_cli(["evaluate", "--model", str(out), "--data", str(train), "--encoding", "gb18030"], capsys)
    assert code == 0, err
    assert "accuracy" in json.loads(stdout)
    texts = tmp_path / "in.txt"
    texts.write_bytes("我在北京\n他很好\n".encode("gb18030"))
    code, stdout, err = run_cli(["predict", "--model", str(out), "--input", str(texts), "--encoding", "gb18030"], capsys)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in stdout.splitlines()] == [1, 2]
    code, _, err = run_cli(["predict", "--model", str(out), "--input", str(texts)], capsys)
    assert code == 2 and f"{texts}:1: not valid UTF-8" in err and "--encoding gb18030" in err


def test_gbk_files_through_the_python_api(tiny_model_dir, tmp_path):
    train = write_gbk(tmp_path / "train.csv", ROWS)
    with pytest.raises(BertkitError, match="--encoding gb18030"):
        bertkit.finetune("classify", train=train, out=tmp_path / "refused", model=str(tiny_model_dir), epochs=1)
    assert not (tmp_path / "refused").exists()
    clf = bertkit.finetune("classify", train=train, out=tmp_path / "model", model=str(tiny_model_dir), epochs=1,
                           batch_size=4, encoding="gb18030")
    assert "accuracy" in bertkit.load(clf.directory, encoding="gbk").evaluate(train)
    with pytest.raises(BertkitError, match="not valid UTF-8"):
        bertkit.load(clf.directory).evaluate(train)


@pytest.mark.parametrize(("encoding", "message"), [("klingon", "unknown --encoding 'klingon'"),
                                                   ("utf-16", "--encoding 'utf-16' is not ASCII-compatible")])
def test_a_bad_encoding_fails_before_anything_runs(tiny_model_dir, tmp_path, capsys, encoding, message):
    train = write_gbk(tmp_path / "train.csv", ROWS)
    code, _, err = run_cli(finetune_args(tiny_model_dir, train, tmp_path / "model", "--encoding", encoding), capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "model").exists()
    with pytest.raises(BertkitError, match=message):
        bertkit.load(tmp_path / "model", encoding=encoding)


def test_mostly_unknown_training_text_warns_once_naming_a_fitting_model(tiny_model_dir, tmp_path, capsys, caplog):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in UNKNOWN_ROWS), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        code, _, err = run_cli(finetune_args(tiny_model_dir, train, tmp_path / "model"), capsys)
    assert code == 0, err
    warnings = unknown_warnings(caplog)
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "Chinese BERT" in warnings[0] and "bertkit pretrain" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        bertkit.finetune("classify", train=[{"text": t, "label": l} for t, l in UNKNOWN_ROWS], out=tmp_path / "api",
                         model=str(tiny_model_dir), epochs=1, batch_size=4)
    assert unknown_warnings(caplog) == warnings
