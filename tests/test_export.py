"""`bertkit export onnx` and the onnx backend: the graph matches PyTorch on shapes it was not traced with,
and `predict`/`evaluate --backend onnx` give the torch backend's answers."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from bertkit.checkpoint import load_pretrained, save_model
from bertkit.cli import main
from bertkit.export import ONNX_FILE, open_session, random_batch, run_session
from bertkit.inference import Predictor
from tests.conftest import run_cli
from tests.test_finetune_classify import NEGATIVE, POSITIVE, write_csv
from tests.test_finetune_ner import CHINESE, ENGLISH, write_conll
from tests.test_finetune_qa import CONTEXTS, squad

TASKS = ("classify", "ner", "qa")
CLASSIFY_TEXTS = POSITIVE + NEGATIVE + ["a", "the movie was good and the story was fun and the actor was great", "what a plot"]
NER_TEXTS = ["john smith lives in paris .", "我在北京大学工作", "smith works at google in new york .", "john"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a machine shared with benchmarks: more threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _finetune(task: str, tiny_model_dir: Path, train: Path, out: Path, *flags: str) -> Path:
    assert main(["finetune", task, "--model", str(tiny_model_dir), "--train", str(train), "--out", str(out),
                 "--epochs", "1", "--batch-size", "4", "--lr", "5e-3", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def task_files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """task -> (a model fine-tuned for an epoch or two, with DIR/model.onnx exported; a file of inputs to predict).

    Each epoch runs over many copies of the toy data: enough steps that the models predict more than
    one label, find entities and answer questions, so that comparing backends compares something.
    """
    tmp = tmp_path_factory.mktemp("export")
    rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    # Two epochs: after one, the classifier still predicts a single label under about one seed in three.
    classify = _finetune("classify", tiny_model_dir, write_csv(tmp / "train.csv", rows * 12), tmp / "classify", "--epochs", "2")
    write_conll(tmp / "train.conll", (ENGLISH + CHINESE) * 48)
    ner = _finetune("ner", tiny_model_dir, tmp / "train.conll", tmp / "ner", "--max-seq-len", "8", "--stride", "2")
    data = squad()
    paragraphs = data["data"][0]["paragraphs"]
    data["data"] = [  # 20 copies under new question ids
        {"title": f"copy {n}",
         "paragraphs": [{"context": p["context"], "qas": [{**qa, "id": f"{n}-{qa['id']}"} for qa in p["qas"]]} for p in paragraphs]}
        for n in range(20)
    ]
    (tmp / "squad.json").write_text(json.dumps(data), encoding="utf-8")
    qa = _finetune("qa", tiny_model_dir, tmp / "squad.json", tmp / "qa", "--max-seq-len", "24", "--doc-stride", "6")

    (tmp / "classify.txt").write_text("\n".join(CLASSIFY_TEXTS) + "\n", encoding="utf-8")
    (tmp / "ner.txt").write_text("\n".join(NER_TEXTS) + "\n", encoding="utf-8")
    questions = [{"question": q, "context": c} for c, qs in CONTEXTS for q, _ in qs]
    (tmp / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    models = {"classify": classify, "ner": ner, "qa": qa}
    for model_dir in models.values():
        assert main(["export", "onnx", "--model", str(model_dir)]) == 0
    inputs = {"classify": tmp / "classify.txt", "ner": tmp / "ner.txt", "qa": tmp / "qa.jsonl"}
    return {task: (models[task], inputs[task]) for task in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_graph_matches_torch_on_new_shapes(task, task_files):
    model_dir, _ = task_files[task]
    path = model_dir / ONNX_FILE
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in graph.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in dims] == ["batch", "sequence"], "batch and sequence axes must stay dynamic"
    names = ["start_logits", "end_logits"] if task == "qa" else ["logits"]
    assert [o.name for o in graph.graph.output] == names

    # The export traced a (2, 8) batch and checked a (3, 13) one; this is a third shape, against the
    # model as the torch backend runs it (the unpadded path), at the real tokens.
    model, _, _ = load_pretrained(model_dir)
    batch = random_batch(model.config, 5, 21, seed=7)
    ours = run_session(open_session(path, threads=1), batch)
    with torch.no_grad():
        reference = model.eval()(**batch)
    real = batch["attention_mask"].bool()
    for name in names:
        expected = getattr(reference, name)
        got = torch.from_numpy(ours[name])
        assert got.shape == expected.shape
        if task != "classify":  # per-token outputs: padded positions are no one's answer
            got, expected = got[real], expected[real]
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def _answer(task: str, prediction: dict) -> str:
    """The discrete part of a prediction, which both backends must agree on exactly."""
    if task == "classify":
        return prediction["label"]
    if task == "ner":
        return str([(e["type"], e["start"], e["end"], e["text"]) for e in prediction["entities"]])
    return str((prediction["answer"], prediction["start"], prediction["end"]))


def _scores(task: str, prediction: dict) -> list[float]:
    if task == "classify":
        return list(prediction["scores"].values())
    if task == "ner":
        return [e["score"] for e in prediction["entities"]]
    return [prediction["score"]]


@pytest.mark.parametrize("task", TASKS)
def test_predict_with_onnx_backend_matches_torch(task, task_files, capsys):
    model_dir, inputs = task_files[task]
    results = {}
    for backend in ("torch", "onnx"):
        code, stdout, err = run_cli(["predict", "--model", str(model_dir), "--input", str(inputs), "--backend", backend,
                                     "--batch-size", "3"], capsys)
        assert code == 0, err
        results[backend] = [json.loads(line) for line in stdout.splitlines()]
    answers = {backend: [_answer(task, p) for p in predictions] for backend, predictions in results.items()}
    assert len(set(answers["torch"])) > 1, f"the toy model should have learned something: {answers['torch']}"
    assert answers["onnx"] == answers["torch"]
    for ours, reference in zip(results["onnx"], results["torch"]):
        assert np.allclose(_scores(task, ours), _scores(task, reference), atol=1e-4, rtol=0)


def test_evaluate_with_onnx_backend_matches_torch(task_files, tmp_path, capsys):
    model_dir, _ = task_files["classify"]
    dev = write_csv(tmp_path / "dev.csv", [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE])
    metrics = {}
    for backend in ("torch", "onnx"):
        code, stdout, err = run_cli(["evaluate", "--model", str(model_dir), "--data", str(dev), "--backend", backend], capsys)
        assert code == 0, err
        metrics[backend] = json.loads(stdout)
    assert metrics["onnx"] == metrics["torch"]


def test_int8_is_smaller_runs_and_mostly_agrees(task_files, tmp_path, capsys):
    model_dir, _ = task_files["classify"]
    out = tmp_path / "int8.onnx"
    code, _, err = run_cli(["export", "onnx", "--model", str(model_dir), "--out", str(out), "--quantize", "int8"], capsys)
    assert code == 0, err
    assert "int8" in err and str(out) in err
    assert out.stat().st_size < (model_dir / ONNX_FILE).stat().st_size
    assert {"MatMulInteger", "DynamicQuantizeMatMul"} & {n.op_type for n in onnx.load(str(out)).graph.node}
    assert open_session(out).get_modelmeta().custom_metadata_map["bertkit.quantize"] == "int8"

    fp32 = Predictor(model_dir, backend="onnx")
    int8 = Predictor(model_dir, backend="onnx", onnx_file=out)
    examples = fp32.from_texts(CLASSIFY_TEXTS)
    reference, ours = fp32.predict(examples), int8.predict(examples)
    agree = sum(a["label"] == b["label"] for a, b in zip(ours, reference))
    assert agree >= 0.8 * len(examples), f"int8 agrees on only {agree} of {len(examples)}"
    assert all(abs(a["score"] - b["score"]) < 0.1 for a, b in zip(ours, reference))


def test_opset_is_honoured(task_files, tmp_path, capsys):
    model_dir, _ = task_files["qa"]
    out = tmp_path / "opset17.onnx"
    code, _, err = run_cli(["export", "onnx", "--model", str(model_dir), "--out", str(out), "--opset", "17"], capsys)
    assert code == 0 and err.count("\n") == 1, err
    assert [o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")] == [17]


def test_bare_encoder_exports_but_does_not_predict(tiny_model_dir, tmp_path, capsys):
    model_dir = tmp_path / "encoder"
    shutil.copytree(tiny_model_dir, model_dir)
    code, _, err = run_cli(["export", "onnx", "--model", str(model_dir)], capsys)
    assert code == 0, err
    outputs = [o.name for o in onnx.load(str(model_dir / ONNX_FILE)).graph.output]
    assert outputs == ["last_hidden_state", "pooler_output"]
    code, _, err = run_cli(["predict", "--model", str(model_dir), "--backend", "onnx", "a text"], capsys)
    assert code == 2 and err.count("\n") == 1, err


def test_stale_graph_is_refused(task_files, tmp_path, capsys):
    source, _ = task_files["classify"]
    model_dir = tmp_path / "retrained"
    shutil.copytree(source, model_dir)
    model, _, _ = load_pretrained(model_dir)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    save_model(model, model_dir)  # fine-tuned again in place: the old model.onnx no longer fits
    code, _, err = run_cli(["predict", "--model", str(model_dir), "--backend", "onnx", "good movie"], capsys)
    assert code == 2 and "export it again" in err and err.count("\n") == 1, err


def test_bad_input_is_one_line(task_files, tmp_path, capsys):
    model_dir, _ = task_files["classify"]
    cases = [
        (["export", "onnx", "--model", str(tmp_path / "missing")], "no such model directory"),
        (["export", "onnx", "--model", str(model_dir), "--out", str(tmp_path / "no" / "dir" / "m.onnx")], "no such directory"),
        (["export", "onnx", "--model", str(model_dir), "--out", str(tmp_path)], "is a directory"),
        (["predict", "--model", str(tmp_path), "--backend", "onnx", "good movie"], "bertkit export onnx --model"),
        (["export", "onnx", "--model", str(model_dir)], "model.onnx exists; pass --overwrite to replace it"),
        (["predict", "--model", str(model_dir), "--onnx", str(tmp_path / "m.onnx"), "good movie"], "goes with --backend onnx"),
        (["predict", "--model", str(model_dir), "--backend", "onnx", "--onnx", str(tmp_path / "m.onnx"), "good movie"],
         "m.onnx: no such file"),
    ]
    for args, expected in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 2 and expected in err and err.count("\n") == 1, (args, err)
    assert not list(model_dir.glob(".*.tmp")), "no temporary file may be left behind"


def test_unwritable_out_is_one_line(task_files, tmp_path, capsys):
    model_dir, _ = task_files["classify"]
    # A read-only directory stops everyone but root; /sys refuses new files even to root.
    unwritable = tmp_path / "read-only" if os.geteuid() != 0 else Path("/sys")
    if unwritable != Path("/sys"):
        unwritable.mkdir()
        unwritable.chmod(0o555)
    code, _, err = run_cli(["export", "onnx", "--model", str(model_dir), "--out", str(unwritable / "m.onnx")], capsys)
    assert code == 2 and "cannot write" in err and err.count("\n") == 1, err
    assert not (unwritable / "m.onnx").exists()
