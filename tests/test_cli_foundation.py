"""The foundation commands end to end: `bertkit tokenizer train` and `bertkit demo`."""

from __future__ import annotations

import subprocess
import sys

import transformers

from bertkit.cli import main


def test_tokenizer_train_then_load_in_transformers(tmp_path, chinese_texts, english_texts, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(chinese_texts + english_texts) + "\n", encoding="utf-8")
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--out", str(tmp_path / "vocab"), "--vocab-size", "3000"]) == 0
    assert "wrote a WordPiece vocab" in capsys.readouterr().err
    theirs = transformers.BertTokenizerFast.from_pretrained(tmp_path / "vocab")
    from bertkit.tokenizer import BertTokenizer

    ours = BertTokenizer.from_pretrained(tmp_path / "vocab")
    for text in chinese_texts[:20] + english_texts[:20]:
        assert ours.encode(text).input_ids == theirs(text, truncation=True)["input_ids"]


def test_tokenizer_train_bad_corpus_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\xff\xfe broken\n")
    assert main(["tokenizer", "train", "--corpus", str(bad), "--out", str(tmp_path / "v"), "--vocab-size", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.txt" in err and not (tmp_path / "v").exists()


def test_demo_runs_offline_and_round_trips(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bertkit.cli", "demo", "--encoder", "--out", str(tmp_path / "demo")],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""}, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "max abs difference 0.0e+00" in result.stdout
    assert "closest to sentence 1: 'Someone performs music with a stringed instrument.'" in result.stdout
    assert (tmp_path / "demo" / "model.safetensors").is_file()


def test_missing_model_directory_is_one_line(tmp_path, capsys):
    assert main(["demo", "--encoder", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"bertkit: error: {tmp_path / 'nope'}: no such model directory\n"
