"""Bad model directories fail with a BertkitError whose message is one line and names the problem."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bertkit.checkpoint import load_model, save_model
from bertkit.errors import BertkitError
from bertkit.heads import BertForPreTraining
from bertkit.config import BertConfig

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def load_error(path, **kwargs) -> str:
    """Load `path`, expect a BertkitError, and return its message after checking it is one line."""
    with pytest.raises(BertkitError) as info:
        load_model(path, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message, repr(message)
    return message


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A valid saved BertForPreTraining directory (config.json + model.safetensors)."""
    torch.manual_seed(0)
    path = tmp_path / "model"
    save_model(BertForPreTraining(BertConfig(**TINY)), path)
    load_model(path)  # valid as written
    return path


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def edit_weights(path: Path, edit) -> None:
    state = load_file(path / "model.safetensors")
    edit(state)
    save_file(state, str(path / "model.safetensors"))


def test_missing_directory(tmp_path):
    message = load_error(tmp_path / "no_such_model")
    assert "no_such_model" in message and "no such model directory" in message


def test_file_instead_of_directory(model_dir):
    message = load_error(model_dir / "config.json")
    assert "config.json" in message and "is a file" in message


def test_directory_without_config(model_dir):
    (model_dir / "config.json").unlink()
    message = load_error(model_dir)
    assert "no config.json" in message and str(model_dir) in message


def test_config_not_json(model_dir):
    (model_dir / "config.json").write_text('{"hidden_size": 32,\n  oops\n}')
    message = load_error(model_dir)
    assert "config.json" in message and "not valid JSON" in message


def test_config_json_not_an_object(model_dir):
    (model_dir / "config.json").write_text("[1, 2, 3]")
    assert "expected a JSON object" in load_error(model_dir)


def test_config_of_another_model_type(model_dir):
    edit_config(model_dir, model_type="gpt2")
    message = load_error(model_dir)
    assert "gpt2" in message and "BERT" in message


def test_config_with_relative_position_embeddings(model_dir):
    edit_config(model_dir, position_embedding_type="relative_key")
    assert "relative_key" in load_error(model_dir)


def test_config_with_wrong_value_types(model_dir):
    """Weak message in bertkit: this raises a BertkitError, but it reads "config does not describe a BERT
    model: not all arguments converted during string formatting" (from "big" % 4) and names no field."""
    edit_config(model_dir, hidden_size="big")
    assert "hidden_size" in load_error(model_dir)


@pytest.mark.parametrize("heads", [0, -4], ids=["zero", "negative"])
def test_config_with_impossible_head_count(model_dir, heads):
    """0 heads must not end in a ZeroDivisionError, nor -4 pass because 32 % -4 == 0."""
    edit_config(model_dir, num_attention_heads=heads)
    assert "num_attention_heads" in load_error(model_dir)


def test_config_with_null_size(model_dir):
    """A null size must be caught in the config, not later inside torch (a TypeError from nn.Embedding)."""
    edit_config(model_dir, vocab_size=None)
    assert "vocab_size" in load_error(model_dir)


def test_unsupported_architecture(model_dir):
    edit_config(model_dir, architectures=["BertLMHeadModel"])
    assert "BertLMHeadModel" in load_error(model_dir)
    assert "BertFoo" in load_error(model_dir, architecture="BertFoo")


def test_weights_for_another_size(model_dir):
    edit_config(model_dir, hidden_size=64, intermediate_size=128)  # the weights are hidden 32
    message = load_error(model_dir)
    assert "shape" in message and "(99, 32)" in message and "(99, 64)" in message


def test_weights_with_more_vocabulary_than_config(model_dir):
    edit_config(model_dir, vocab_size=98)
    message = load_error(model_dir)
    assert "embeddings.word" in message and "shape" in message


def test_missing_encoder_weight(model_dir):
    edit_weights(model_dir, lambda state: state.pop("bert.encoder.layer.1.output.dense.weight"))
    message = load_error(model_dir)
    assert "missing" in message and "layers.1.ffn.down.weight" in message


def test_missing_query_weight(model_dir):
    edit_weights(model_dir, lambda state: state.pop("bert.encoder.layer.0.attention.self.query.weight"))
    message = load_error(model_dir)
    assert "layer 0" in message and "query" in message


def test_config_has_more_layers_than_weights(model_dir):
    edit_config(model_dir, num_hidden_layers=3)
    message = load_error(model_dir)
    assert "missing" in message and "layers.2." in message


def test_no_weight_file(model_dir):
    (model_dir / "model.safetensors").unlink()
    message = load_error(model_dir)
    assert "no weights found" in message and "model.safetensors" in message


@pytest.mark.parametrize(
    "damage",
    [lambda data: b"this is not a safetensors file" * 3, lambda data: data[: len(data) // 2], lambda data: b""],
    ids=["garbage", "truncated", "empty"],
)
def test_corrupt_safetensors(model_dir, damage):
    path = model_dir / "model.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    message = load_error(model_dir)
    assert "model.safetensors" in message and "cannot read weights" in message


def _torch_save_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a pickle" * 3,  # torch.load raises IndexError
        b"garbage" * 10,  # torch.load raises pickle.UnpicklingError (a multi-line message)
        b"",  # torch.load raises EOFError with an empty message
        _torch_save_bytes([1, 2, 3]),  # a valid pickle, but not a state dict
    ],
    ids=["garbage-index-error", "garbage-unpickling-error", "empty", "not-a-dict"],
)
def test_corrupt_pytorch_model_bin(model_dir, content):
    """Damaged pickles fail in many ways (IndexError, UnpicklingError, an EOFError with no message, a
    pickle that is not a dict): each must end as one BertkitError line."""
    (model_dir / "model.safetensors").unlink()
    (model_dir / "pytorch_model.bin").write_bytes(content)
    message = load_error(model_dir)
    assert "pytorch_model.bin" in message and "cannot read weights" in message


def test_corrupt_weight_index(model_dir):
    (model_dir / "model.safetensors").unlink()
    (model_dir / "model.safetensors.index.json").write_text("{not json")
    message = load_error(model_dir)
    assert "model.safetensors.index.json" in message and "index" in message


def test_hub_id_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads its environment once, at import; transformers (imported by other test modules)
    # may already have imported it, so set the module constants too. A fresh, empty cache guarantees that
    # nothing is found locally.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    start = time.monotonic()
    message = load_error("google-bert/bert-base-uncased")
    elapsed = time.monotonic() - start
    assert "google-bert/bert-base-uncased" in message and "could not be fetched" in message
    assert elapsed < 5, f"took {elapsed:.1f} s"
