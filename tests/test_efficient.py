"""Freezing, BitFit, LoRA (peft) and Houlsby adapters: what trains, the adapter directory, merge, several adapters
on one served base, bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file
from fastapi.testclient import TestClient

import bertkit
from bertkit.checkpoint import load_model, load_pretrained
from bertkit.efficient import (EfficientOptions, bitfit, bottleneck_adapters, freeze, lora, merge, prepare,
                               save_trained, shared_base)
from bertkit.errors import BertkitError
from bertkit.heads import BertForSequenceClassification
from bertkit.inference import Predictor
from bertkit.server import create_app, load_served, parse_adapters
from bertkit.tokenizer import BertTokenizer
from tests.conftest import run_cli
from tests.test_finetune_classify import NEGATIVE, POSITIVE, write_csv
from tests.test_finetune_ner import CHINESE, ENGLISH, write_conll
from tests.test_finetune_qa import squad

HEAD = {"classifier.weight", "classifier.bias"}
TEXTS = ["great film", "awful plot", "i love the story"]
ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def classifier(tiny_model_dir: Path) -> BertForSequenceClassification:
    config = load_model(tiny_model_dir)[0].config
    config.id2label = {0: "neg", 1: "pos"}
    return load_model(tiny_model_dir, "BertForSequenceClassification", config)[0]


def trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _batch(model_dir: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    batch = BertTokenizer.from_pretrained(model_dir)(texts)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def _outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor a head returns (logits; start and end logits for QA)."""
    with torch.no_grad():
        out = model.eval()(**batch)
    return {f.name: getattr(out, f.name) for f in dataclasses.fields(out) if isinstance(getattr(out, f.name), torch.Tensor)}


def _finetune(tiny_model_dir: Path, out: Path, *flags: str, task: str = "classify", train: Path | None = None,
              capsys=None) -> tuple[int, str]:
    args = ["finetune", task, "--model", str(tiny_model_dir), "--train", str(train), "--out", str(out),
            "--epochs", "2", "--batch-size", "8", "--lr", "1e-2", *flags]
    code, _, err = run_cli(args, capsys)
    return code, err


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("efficient_data")
    write_csv(tmp / "train.csv", [(r["text"], r["label"]) for r in ROWS] * 3)
    write_conll(tmp / "train.conll", (ENGLISH + CHINESE) * 3)
    (tmp / "train.json").write_text(json.dumps(squad()), encoding="utf-8")
    return tmp


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir, data_dir, tmp_path_factory) -> dict[str, Path]:
    """A LoRA classifier and a Houlsby-adapter NER model, both on the tiny base."""
    from bertkit.cli import main

    tmp = tmp_path_factory.mktemp("efficient_models")
    common = ["--model", str(tiny_model_dir), "--epochs", "2", "--batch-size", "8", "--lr", "1e-2"]
    assert main(["finetune", "classify", "--train", str(data_dir / "train.csv"), "--out", str(tmp / "lora"), *common,
                 "--peft", "lora", "--lora-rank", "4"]) == 0
    assert main(["finetune", "ner", "--train", str(data_dir / "train.conll"), "--out", str(tmp / "houlsby"), *common,
                 "--peft", "adapter", "--adapter-size", "8"]) == 0
    return {"lora": tmp / "lora", "houlsby": tmp / "houlsby"}


# -- which parameters train ------------------------------------------------------------------------------------


def test_freeze_encoder_trains_the_head_only(tiny_model_dir):
    assert trainable(freeze(classifier(tiny_model_dir), "encoder")) == HEAD


def test_freeze_n_layers(tiny_model_dir):
    model = classifier(tiny_model_dir)
    names = {name for name, _ in model.named_parameters()}
    kept = trainable(freeze(model, "1"))
    assert kept == {n for n in names if not n.startswith(("bert.embeddings.", "bert.layers.0."))}
    assert any(n.startswith("bert.layers.1.") for n in kept) and "bert.pooler.dense.weight" in kept
    assert trainable(freeze(classifier(tiny_model_dir), "2")) == names - {
        n for n in names if n.startswith(("bert.embeddings.", "bert.layers."))}


@pytest.mark.parametrize("spec, message", [("3", "only 2 layers"), ("-1", "encoder or a number"), ("top", "encoder or a number")])
def test_freeze_bad_input(tiny_model_dir, spec, message):
    with pytest.raises(BertkitError, match=message):
        freeze(classifier(tiny_model_dir), spec)


def test_bitfit_trains_biases_and_the_head(tiny_model_dir):
    model = bitfit(classifier(tiny_model_dir))
    expected = {n for n, _ in model.named_parameters() if n.endswith(".bias") or n in HEAD}
    assert trainable(model) == expected and "bert.layers.0.attention.norm.bias" in expected


def test_lora_trains_the_low_rank_matrices_and_the_head(tiny_model_dir):
    model = lora(classifier(tiny_model_dir), rank=4, targets="attention.qkv,attention.out")
    assert HEAD <= trainable(model)
    assert trainable(model) - HEAD == {f"bert.layers.{i}.attention.{m}.lora_{ab}.default.weight"
                                       for i in range(2) for m in ("qkv", "out") for ab in "AB"}
    assert model.bert.layers[0].attention.qkv.lora_A["default"].weight.shape == (4, 32)


@pytest.mark.parametrize("targets", ["attention.query", "attention.qkv,nothing", "classifier"])
def test_lora_targets_that_match_nothing_are_an_error(tiny_model_dir, targets):
    with pytest.raises(BertkitError, match="matches no layer of the encoder") as error:
        lora(classifier(tiny_model_dir), targets=targets)
    assert "\n" not in str(error.value) and "attention.qkv" in str(error.value)


def test_houlsby_adapters_start_as_identity_and_train_adapters_norms_head(tiny_model_dir):
    model = classifier(tiny_model_dir).eval()
    batch = {"input_ids": torch.tensor([[2, 7, 8, 9, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    before = model(**batch).logits
    bottleneck_adapters(model, size=4)
    assert torch.equal(model(**batch).logits, before)
    extra = trainable(model) - HEAD
    assert extra and all(".adapter." in n or ".norm." in n for n in extra)
    assert sum(".adapter." in n for n in extra) == 2 * 2 * 4  # 2 layers x 2 places x (down, up) x (weight, bias)


@pytest.mark.parametrize("options, message", [
    ({"freeze": "encoder", "peft": "lora"}, "not both"),
    ({"peft": "lora", "lora_rank": 0}, "lora_rank .--lora-rank. must be at least 1"),
    ({"peft": "prompt"}, "peft .--peft. must be one of lora, bitfit, adapter"),
    ({"lora_rank": 4}, "--lora-rank goes with --peft lora"),
    ({"peft": "lora", "adapter_size": 8}, "--adapter-size goes with --peft adapter"),
    ({"freeze": "half"}, "give encoder or a number"),
])
def test_options_bad_input(options, message):
    with pytest.raises(BertkitError, match=message):
        EfficientOptions(**options)


def test_prepare_prints_the_trainable_share(tiny_model_dir, capsys):
    model = prepare(classifier(tiny_model_dir), EfficientOptions(freeze="encoder"))
    total = sum(p.numel() for p in model.parameters())
    assert capsys.readouterr().err == f"training 66 of {total:,} parameters ({100 * 66 / total:.3g}%)\n"


# -- saving, reloading, merging -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_save_and_reload_give_identical_logits(method, tiny_model_dir, tmp_path):
    model = classifier(tiny_model_dir)
    lora(model, rank=4) if method == "lora" else bottleneck_adapters(model, size=4)
    torch.manual_seed(3)
    with torch.no_grad():  # as if trained: every trainable weight moved, the head and the zero-initialised ones too
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    save_trained(model, tmp_path / "a", tiny_model_dir)
    BertTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "a")
    batch = _batch(tiny_model_dir, TEXTS)
    assert torch.equal(_outputs(load_pretrained(tmp_path / "a")[0], batch)["logits"], _outputs(model, batch)["logits"])


@pytest.mark.parametrize("task, train, peft", [("ner", "train.conll", "lora"), ("qa", "train.json", "lora"),
                                               ("qa", "train.json", "adapter")])
def test_ner_and_qa_adapters_round_trip(task, train, peft, tiny_model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "model"
    extra = ["--max-seq-len", "24", "--doc-stride", "6"] if task == "qa" else []
    code, err = _finetune(tiny_model_dir, out, "--peft", peft, *extra, task=task, train=data_dir / train, capsys=capsys)
    assert code == 0, err
    assert "parameters (" in err and not (out / "model.safetensors").exists()
    model = load_model(out)[0]
    state = model.state_dict()
    head = {k for k in state if not k.startswith("bert.")}
    assert head == ({"classifier.weight", "classifier.bias"} if task == "ner" else {"qa_outputs.weight", "qa_outputs.bias"})
    saved_head = load_file(out / "head.safetensors")
    assert set(saved_head) == head and all(torch.equal(saved_head[k], state[k]) for k in head)
    # The adapter's zero-initialised half moved in training and came back from the directory.
    zero_at_start = ".lora_B." if peft == "lora" else ".adapter.up.weight"
    assert any(zero_at_start in k and v.abs().sum() > 0 for k, v in state.items())
    if task == "qa":
        predicted = bertkit.load(out).predict([{"question": "where does john live ?", "context": "john lives in paris ."}])
        assert set(predicted[0]) >= {"answer", "start", "end", "score"}


def test_adapter_directory_predicts_merges_and_loads_in_transformers(adapter_dirs, tiny_model_dir, tmp_path, capsys):
    out = adapter_dirs["lora"]
    assert {"config.json", "adapter_model.safetensors", "adapter_config.json", "head.safetensors", "vocab.txt"} <= {
        p.name for p in out.iterdir()} and not (out / "model.safetensors").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["bertkit_adapter"]["method"] == "lora"
    assert config["bertkit_adapter"]["base_model"] == str(tiny_model_dir.resolve())

    # Reloaded from the directory: the trained head and adapter, so not what a fresh head on the base gives.
    batch = _batch(out, TEXTS)
    adapted = _outputs(load_pretrained(out)[0], batch)["logits"]
    assert not torch.allclose(adapted, _outputs(classifier(tiny_model_dir), batch)["logits"], atol=1e-3)
    predictions = bertkit.load(out).predict(TEXTS)
    assert [p["score"] for p in predictions] == pytest.approx(adapted.softmax(-1).max(-1).values.tolist(), abs=1e-6)
    code, stdout, err = run_cli(["predict", "--model", str(out), *TEXTS], capsys)
    assert code == 0 and [json.loads(line)["label"] for line in stdout.splitlines()] == [p["label"] for p in predictions]

    code, _, err = run_cli(["export", "onnx", "--model", str(out), "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and "bertkit merge" in err and err.count("\n") == 1 and not (tmp_path / "x.onnx").exists()

    merged = tmp_path / "merged"
    code, _, err = run_cli(["merge", "--model", str(out), "--out", str(merged)], capsys)
    assert code == 0, err
    assert (merged / "model.safetensors").is_file() and "bertkit_adapter" not in (merged / "config.json").read_text()
    assert not list(tmp_path.glob(".bertkit-tmp-*"))
    torch.testing.assert_close(_outputs(load_pretrained(merged)[0], batch)["logits"], adapted, atol=1e-5, rtol=1e-5)
    theirs = transformers.BertForSequenceClassification.from_pretrained(merged).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(**batch).logits, adapted, atol=1e-5, rtol=1e-5)

    # The merged directory is a plain model: predict, export and the ONNX backend take it as it is.
    assert [p["score"] for p in bertkit.load(merged).predict(TEXTS)] == pytest.approx(
        [p["score"] for p in predictions], abs=1e-5)
    code, _, err = run_cli(["export", "onnx", "--model", str(merged)], capsys)
    assert code == 0, err
    onnx = bertkit.load(merged, backend="onnx").predict(TEXTS)
    assert [p["score"] for p in onnx] == pytest.approx([p["score"] for p in predictions], abs=1e-4)
    with TestClient(create_app(Predictor(merged))) as client:
        served = client.post("/v1/predict", json={"texts": TEXTS}).json()["predictions"]
    assert [p["score"] for p in served] == pytest.approx([p["score"] for p in predictions], abs=1e-5)

    code, _, err = run_cli(["merge", "--model", str(out), "--out", str(merged)], capsys)
    assert code == 2 and "already holds a model" in err


def test_houlsby_directory_cannot_merge_or_export(adapter_dirs, tmp_path, capsys):
    out = adapter_dirs["houlsby"]
    code, _, err = run_cli(["merge", "--model", str(out), "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "cannot be merged" in err and err.count("\n") == 1 and not (tmp_path / "m").exists()
    code, _, err = run_cli(["export", "onnx", "--model", str(out), "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and "Houlsby adapter directory" in err and err.count("\n") == 1
    entities = bertkit.load(out).predict(["john smith lives in paris ."])
    assert isinstance(entities[0]["entities"], list)


def test_freeze_saves_a_plain_model_with_the_frozen_weights_unchanged(tiny_model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "frozen"
    code, err = _finetune(tiny_model_dir, out, "--freeze", "1", train=data_dir / "train.csv", capsys=capsys)
    assert code == 0, err
    before, after = load_model(tiny_model_dir)[0].state_dict(), load_model(out)[0].bert.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith(("embeddings.", "layers.0.")))
    assert not torch.equal(after["layers.1.ffn.up.weight"], before["layers.1.ffn.up.weight"])


def test_python_api_keywords(tiny_model_dir, tmp_path, capsys):
    common = {"train": ROWS * 2, "model": str(tiny_model_dir), "epochs": 1, "batch_size": 8, "lr": 1e-2}
    seen = []
    frozen = bertkit.finetune("classify", out=tmp_path / "frozen", freeze="encoder",
                              prepare_model=lambda m: seen.append(trainable(m)) or m, **common)
    assert seen == [HEAD] and "training 66 of" in capsys.readouterr().err
    base = load_model(tiny_model_dir)[0].state_dict()
    assert all(torch.equal(frozen.model.bert.state_dict()[k], v) for k, v in base.items())
    adapted = bertkit.finetune("classify", out=tmp_path / "lora", peft="lora", lora_rank=2,
                               lora_targets="attention.qkv,ffn.up", **common)
    assert adapted.predict(["great film"])[0]["label"] in ("pos", "neg")
    assert json.loads((tmp_path / "lora" / "config.json").read_text())["bertkit_adapter"]["lora_targets"] == \
        "attention.qkv,ffn.up"
    with pytest.raises(BertkitError, match="the model has only 2 layers"):
        bertkit.finetune("classify", out=tmp_path / "x", freeze=3, **common)
    with pytest.raises(BertkitError, match="model= must be a model directory"):
        bertkit.finetune("classify", out=tmp_path / "y", peft="lora", **{**common, "model": frozen})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_bad_input_from_the_command_line(tiny_model_dir, data_dir, tmp_path, capsys):
    for extra, message in ((["--freeze", "5"], "only 2 layers"), (["--peft", "lora", "--lora-targets", "query"], "matches no layer")):
        code, err = _finetune(tiny_model_dir, tmp_path / "x", *extra, train=data_dir / "train.csv", capsys=capsys)
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "x").exists()
    code, _, err = run_cli(["merge", "--model", str(tiny_model_dir), "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "not an adapter directory" in err


def test_a_changed_base_model_is_refused(tiny_model_dir, data_dir, tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    out = tmp_path / "lora"
    code, err = _finetune(base, out, "--peft", "lora", train=data_dir / "train.csv", capsys=capsys)
    assert code == 0, err
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")
    with pytest.raises(BertkitError, match="changed since the adapter was trained"):
        load_pretrained(out)
    with pytest.raises(BertkitError, match="trained on other base weights"), shared_base(base):
        load_pretrained(out)


# -- one base, several adapters ------------------------------------------------------------------------------


def test_one_base_serves_several_adapters(adapter_dirs, tiny_model_dir):
    base, served = load_served(tiny_model_dir, {"sentiment": adapter_dirs["lora"], "entities": adapter_dirs["houlsby"]})
    assert base is None  # the tiny base is a bare encoder: it serves through its adapters only
    # One copy of the frozen base weights in memory, shared by both adapters.
    words = [p.model.bert.embeddings.word.weight for p in served.values()]
    assert words[0].data_ptr() == words[1].data_ptr()
    norms = [p.model.bert.layers[0].attention.norm.weight for p in served.values()]
    assert norms[0].data_ptr() != norms[1].data_ptr()  # Houlsby trains its own LayerNorms

    with TestClient(create_app(base, adapters=served)) as client:
        health = client.get("/health").json()
        assert health["task"] is None and health["adapters"] == ["sentiment", "entities"]
        listed = client.get("/v1/adapters").json()["adapters"]
        assert listed["sentiment"]["task"] == "classify" and listed["entities"]["task"] == "ner"
        sentiment = client.post("/v1/adapters/sentiment/predict", json={"texts": TEXTS})
        assert sentiment.status_code == 200
        direct = Predictor(adapter_dirs["lora"])
        expected = direct.predict(direct.from_texts(TEXTS))
        assert [p["label"] for p in sentiment.json()["predictions"]] == [p["label"] for p in expected]
        assert [p["score"] for p in sentiment.json()["predictions"]] == pytest.approx([p["score"] for p in expected], abs=1e-5)
        entities = client.post("/v1/adapters/entities/predict", json={"texts": ["john smith lives in paris ."]})
        direct = Predictor(adapter_dirs["houlsby"])
        assert entities.json()["predictions"] == direct.predict(direct.from_texts(["john smith lives in paris ."]))

        unknown = client.post("/v1/adapters/nope/predict", json={"texts": TEXTS})
        assert unknown.status_code == 404 and "no adapter 'nope'" in unknown.json()["detail"]
        assert "sentiment, entities" in unknown.json()["detail"] and "\n" not in unknown.json()["detail"]
        bare = client.post("/v1/predict", json={"texts": TEXTS})
        assert bare.status_code == 404 and "/v1/adapters/{name}/predict" in bare.json()["detail"]
        wrong_task = client.post("/v1/adapters/sentiment/predict", json={"question": "q", "context": "c"})
        assert wrong_task.status_code == 422


def test_a_fine_tuned_base_serves_itself_and_its_adapters(adapter_dirs, tiny_model_dir, tmp_path):
    plain = tmp_path / "plain"
    bertkit.finetune("classify", train=ROWS, out=plain, model=str(tiny_model_dir), epochs=1, batch_size=8)
    with pytest.raises(BertkitError, match="trained on other base weights"):
        load_served(plain, {"sentiment": adapter_dirs["lora"]})
    base, served = load_served(tiny_model_dir, {"sentiment": adapter_dirs["lora"]})
    with TestClient(create_app(Predictor(plain), adapters=served)) as client:
        assert client.get("/health").json()["adapters"] == ["sentiment"]
        assert client.post("/v1/predict", json={"texts": TEXTS}).status_code == 200
        assert client.post("/v1/adapters/sentiment/predict", json={"texts": TEXTS}).status_code == 200


@pytest.mark.parametrize("specs, message", [(["noequals"], "give NAME=DIR"), (["a/b=x"], "give NAME=DIR"),
                                            (["a=x", "a=y"], "given twice"), (["a="], "give NAME=DIR")])
def test_adapter_flag_bad_input(specs, message):
    with pytest.raises(BertkitError, match=message):
        parse_adapters(specs)
    assert parse_adapters(["a=x", "b.2=y"]) == {"a": "x", "b.2": "y"}


def test_serve_adapters_bad_input_from_the_command_line(adapter_dirs, tiny_model_dir, capsys):
    code, _, err = run_cli(["serve", "--model", str(tiny_model_dir), "--adapter", "x"], capsys)
    assert code == 2 and "NAME=DIR" in err and err.count("\n") == 1
    code, _, err = run_cli(["serve", "--model", str(tiny_model_dir), "--adapter", f"a={adapter_dirs['lora']}",
                            "--backend", "onnx"], capsys)
    assert code == 2 and "torch backend" in err and err.count("\n") == 1
