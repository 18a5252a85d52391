"""Options defined once: the flags and keywords come from the dataclass fields, and every range is checked
where the value is parsed, with the allowed range in a one-line message, before any work is done."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from bertkit.errors import BertkitError
from bertkit.options import Options, add_options, build, option, split_keywords
from tests.conftest import run_cli


@dataclass
class _Example(Options):
    steps: int = option(10, "optimizer steps", min=1)
    rate: float = option(0.5, "a rate", above=0, max=1)
    mode: str = option("fast", "how", choices=("fast", "slow"))
    nsp: bool = option(True, "no next-sentence task")
    recorded: int = option(0)  # no help: a setting, not a flag


def test_flags_and_keywords_come_from_the_fields():
    parser = argparse.ArgumentParser()
    add_options(parser, _Example, defaults={"steps": 7})
    args = parser.parse_args([])
    assert build(_Example, args) == _Example(steps=7)
    args = parser.parse_args(["--steps", "3", "--rate", "0.25", "--mode", "slow", "--no-nsp"])
    assert build(_Example, args) == _Example(steps=3, rate=0.25, mode="slow", nsp=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--recorded", "1"])


@pytest.mark.parametrize(("values", "message"), [
    ({"steps": 0}, "steps (--steps) must be at least 1, got 0"),
    ({"rate": 0.0}, "rate (--rate) must be above 0 and at most 1, got 0"),
    ({"rate": float("nan")}, "rate (--rate) must be above 0 and at most 1, got nan"),
    ({"rate": "high"}, "rate (--rate) must be a number, got 'high'"),
    ({"mode": "medium"}, "mode (--mode) must be one of fast, slow, got 'medium'"),
])
def test_out_of_range_is_one_line(values, message):
    with pytest.raises(BertkitError) as error:
        _Example(**values)
    assert str(error.value) == message


def test_unknown_keyword_names_the_known_ones():
    with pytest.raises(BertkitError, match=r"^finetune has no option 'epoch' \(options: mode, nsp, rate, steps\)$"):
        split_keywords({"epoch": 3}, _Example, what="finetune")


@pytest.mark.parametrize(("command", "message"), [
    (["finetune", "classify", "--epochs", "0"], "epochs (--epochs) must be at least 1, got 0"),
    (["finetune", "classify", "--batch-size", "-3"], "batch_size (--batch-size) must be at least 1, got -3"),
    (["finetune", "classify", "--batch-size", "0"], "batch_size (--batch-size) must be at least 1, got 0"),
    (["finetune", "classify", "--lr", "0"], "lr (--lr) must be above 0, got 0"),
    (["finetune", "classify", "--lr=-1e-4"], "lr (--lr) must be above 0, got -0.0001"),
    (["finetune", "classify", "--grad-accum", "0"], "grad_accum (--grad-accum) must be at least 1, got 0"),
    (["finetune", "classify", "--eval-batch-size", "0"], "eval_batch_size (--eval-batch-size) must be at least 1, got 0"),
    (["finetune", "ner", "--max-seq-len", "2"], "max_seq_len (--max-seq-len) must be at least 8, got 2"),
    (["finetune", "qa", "--doc-stride", "0"], "doc_stride (--doc-stride) must be at least 1, got 0"),
])
def test_finetune_settings_that_make_no_sense(command, message, tiny_model_dir, tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood,pos\nbad,neg\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli(command + ["--train", str(train), "--out", str(out), "--model", str(tiny_model_dir)], capsys)
    assert (code, err) == (2, f"bertkit: error: {message}\n")
    assert not out.exists()


def test_pretrain_steps_zero(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a line\n", encoding="utf-8")
    code, _, err = run_cli(["pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--vocab-size", "100",
                            "--steps", "0"], capsys)
    assert (code, err) == (2, "bertkit: error: steps (--steps) must be at least 1, got 0\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["predict", "good movie"], ["evaluate", "--data", "x.csv"]])
def test_inference_batch_size(command, tiny_model_dir, capsys):
    code, out, err = run_cli(command + ["--model", str(tiny_model_dir), "--batch-size", "-1"], capsys)
    assert (code, out, err) == (2, "", "bertkit: error: batch_size (--batch-size) must be at least 1, got -1\n")


def test_the_api_checks_the_same_way(tiny_model_dir, tmp_path):
    import bertkit

    with pytest.raises(BertkitError, match=r"^epochs \(--epochs\) must be at least 1, got 0$"):
        bertkit.finetune("classify", train=[{"text": "a", "label": "x"}], out=tmp_path / "o", epochs=0)
    with pytest.raises(BertkitError, match=r"^batch_size \(--batch-size\) must be at least 1, got 0$"):
        bertkit.load(tiny_model_dir, batch_size=0)
    with pytest.raises(BertkitError, match=r"^finetune classify has no option 'epoch'"):
        bertkit.finetune("classify", train=[{"text": "a", "label": "x"}], out=tmp_path / "o", epoch=3)
    assert not (tmp_path / "o").exists()
