"""Freezing, BitFit, LoRA (peft) and Houlsby adapters: what trains, the adapter directory, merge, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from bertkit.checkpoint import load_model, load_pretrained
from bertkit.efficient import EfficientOptions, bitfit, bottleneck_adapters, freeze, lora, merge, prepare
from bertkit.errors import BertkitError
from bertkit.heads import BertForSequenceClassification
from bertkit.inference import Predictor
from bertkit.tokenizer import BertTokenizer
from tests.conftest import run_cli
from tests.test_finetune_classify import sentiment_files  # noqa: F401  (a fixture)

HEAD = {"classifier.weight", "classifier.bias"}


def classifier(tiny_model_dir: Path) -> BertForSequenceClassification:
    config = load_model(tiny_model_dir)[0].config
    config.id2label = {0: "neg", 1: "pos"}
    return load_model(tiny_model_dir, "BertForSequenceClassification", config)[0]


def trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


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
    lora_names = trainable(model) - HEAD
    assert HEAD <= trainable(model)
    assert lora_names == {f"bert.layers.{i}.attention.{m}.lora_{ab}.default.weight"
                          for i in range(2) for m in ("qkv", "out") for ab in "AB"}
    assert model.bert.layers[0].attention.qkv.lora_A["default"].weight.shape == (4, 32)


@pytest.mark.parametrize("targets", ["attention.query", "attention.qkv,nothing", "classifier"])
def test_lora_targets_that_match_nothing_are_an_error(tiny_model_dir, targets):
    with pytest.raises(BertkitError, match="matches no layer of the encoder"):
        lora(classifier(tiny_model_dir), targets=targets)


def test_houlsby_adapters_start_as_identity_and_train_adapters_norms_head(tiny_model_dir):
    model = classifier(tiny_model_dir).eval()
    batch = {"input_ids": torch.tensor([[2, 7, 8, 9, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    before = model(**batch).logits
    bottleneck_adapters(model, size=4)
    assert torch.equal(model(**batch).logits, before)
    extra = trainable(model) - HEAD
    assert extra and all(".adapter." in n or ".norm." in n for n in extra)
    assert sum(".adapter." in n for n in extra) == 2 * 2 * 4  # 2 layers x 2 places x (down, up) x (weight, bias)


def test_options_bad_input():
    with pytest.raises(BertkitError, match="not both"):
        EfficientOptions(freeze="encoder", peft="lora")
    with pytest.raises(BertkitError, match="lora-rank 0 is out of range"):
        EfficientOptions(peft="lora", lora_rank=0)


def test_prepare_prints_the_trainable_share(tiny_model_dir, capsys):
    model = prepare(classifier(tiny_model_dir), EfficientOptions(freeze="encoder"))
    total = sum(p.numel() for p in model.parameters())
    assert capsys.readouterr().err == f"training 66 of {total:,} parameters ({100 * 66 / total:.3g}%)\n"


def _logits(model_dir: Path, texts: list[str]) -> torch.Tensor:
    model, _, _ = load_pretrained(model_dir)
    with torch.no_grad():
        return model.eval()(**_batch(model_dir, texts)).logits


TEXTS = ["great film", "awful plot", "i love the story"]


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_adapter_directory_round_trip_merge_and_transformers(method, tiny_model_dir, sentiment_files, tmp_path, capsys):
    train, dev = sentiment_files
    out = tmp_path / method
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev),
                            "--out", str(out), "--epochs", "2", "--batch-size", "8", "--lr", "1e-2", "--peft", method,
                            "--lora-rank", "4", "--adapter-size", "8"], capsys)
    assert code == 0, err
    assert "parameters (" in err
    files = {"config.json", "adapter_model.safetensors", "head.safetensors", "vocab.txt"}
    assert files <= {p.name for p in out.iterdir()} and not (out / "model.safetensors").exists()
    assert (out / "adapter_config.json").is_file() == (method == "lora")
    config = json.loads((out / "config.json").read_text())
    assert config["bertkit_adapter"]["method"] == method and config["bertkit_adapter"]["base_model"] == str(tiny_model_dir.resolve())

    # Reloaded from the directory: the trained head and adapter, so not what a fresh head on the base gives.
    adapted = _logits(out, TEXTS)
    base = classifier(tiny_model_dir).eval()
    with torch.no_grad():
        assert not torch.allclose(adapted, base(**_batch(out, TEXTS)).logits, atol=1e-3)
    predictions = Predictor(out).predict(Predictor(out).from_texts(TEXTS))
    assert [p["score"] for p in predictions] == pytest.approx(adapted.softmax(-1).max(-1).values.tolist(), abs=1e-6)

    code, _, err = run_cli(["export", "onnx", "--model", str(out)], capsys)
    assert code == 2 and "is an adapter directory" in err

    merged = tmp_path / "merged"
    if method == "adapter":
        code, _, err = run_cli(["merge", "--model", str(out), "--out", str(merged)], capsys)
        assert code == 2 and "cannot be merged" in err and err.count("\n") == 1 and not merged.exists()
        return
    code, _, err = run_cli(["merge", "--model", str(out), "--out", str(merged)], capsys)
    assert code == 0, err
    assert (merged / "model.safetensors").is_file() and "bertkit_adapter" not in (merged / "config.json").read_text()
    torch.testing.assert_close(_logits(merged, TEXTS), adapted, atol=1e-5, rtol=1e-5)
    theirs = transformers.BertForSequenceClassification.from_pretrained(merged).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(**_batch(out, TEXTS)).logits, adapted, atol=1e-5, rtol=1e-5)


def _batch(model_dir: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    batch = BertTokenizer.from_pretrained(model_dir)(texts)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_freeze_saves_a_plain_model_with_the_frozen_weights_unchanged(tiny_model_dir, sentiment_files, tmp_path, capsys):
    train, _ = sentiment_files
    out = tmp_path / "frozen"
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--out", str(out),
                            "--epochs", "1", "--batch-size", "8", "--lr", "1e-2", "--freeze", "1"], capsys)
    assert code == 0, err
    before, after = load_model(tiny_model_dir)[0].state_dict(), load_model(out)[0].bert.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith(("embeddings.", "layers.0.")))
    assert not torch.equal(after["layers.1.ffn.up.weight"], before["layers.1.ffn.up.weight"])


def test_bad_input_from_the_command_line(tiny_model_dir, sentiment_files, tmp_path, capsys):
    train, _ = sentiment_files
    common = ["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train), "--out", str(tmp_path / "x")]
    for extra, message in ((["--freeze", "5"], "only 2 layers"), (["--peft", "lora", "--lora-targets", "query"], "matches no layer")):
        code, _, err = run_cli(common + extra, capsys)
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "x").exists()
    code, _, err = run_cli(["merge", "--model", str(tiny_model_dir), "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "not an adapter directory" in err


def test_a_changed_base_model_is_refused(tiny_model_dir, sentiment_files, tmp_path, capsys):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    train, _ = sentiment_files
    out = tmp_path / "lora"
    code, _, err = run_cli(["finetune", "classify", "--model", str(base), "--train", str(train), "--out", str(out),
                            "--epochs", "1", "--batch-size", "8", "--peft", "lora"], capsys)
    assert code == 0, err
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")
    with pytest.raises(BertkitError, match="changed since the adapter was trained"):
        load_pretrained(out)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_save_and_reload_give_identical_logits(method, tiny_model_dir, tmp_path):
    from bertkit.efficient import save_trained

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
    with torch.no_grad():
        assert torch.equal(load_pretrained(tmp_path / "a")[0].eval()(**batch).logits, model.eval()(**batch).logits)
