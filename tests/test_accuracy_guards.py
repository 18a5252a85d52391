"""The bad inputs of issue 16's features, on the command line: each is one line on stderr, exit code 2, and
nothing is written (an empty search range and --crf on another task are covered in test_tune and test_crf)."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def _train_file(tmp_path, rows):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_folds_above_the_smallest_class(tiny_model_dir, tmp_path, capsys):
    rows = [{"text": "good movie", "label": "pos"}] * 5 + [{"text": "bad movie", "label": "neg"}] * 2
    code, _, err = run_cli(["finetune", "classify", "--train", _train_file(tmp_path, rows), "--out", str(tmp_path / "m"),
                            "--model", str(tiny_model_dir), "--folds", "3"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--folds 3 is more than the 2 examples of the smallest class ('neg')" in err
    assert not (tmp_path / "m").exists()


def test_mlm_weight_without_an_mlm_head(tiny_model_dir, tmp_path, capsys):
    rows = [{"text": "good movie", "label": "pos"}, {"text": "bad movie", "label": "neg"}]
    code, _, err = run_cli(["finetune", "classify", "--train", _train_file(tmp_path, rows), "--out", str(tmp_path / "m"),
                            "--model", str(tiny_model_dir), "--mlm-weight", "0.1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "masked-LM head" in err
    assert not (tmp_path / "m").exists()
