"""`predict`: exactly one answer per input row, in order; `bertkit predict` lines carry the row's id or line number.

An empty text gets the task's empty prediction with an "error" field, on the command line and in the Python API
(the server refuses it with a 422, tests/test_server.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bertkit
from bertkit.errors import BertkitError
from bertkit.inference import Predictor
from tests.conftest import run_cli
from tests.test_finetune_qa import squad

EMPTY = {"label": None, "score": None, "scores": {}, "error": "empty text"}


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> bertkit.api.FineTuned:
    work = tmp_path_factory.mktemp("predict_rows")
    train = work / "train.csv"
    train.write_text("text,label\n" + "good movie,pos\nawful film,neg\n" * 4, encoding="utf-8")
    return bertkit.finetune("classify", train=train, out=work / "model", model=str(tiny_model_dir), epochs=1,
                            batch_size=8)


def predict(model: Path, path: Path, capsys) -> list[dict]:
    code, stdout, err = run_cli(["predict", "--model", str(model), "--input", str(path)], capsys)
    assert code == 0, err
    return [json.loads(line) for line in stdout.splitlines()]


def _txt(tmp_path: Path, texts: list[str]) -> Path:
    path = tmp_path / f"texts{len(texts)}.txt"
    path.write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
    return path


def test_blank_lines_of_a_txt_input_keep_their_place(classifier, tmp_path, capsys):
    path = tmp_path / "in.txt"
    path.write_text("good movie\n\nawful film\n   \nthe plot\n", encoding="utf-8")
    lines = predict(classifier.directory, path, capsys)
    assert [line["id"] for line in lines] == [1, 2, 3, 4, 5]
    assert [line.get("error") for line in lines] == [None, "empty text", None, "empty text", None]
    assert lines[1] == {"id": 2, **EMPTY}
    assert all(line["label"] in ("pos", "neg") for line in lines[::2])


def test_whitespace_only_csv_row_does_not_shift_later_predictions(classifier, tmp_path, capsys):
    texts = ["good movie", "awful film", "  ", "good movie", "awful film"]
    path = tmp_path / "in.csv"
    path.write_text("text\n" + "".join(f"{t}\n" for t in texts), encoding="utf-8")
    lines = predict(classifier.directory, path, capsys)
    assert [line["id"] for line in lines] == [2, 3, 4, 5, 6]  # the file's line numbers
    assert lines[2] == {"id": 4, **EMPTY}
    alone = predict(classifier.directory, _txt(tmp_path, texts[3:]), capsys)
    assert [line["label"] for line in lines[3:]] == [line["label"] for line in alone]


def test_an_id_column_is_carried(classifier, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a-1", "text": "good movie"}\n{"id": 7, "text": ""}\n', encoding="utf-8")
    lines = predict(classifier.directory, path, capsys)
    assert [(line["id"], line.get("error")) for line in lines] == [("a-1", None), (7, "empty text")]
    tsv = tmp_path / "in.tsv"
    tsv.write_text("id\ttext\nr7\tgood movie\nr9\t\n", encoding="utf-8")
    assert [(line["id"], line.get("error")) for line in predict(classifier.directory, tsv, capsys)] == [
        ("r7", None), ("r9", "empty text")]


def test_command_line_texts_carry_their_position(classifier, capsys):
    code, stdout, err = run_cli(["predict", "--model", str(classifier.directory), "good movie", " ", "awful"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line["id"] for line in lines] == [1, 2, 3] and lines[1] == {"id": 2, **EMPTY}


def test_python_api_answers_an_empty_text_in_its_place(classifier):
    for model in (classifier, bertkit.load(classifier.directory)):
        predictions = model.predict(["good movie", "", "   ", "awful film"])
        assert [p.get("error") for p in predictions] == [None, "empty text", "empty text", None]
        assert predictions[1] == EMPTY and "id" not in predictions[0]  # the API's list is positional
        assert predictions[0] == model.predict(["good movie"])[0]


def test_ner_lines_carry_ids_and_empty_texts_answer(tiny_model_dir, tmp_path, capsys):
    train = tmp_path / "train.conll"
    train.write_text("john\tB-PER\nlives\tO\nin\tO\nparis\tB-LOC\n\n", encoding="utf-8")
    ner = bertkit.finetune("ner", train=train, out=tmp_path / "ner", model=str(tiny_model_dir), epochs=1,
                           batch_size=2)
    lines = predict(ner.directory, _txt(tmp_path, ["john lives in paris", "", "paris"]), capsys)
    assert [line["id"] for line in lines] == [1, 2, 3]
    assert lines[1] == {"id": 2, "entities": [], "tags": [], "error": "empty text"}
    assert ner.predict(["", "paris"])[0] == {"entities": [], "tags": [], "error": "empty text"}
    assert len(ner.predict(["", "paris"])[1]["tags"]) == 1


def test_qa_predictions_carry_the_squad_id(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "train.json"
    data.write_text(json.dumps(squad()), encoding="utf-8")
    out = tmp_path / "qa"
    code, _, err = run_cli(["finetune", "qa", "--model", str(tiny_model_dir), "--train", str(data), "--out", str(out),
                            "--epochs", "1", "--max-seq-len", "24", "--doc-stride", "6"], capsys)
    assert code == 0, err
    assert [line["id"] for line in predict(out, data, capsys)] == ["0-0", "0-1", "1-0", "1-1"]
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": "x", "question": "who ?", "context": "john lives in paris"}\n'
                       '{"question": "where ?", "context": "john lives in paris"}\n', encoding="utf-8")
    assert [line["id"] for line in predict(out, queries, capsys)] == ["x", "1"]  # no id: the 0-based line index


def test_an_error_before_the_first_prediction_leaves_no_output(classifier, tmp_path, capsys, monkeypatch):
    def failing(self: Predictor, examples: list) -> list[dict]:
        raise BertkitError("the model failed")

    monkeypatch.setattr(Predictor, "predict", failing)
    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", str(classifier.directory), "--input", str(_txt(tmp_path, ["good movie"])),
            "--output", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "the model failed" in err
    assert not out.exists()  # so a plain rerun is not refused
    monkeypatch.undo()
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == [1]
