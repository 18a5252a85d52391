"""Texts longer than the model reads: classify --long truncate|head+tail|windows, and 50,000-character inputs for
every task (classify, NER, QA) in the Python API, the command line and the server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers
from fastapi.testclient import TestClient

import bertkit
from bertkit.batching import collate
from bertkit.checkpoint import load_config, load_pretrained
from bertkit.data.classify import ClassifyExample, encode_classify, head_and_tail
from bertkit.errors import BertkitError
from bertkit.inference import Predictor
from bertkit.server import create_app
from bertkit.tasks.classify import ClassifyOptions, ClassifyTask
from bertkit.tokenizer import BertTokenizer
from tests.conftest import run_cli
from tests.test_finetune_classify import NEGATIVE, POSITIVE
from tests.test_finetune_ner import ENGLISH, write_conll
from tests.test_finetune_qa import squad
from tests.test_server import one_torch_thread  # noqa: F401 (autouse: tiny models run best on one thread)

WORDS = "good movie great film fun story bad awful boring plot actor".split()
SHORT = "the plot was fun"


def long_text(chars: int = 50_000) -> str:
    """Real words of the tiny vocabulary, `chars` characters of them."""
    text, k = [], 0
    while sum(map(len, text)) + len(text) < chars:
        text.append(WORDS[k % len(WORDS)])
        k += 7
    return " ".join(text)[:chars]


def _rows() -> list[dict[str, str]]:
    """Documents a few windows long, labelled by the words they are made of."""
    long_positive = [" ".join(POSITIVE[i:] + POSITIVE[:i]) for i in range(3)]
    long_negative = [" ".join(NEGATIVE[i:] + NEGATIVE[:i]) for i in range(3)]
    return ([{"text": t, "label": "pos"} for t in POSITIVE + long_positive]
            + [{"text": t, "label": "neg"} for t in NEGATIVE + long_negative])


@pytest.fixture(scope="module")
def windows_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A classifier fine-tuned with --long windows for each pool: windows of 6 text tokens sharing 2."""
    tmp = tmp_path_factory.mktemp("long_windows")
    dirs = {}
    for pool in ("mean", "max", "attention"):
        dirs[pool] = tmp / pool
        bertkit.finetune("classify", train=_rows(), out=dirs[pool], model=str(tiny_model_dir), epochs=2,
                         batch_size=4, lr=5e-3, seed=1, max_seq_len=8, long="windows", stride=2, window_pool=pool)
    return dirs


def _as_truncating(model_dir: Path, out: Path) -> Path:
    """The same weights, with config.json saying the model reads one window (--long truncate)."""
    out.mkdir()
    for file in model_dir.iterdir():
        if file.is_file():
            (out / file.name).write_bytes(file.read_bytes())
    config = json.loads((out / "config.json").read_text())
    config["bertkit"]["long"] = "truncate"
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize("pool", ["mean", "max", "attention"])
def test_pooling_one_window_is_that_window(pool, windows_dirs, tmp_path):
    """A text that fits in one window gets exactly the scores of reading it whole."""
    windowed = bertkit.load(windows_dirs[pool]).predict([SHORT])[0]
    assert len(windowed["windows"]) == 1 and windowed["windows"][0]["scores"] == pytest.approx(windowed["scores"])
    # the attention weights live in model.safetensors; the truncating copy loads and ignores them
    whole = bertkit.load(_as_truncating(windows_dirs[pool], tmp_path / "whole")).predict([SHORT])[0]
    assert "windows" not in whole
    assert whole["scores"] == pytest.approx(windowed["scores"], abs=1e-6) and whole["label"] == windowed["label"]


def test_mean_pool_reads_the_mean_of_window_logits(windows_dirs):
    """softmax(mean of each window's logits) is the document's score (log-probabilities differ from logits by a
    constant per window, which a softmax ignores)."""
    prediction = bertkit.load(windows_dirs["mean"]).predict([" ".join(POSITIVE + NEGATIVE)])[0]
    assert len(prediction["windows"]) > 2
    labels = list(prediction["scores"])
    log_probs = torch.tensor([[math.log(w["scores"][label]) for label in labels] for w in prediction["windows"]])
    assert torch.softmax(log_probs.mean(0), -1).tolist() == pytest.approx([prediction["scores"][x] for x in labels])
    text = " ".join(POSITIVE + NEGATIVE)
    assert prediction["windows"][0]["start"] == 0 and prediction["windows"][-1]["end"] == len(text)
    assert all(a["start"] < b["start"] < a["end"] for a, b in zip(prediction["windows"], prediction["windows"][1:]))


def test_attention_weights_sum_to_one_and_load_in_transformers(windows_dirs):
    model_dir = windows_dirs["attention"]
    prediction = bertkit.load(model_dir).predict([" ".join(POSITIVE + NEGATIVE)])[0]
    assert sum(w["weight"] for w in prediction["windows"]) == pytest.approx(1.0)
    # transformers loads the classifier and leaves the attention pool's own weights out
    theirs = transformers.BertForSequenceClassification.from_pretrained(model_dir).eval()
    ours = bertkit.load(model_dir).model
    assert torch.equal(theirs.classifier.weight, ours.classifier.weight)
    assert hasattr(ours, "window_attention") and not hasattr(theirs, "window_attention")


def test_training_reads_every_window_of_a_document_in_one_batch(tiny_model_dir):
    """The loss is on the documents' pooled logits: one label per document, every window in the forward."""
    tokenizer = BertTokenizer.from_pretrained(tiny_model_dir)
    examples = [ClassifyExample(" ".join(POSITIVE), None, "pos", 1), ClassifyExample(SHORT, None, "neg", 2)]
    features = encode_classify(examples, tokenizer, 8, {"neg": 0, "pos": 1}, "windows", 2)
    batch = collate(features, tokenizer.pad_token_id)
    assert batch["labels"].tolist() == [1, 0]
    owners = batch["window_document"].tolist()
    assert owners == [0] * len(features[0]["windows"]) + [1] and batch["input_ids"].shape == (len(owners), 8)
    task = ClassifyTask({"max_seq_len": 8, "long": "windows", "stride": 2, "window_pool": "mean"})
    config = task.config_for(load_config(tiny_model_dir), ["neg", "pos"])
    model, _, _ = load_pretrained(tiny_model_dir, "BertForSequenceClassification", config)
    model.eval()
    out = model(**batch)
    assert out.logits.shape == (2, 2)
    single = model(**{k: v for k, v in batch.items() if k not in ("labels", "window_document")}).logits
    assert torch.allclose(out.logits[0], single[: len(features[0]["windows"])].mean(0), atol=1e-6)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, batch["labels"]))


def test_head_and_tail_keeps_the_start_and_the_end(tiny_model_dir):
    tokenizer = BertTokenizer.from_pretrained(tiny_model_dir)
    text = " ".join(WORDS * 2)  # 22 words of one token each
    ids = tokenizer.encode(text, max_length=None, truncation="do_not_truncate").input_ids[1:-1]
    assert len(ids) == 22
    [feature] = encode_classify([ClassifyExample(text, None, None, 1)], tokenizer, 12, long="head+tail")
    # 10 text tokens: round(10 * 128 / 510) = 3 from the start, 7 from the end (Sun et al.'s 128 + 382 of 510)
    assert feature["input_ids"] == [tokenizer.cls_token_id, *ids[:3], *ids[-7:], tokenizer.sep_token_id]
    assert head_and_tail(list(range(510 + 90)), 510) == list(range(128)) + list(range(600 - 382, 600))
    assert head_and_tail([1, 2, 3], 10) == [1, 2, 3]
    [fits] = encode_classify([ClassifyExample(SHORT, None, None, 1)], tokenizer, 12, long="head+tail")
    assert fits["input_ids"] == tokenizer.encode(SHORT).input_ids


def test_stride_at_or_above_the_window_is_one_line(tiny_model_dir, tmp_path, capsys):
    for stride in (6, 7):  # max_seq_len 8 leaves windows of 6 text tokens
        with pytest.raises(BertkitError, match="--stride"):
            ClassifyOptions(max_seq_len=8, long="windows", stride=stride)
    ClassifyOptions(max_seq_len=8, long="windows", stride=5)
    ClassifyOptions(max_seq_len=8, stride=100)  # no windows, no check
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in _rows()), encoding="utf-8")
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--out",
                            str(tmp_path / "m"), "--long", "windows", "--max-seq-len", "16", "--stride", "14"], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "--stride 14" in err
    assert not (tmp_path / "m").exists()
    with pytest.raises(BertkitError, match="sentence pairs"):
        ClassifyOptions(long="head+tail", text_pair_column="pair")


def _server_predictions(model_dir: Path, payload: dict) -> list[dict]:
    with TestClient(create_app(Predictor(model_dir))) as client:
        response = client.post("/v1/predict", json=payload)
        assert response.status_code == 200, response.text
        return response.json()["predictions"]


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_long_text_same_in_api_cli_and_server(pool, windows_dirs, tmp_path, capsys):
    model_dir = windows_dirs[pool]
    text = long_text()
    [api] = bertkit.load(model_dir).predict([text])
    assert len(api["windows"]) > 1000  # 50,000 characters in windows of 6 tokens
    (tmp_path / "in.txt").write_text(text + "\n", encoding="utf-8")
    code, stdout, err = run_cli(["predict", "--model", str(model_dir), "--input", str(tmp_path / "in.txt")], capsys)
    assert code == 0, err
    [cli] = [json.loads(line) for line in stdout.splitlines()]
    [served] = _server_predictions(model_dir, {"texts": [text]})
    assert cli.pop("id") == 1
    for other in (cli, served):
        assert other["label"] == api["label"] and other["scores"] == pytest.approx(api["scores"], abs=1e-5)
        assert [(w["start"], w["end"]) for w in other["windows"]] == [(w["start"], w["end"]) for w in api["windows"]]


@pytest.mark.parametrize("long", ["truncate", "head+tail"])
def test_long_text_classified_whole_or_head_and_tail(long, tiny_model_dir, tmp_path):
    out = tmp_path / long
    bertkit.finetune("classify", train=_rows(), out=out, model=str(tiny_model_dir), epochs=1, batch_size=4,
                     max_seq_len=16, long=long)
    assert json.loads((out / "config.json").read_text())["bertkit"]["long"] == long
    text = long_text()
    [api] = bertkit.load(out).predict([text])
    [served] = _server_predictions(out, {"texts": [text]})
    assert "windows" not in api and served["scores"] == pytest.approx(api["scores"], abs=1e-5)


def test_50000_characters_are_normal_input_for_ner_and_qa(tiny_model_dir, tmp_path):
    write_conll(tmp_path / "train.conll", ENGLISH * 2)
    ner_dir = tmp_path / "ner"
    bertkit.finetune("ner", train=tmp_path / "train.conll", out=ner_dir, model=str(tiny_model_dir), epochs=1,
                     batch_size=4, max_seq_len=32, stride=8)
    text = long_text()
    [tagged] = bertkit.load(ner_dir).predict([text])
    assert len(tagged["tags"]) == len(text.split())  # one tag per word, all 50,000 characters read
    assert all(text[e["start"] : e["end"]] == e["text"] for e in tagged["entities"])
    [served] = _server_predictions(ner_dir, {"texts": [text]})
    assert served["tags"] == tagged["tags"]

    (tmp_path / "train.json").write_text(json.dumps(squad()), encoding="utf-8")
    qa_dir = tmp_path / "qa"
    bertkit.finetune("qa", train=tmp_path / "train.json", out=qa_dir, model=str(tiny_model_dir), epochs=1,
                     batch_size=4, max_seq_len=64, doc_stride=32)
    question = {"question": "where does john smith live ?", "context": text}
    [answer] = bertkit.load(qa_dir).predict([question])
    assert 0 <= answer["start"] < answer["end"] <= len(text) and text[answer["start"] : answer["end"]] == answer["answer"]
    [served] = _server_predictions(qa_dir, {"items": [question]})
    assert (served["start"], served["end"]) == (answer["start"], answer["end"])


def test_onnx_backend_pools_mean_and_refuses_attention(windows_dirs, tmp_path):
    from bertkit.export import export_onnx

    text = " ".join(POSITIVE + NEGATIVE)
    graph = export_onnx(windows_dirs["mean"], tmp_path / "mean.onnx").path
    [onnx] = bertkit.load(windows_dirs["mean"], backend="onnx", onnx=str(graph)).predict([text])
    [torch_backend] = bertkit.load(windows_dirs["mean"]).predict([text])
    assert onnx["scores"] == pytest.approx(torch_backend["scores"], abs=1e-4) and len(onnx["windows"]) > 2
    graph = export_onnx(windows_dirs["attention"], tmp_path / "attention.onnx").path
    with pytest.raises(BertkitError, match="use --backend torch"):
        bertkit.load(windows_dirs["attention"], backend="onnx", onnx=str(graph)).predict([text])


def test_newsgroup_posts_are_read_without_unpickling(monkeypatch):
    """The benchmark's data is a pickle; it is read off its opcodes, so no unpickler ever runs."""
    import pickle

    from bertkit.datasets import newsgroup_posts

    def refuse(*args, **kwargs):
        raise AssertionError("the newsgroups file was unpickled")

    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    rows = newsgroup_posts()
    assert len(rows) == 200 and sorted({label for _, label in rows}) == ["alt.atheism", "sci.space"]
    assert sum(label == "sci.space" for _, label in rows) == 100
    assert not any(text.startswith(("Newsgroups:", "From:", "Path:")) for text, _ in rows)  # headers dropped
