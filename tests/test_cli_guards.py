"""Commands that write a model never replace one without --overwrite, and argv that is not UTF-8 is one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import run_cli


@pytest.fixture()
def corpus(tmp_path, english_texts):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(english_texts[:60]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("command", "existing"), [
    (["tokenizer", "train", "--vocab-size", "200"], "vocab.txt"),
    (["pretrain", "--vocab-size", "200", "--steps", "1"], "model.safetensors"),
])
def test_an_existing_model_is_kept_without_overwrite(command, existing, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / existing).write_bytes(b"hours of work")
    args = command + ["--corpus", str(corpus), "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "already holds" in err and "--overwrite" in err, err
    assert (out / existing).read_bytes() == b"hours of work" and sorted(p.name for p in out.iterdir()) == [existing]


def test_tokenizer_train_overwrite_replaces(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "vocab.txt").write_text("old\n", encoding="utf-8")
    code, _, err = run_cli(["tokenizer", "train", "--vocab-size", "200", "--corpus", str(corpus), "--out", str(out),
                            "--overwrite"], capsys)
    assert code == 0, err
    assert (out / "vocab.txt").read_text(encoding="utf-8").startswith("[PAD]\n")


def test_argv_that_is_not_utf8_is_one_line(tiny_model_dir):
    # Invalid UTF-8 bytes arrive in sys.argv as lone surrogates (Python's surrogateescape).
    result = subprocess.run([sys.executable, "-m", "bertkit.cli", "predict", "--model", str(tiny_model_dir),
                             b"good \xff movie"], capture_output=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
                            timeout=120)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and err.count("\n") == 1 and "not valid UTF-8" in err, err
    assert result.stdout == b""


def test_a_lone_surrogate_in_process(tiny_model_dir, capsys):
    code, out, err = run_cli(["predict", "--model", str(tiny_model_dir), "bad \ud800 text"], capsys)
    assert (code, out) == (2, "") and err == "bertkit: error: argument 'bad \\ud800 text' is not valid UTF-8; pass text as UTF-8\n"
