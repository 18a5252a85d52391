"""Atomic writes: a file appears complete or not at all, and a killed writer's debris is cleaned up."""

import pytest
import torch

from bertkit import checkpoint
from bertkit.checkpoint import load_model, save_model
from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.fileio import TEMP_PREFIX, atomic_path, atomic_write_bytes, atomic_write_text, remove_debris
from bertkit.heads import BertForSequenceClassification

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)


def test_atomic_writes_replace_the_file_and_leave_nothing_else(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    atomic_write_text(target, "néw\n")
    assert target.read_text(encoding="utf-8") == "néw\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "out.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(TEMP_PREFIX)
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_an_unwritable_directory_is_a_bertkit_error(tmp_path):
    with pytest.raises(BertkitError, match="cannot write there"):
        atomic_write_text(tmp_path / "missing" / "x.txt", "x")


def test_an_interrupted_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    model = BertForSequenceClassification(BertConfig(**TINY))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", fail)
    with pytest.raises(OSError):
        save_model(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_next_save_removes_debris_of_a_killed_one(tmp_path):
    tmp_path.joinpath(TEMP_PREFIX + "abc-model.safetensors").write_bytes(b"half")
    tmp_path.joinpath("tmpk3j4.tmp").write_bytes(b"half")  # what save_model's temporaries used to be called
    tmp_path.joinpath("notes.tmp.txt").write_text("the user's")
    model = BertForSequenceClassification(BertConfig(**TINY))
    save_model(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "notes.tmp.txt"]
    loaded, _ = load_model(tmp_path)
    torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)
    assert remove_debris(tmp_path) == []
