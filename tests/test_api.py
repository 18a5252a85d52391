"""The Python API: the notebook surface gives the same results and the same one-line errors as the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import bertkit
from bertkit.errors import BertkitError
from tests.conftest import run_cli
from tests.test_finetune_classify import NEGATIVE, POSITIVE
from tests.test_finetune_ner import ENGLISH
from tests.test_finetune_qa import squad

ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
FAST = {"epochs": 2, "batch_size": 8, "lr": 3e-3, "seed": 1, "bf16": False}


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_import_is_quiet_and_light():
    result = _python("import sys, bertkit; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    assert (result.returncode, result.stdout, result.stderr) == (0, "[]\n", "")


def test_help_does_not_import_torch():
    result = _python("import sys\nfrom bertkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                     "print('torch' in sys.modules)")
    assert result.returncode == 0 and result.stdout.endswith("False\n") and "finetune" in result.stdout, result.stderr
    assert subprocess.run([sys.executable, "-m", "bertkit.cli", "--help"], capture_output=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}).returncode == 0


def test_public_names_are_documented():
    assert {"finetune", "load", "pretrain", "FineTuned", "BertkitError", "BertModel", "BertConfig",
            "BertTokenizer"} <= set(bertkit.__all__)
    for name in bertkit.__all__:
        assert getattr(bertkit, name).__doc__, name
    assert callable(bertkit.finetune) and bertkit.finetune.__module__ == "bertkit.api"


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    result = _python("import matplotlib; matplotlib.use('svg')\nfrom pathlib import Path\nfrom bertkit.plots import "
                     f"plot_confusion_matrix\nplot_confusion_matrix([[1, 0], [0, 1]], ['a', 'b'], Path({str(tmp_path)!r}) / 'c.png')\n"
                     "print(matplotlib.get_backend())")
    assert result.stdout == "svg\n", result.stderr
    assert (tmp_path / "c.png").stat().st_size > 0


@pytest.fixture(scope="module")
def classifier(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "clf"
    calls = []

    def prepare(model):
        calls.append(type(model).__name__)
        return model

    clf = bertkit.finetune("classify", train=pd.DataFrame(ROWS * 3), dev=ROWS, out=out, model=str(tiny_model_dir),
                           prepare_model=prepare, **FAST)
    assert calls == ["BertForSequenceClassification"]
    return clf


def test_finetune_predict_evaluate_match_the_cli(classifier, tmp_path, capsys):
    assert len(classifier.history.epochs) == 2 and classifier.history.best is not None
    predictions = classifier.predict(["good movie", "awful plot"])
    assert set(predictions[0]) == {"label", "score", "scores"}
    code, out, err = run_cli(["predict", "--model", str(classifier.directory), "--fp32", "good movie", "awful plot"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line.pop("id") for line in lines] == [1, 2] and lines == predictions  # the CLI's lines carry an id
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    code, out, err = run_cli(["evaluate", "--model", str(classifier.directory), "--fp32", "--data", str(test)], capsys)
    assert code == 0, err
    assert json.loads(out) == classifier.evaluate(str(test)) == classifier.evaluate(ROWS)
    loaded = bertkit.load(classifier.directory, fp32=True)
    assert loaded.predict(["good movie", "awful plot"]) == predictions
    assert loaded.history.best == classifier.history.best and loaded.task == "classify"
    assert type(loaded.model).__name__ == "BertForSequenceClassification" and loaded.tokenizer.vocab_size > 0


def test_a_model_object_and_a_loss_function(classifier, tmp_path):
    seen = []

    def loss_fn(model, batch):
        output = model(**batch)
        seen.append(output.loss.item())
        return output.loss * 2, {}

    again = bertkit.finetune("classify", train=ROWS, out=tmp_path / "again", model=classifier, loss_fn=loss_fn,
                             **{**FAST, "epochs": 1})
    assert len(seen) == 2  # 12 rows, batches of 8
    assert len(again.predict(["fun story"])) == 1


@pytest.mark.parametrize(("train", "inputs", "message"), [
    (pd.DataFrame({"text": ["a", "b"]}), None, "train:1: no column 'label' (columns: text)"),
    ([], None, "train= is empty; give at least one example"),
    ([{"text": 3, "label": "x"}], None, "train:1: not text (3)"),
    ("missing.csv", None, "missing.csv"),
    ({"text": "a"}, None, "train= takes a path, a list of dicts or a pandas DataFrame, not dict"),
    (None, [], "predict got an empty list; give at least one input"),
    (None, [3], "input 1: expected a string, got int"),
    (None, "good movie", "predict takes a list of inputs, got str"),
    (None, [("a", "b")], "input 1: a (text, pair) tuple, but the model was fine-tuned on single texts"),
])
def test_bad_input_is_the_cli_one_line_error(classifier, tmp_path, train, inputs, message):
    with pytest.raises(BertkitError) as error:
        if train is not None:
            bertkit.finetune("classify", train=train, out=tmp_path / "bad", **FAST)
        else:
            classifier.predict(inputs)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "bad").exists()


def test_ner_from_records_and_qa_from_a_path(tiny_model_dir, tmp_path):
    ner = bertkit.finetune("ner", train=[{"tokens": w, "tags": t} for w, t in ENGLISH * 4], out=tmp_path / "ner",
                           model=str(tiny_model_dir), **FAST)
    [prediction] = ner.predict(["john smith lives in paris ."])
    assert set(prediction) == {"entities", "tags"} and len(prediction["tags"]) == 6
    with pytest.raises(BertkitError, match=r'^train:1: "tokens" must be a list of strings$'):
        bertkit.finetune("ner", train=[{"tokens": "john", "tags": ["B-PER"]}], out=tmp_path / "bad")
    data = tmp_path / "squad.json"
    data.write_text(json.dumps(squad()), encoding="utf-8")
    qa = bertkit.finetune("qa", train=str(data), out=tmp_path / "qa", model=str(tiny_model_dir), max_seq_len=24,
                          doc_stride=6, **FAST)
    [answer] = qa.predict([{"question": "where does john smith live ?", "context": "john smith lives in paris ."}])
    assert set(answer) >= {"answer", "start", "end", "score"}
    with pytest.raises(BertkitError, match="^input 1: \"context\" is missing$"):
        qa.predict([{"question": "who ?"}])
    assert set(qa.evaluate(str(data))) >= {"exact_match", "f1"}
