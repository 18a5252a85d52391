"""`bertkit predict`: exactly one JSON line per input row, in order, each carrying the row's id or line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertkit.finetune import finetune
from bertkit.inference import Predictor
from bertkit.tasks import ClassifyTask, NerTask
from bertkit.trainer import TrainConfig
from tests.conftest import run_cli
from tests.test_finetune_qa import squad


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("predict_rows")
    train = work / "train.csv"
    train.write_text("text,label\n" + "good movie,pos\nawful film,neg\n" * 4, encoding="utf-8")
    finetune(ClassifyTask(), train, work / "model", tiny_model_dir, None, TrainConfig(epochs=1, batch_size=8))
    return work / "model"


def predict(model: Path, path: Path, capsys) -> list[dict]:
    code, stdout, err = run_cli(["predict", "--model", str(model), "--input", str(path)], capsys)
    assert code == 0, err
    return [json.loads(line) for line in stdout.splitlines()]


def test_blank_lines_of_a_txt_input_keep_their_place(classifier, tmp_path, capsys):
    path = tmp_path / "in.txt"
    path.write_text("good movie\n\nawful film\n   \nthe plot\n", encoding="utf-8")
    lines = predict(classifier, path, capsys)
    assert [line["id"] for line in lines] == [1, 2, 3, 4, 5]
    assert [line.get("error") for line in lines] == [None, "empty text", None, "empty text", None]
    assert lines[1] == {"id": 2, "label": None, "score": None, "scores": {}, "error": "empty text"}
    assert all(line["label"] in ("pos", "neg") for line in lines[::2])


def test_whitespace_only_csv_row_does_not_shift_later_predictions(classifier, tmp_path, capsys):
    texts = ["good movie", "awful film", "  ", "good movie", "awful film"]
    path = tmp_path / "in.csv"
    path.write_text("text\n" + "".join(f"{t}\n" for t in texts), encoding="utf-8")
    lines = predict(classifier, path, capsys)
    assert [line["id"] for line in lines] == [2, 3, 4, 5, 6]  # the file's line numbers
    alone = predict(classifier, _txt(tmp_path, texts[3:]), capsys)
    assert [line["label"] for line in lines[3:]] == [line["label"] for line in alone]


def test_an_id_column_is_carried(classifier, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a-1", "text": "good movie"}\n{"id": 7, "text": ""}\n', encoding="utf-8")
    lines = predict(classifier, path, capsys)
    assert [(line["id"], line.get("error")) for line in lines] == [("a-1", None), (7, "empty text")]


def test_ner_lines_carry_ids_and_empty_texts_answer(tiny_model_dir, tmp_path, capsys):
    train = tmp_path / "train.conll"
    train.write_text("john\tB-PER\nlives\tO\nin\tO\nparis\tB-LOC\n\n", encoding="utf-8")
    finetune(NerTask(), train, tmp_path / "ner", tiny_model_dir, None, TrainConfig(epochs=1, batch_size=2))
    path = _txt(tmp_path, ["john lives in paris", "", "paris"])
    lines = predict(tmp_path / "ner", path, capsys)
    assert [line["id"] for line in lines] == [1, 2, 3]
    assert lines[1] == {"id": 2, "entities": [], "tags": [], "error": "empty text"}


def test_qa_predictions_carry_the_squad_id(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "train.json"
    data.write_text(json.dumps(squad()), encoding="utf-8")
    out = tmp_path / "qa"
    code, _, err = run_cli(["finetune", "qa", "--model", str(tiny_model_dir), "--train", str(data), "--out", str(out),
                            "--epochs", "1", "--max-seq-len", "24", "--doc-stride", "6"], capsys)
    assert code == 0, err
    assert [line["id"] for line in predict(out, data, capsys)] == ["0-0", "0-1", "1-0", "1-1"]


def test_an_error_before_the_first_prediction_leaves_no_output(classifier, tmp_path, capsys, monkeypatch):
    from bertkit.errors import BertkitError

    def failing(self: Predictor, examples: list) -> list[dict]:
        raise BertkitError("the model failed")

    monkeypatch.setattr(Predictor, "predict", failing)
    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", str(classifier), "--input", str(_txt(tmp_path, ["good movie"])), "--output", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "the model failed" in err
    assert not out.exists()  # so a plain rerun is not refused
    monkeypatch.undo()
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == [1]


def _txt(tmp_path: Path, texts: list[str]) -> Path:
    path = tmp_path / f"texts{len(texts)}.txt"
    path.write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
    return path
