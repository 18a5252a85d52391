"""`bertkit predict --input F --output O`: streaming in bounded chunks, input order, resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertkit.finetuning import finetune
from bertkit.inference import Predictor, count_complete_lines, predict_file
from bertkit.tasks import ClassifyTask
from bertkit.trainer import TrainConfig
from tests.conftest import run_cli

WORDS = "the movie was good and the story was fun but the actor was awful and the plot was boring".split()
# Lengths from 1 word to the whole list, in an order that length-sorting inside a chunk would scramble.
TEXTS = [" ".join(WORDS[: 1 + (7 * i) % len(WORDS)]) for i in range(23)]


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("predict_file")
    rows = [("good movie", "pos"), ("fun story", "pos"), ("awful film", "neg"), ("boring plot", "neg")] * 4
    train = work / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows), encoding="utf-8")
    finetune(ClassifyTask(), train, work / "model", tiny_model_dir, None, TrainConfig(epochs=1, batch_size=8))
    return work / "model"


@pytest.fixture()
def texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    for a, b in zip(got, expected):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_streams_in_bounded_chunks_and_keeps_input_order(classifier, texts_file, tmp_path, monkeypatch):
    predictor = Predictor(classifier)
    expected = predictor.predict(predictor.from_texts(TEXTS))
    chunk_sizes: list[int] = []
    original = Predictor.predict

    def recording_predict(self: Predictor, examples: list) -> list[dict]:
        chunk_sizes.append(len(examples))
        return original(self, examples)

    monkeypatch.setattr(Predictor, "predict", recording_predict)
    out = tmp_path / "out.jsonl"
    assert predict_file(predictor, texts_file, out, chunk_size=5) == len(TEXTS)
    assert chunk_sizes == [5, 5, 5, 5, 3], "at most chunk_size examples are held at once"
    assert_same_predictions(read_lines(out), expected)


def test_resume_keeps_whole_lines_drops_a_cut_one_and_finishes(classifier, texts_file, tmp_path, capsys):
    full = tmp_path / "full.jsonl"
    code, _, err = run_cli(["predict", "--model", str(classifier), "--input", str(texts_file), "--output", str(full)], capsys)
    assert code == 0, err
    assert f"wrote {len(TEXTS)} predictions" in err
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)

    interrupted = tmp_path / "interrupted.jsonl"
    interrupted.write_text("".join(lines[:9]) + lines[9][:12], encoding="utf-8")  # killed mid-line
    code, _, err = run_cli(["predict", "--model", str(classifier), "--input", str(texts_file), "--output",
                            str(interrupted), "--resume"], capsys)
    assert code == 0, err
    assert f"wrote {len(TEXTS) - 9} predictions" in err
    assert interrupted.read_text(encoding="utf-8").startswith("".join(lines[:9]))
    assert_same_predictions(read_lines(interrupted), read_lines(full))

    # Resuming a finished file does nothing.
    before = interrupted.read_bytes()
    code, _, err = run_cli(["predict", "--model", str(classifier), "--input", str(texts_file), "--output",
                            str(interrupted), "--resume"], capsys)
    assert code == 0 and "wrote 0 predictions" in err and interrupted.read_bytes() == before


def test_resume_without_a_file_starts_fresh(classifier, texts_file, tmp_path):
    out = tmp_path / "sub" / "new.jsonl"
    assert predict_file(Predictor(classifier), texts_file, out, resume=True) == len(TEXTS)
    assert len(read_lines(out)) == len(TEXTS)


def test_csv_input_with_its_label_column_ignored(classifier, tmp_path, capsys):
    path = tmp_path / "in.csv"
    path.write_text("label,text\n" + "".join(f"pos,{text}\n" for text in TEXTS[:6]), encoding="utf-8")
    code, stdout, err = run_cli(["predict", "--model", str(classifier), "--input", str(path)], capsys)
    assert code == 0, err
    predictor = Predictor(classifier)
    assert_same_predictions([json.loads(line) for line in stdout.splitlines()],
                            predictor.predict(predictor.from_texts(TEXTS[:6])))


def test_count_complete_lines(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c"')
    assert count_complete_lines(path) == (2, 18)
    path.write_bytes(b"")
    assert count_complete_lines(path) == (0, 0)


@pytest.mark.parametrize("case", ["exists", "longer_than_input", "resume_to_stdout", "output_without_input"])
def test_output_is_never_lost(case, classifier, texts_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    content = "".join('{"label": "pos"}\n' for _ in range(len(TEXTS) + (5 if case == "longer_than_input" else 0)))
    out.write_text(content, encoding="utf-8")
    args = ["predict", "--model", str(classifier)]
    args += {
        "exists": ["--input", str(texts_file), "--output", str(out)],
        "longer_than_input": ["--input", str(texts_file), "--output", str(out), "--resume"],
        "resume_to_stdout": ["--input", str(texts_file), "--resume"],
        "output_without_input": ["--output", str(out), "good movie"],
    }[case]
    code, stdout, err = run_cli(args, capsys)
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {"exists": "--overwrite", "longer_than_input": "another input", "resume_to_stdout": "--resume needs --output",
            "output_without_input": "go with --input"}[case] in err
    assert out.read_text(encoding="utf-8") == content


def test_overwrite_replaces(classifier, texts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n" * 100, encoding="utf-8")
    predict_file(Predictor(classifier), texts_file, out, overwrite=True)
    assert len(read_lines(out)) == len(TEXTS)


def test_bad_line_late_in_the_input_fails_before_anything_is_written(classifier, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    rows = [{"text": text} for text in TEXTS] * 300 + [{"text": 5}]  # the bad row comes after many chunks
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, stdout, err = run_cli(["predict", "--model", str(classifier), "--input", str(path), "--output", str(out)], capsys)
    assert code == 2
    assert f"{path}:{len(rows)}: not text (5)" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_empty_and_non_utf8_inputs(classifier, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("good\ncaf\xe9 au lait\n".encode("latin-1"))
    for path, message in ((empty, "the file is empty"), (latin, ":2: not valid UTF-8")):
        code, _, err = run_cli(["predict", "--model", str(classifier), "--input", str(path), "--output",
                                str(tmp_path / "out.jsonl")], capsys)
        assert code == 2 and message in err, err
        assert not (tmp_path / "out.jsonl").exists()
