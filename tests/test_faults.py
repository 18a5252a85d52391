"""Fault injection, the fast part: a full disk and an interrupted save, in-process.

Each must end in a one-line error (or leave the previous file whole) and leave no temporary file. The `kill -9`
sweeps over `finetune`, `pretrain` and `predict --output` take minutes and live in benchmarks/faults.py.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_finetune_classify import NEGATIVE, POSITIVE, write_csv


def debris(directory: Path) -> list[Path]:
    """Temporary files a write left behind (today's `*.tmp` and the `.bertkit-tmp-*` names of bertkit.fileio)."""
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".bertkit-tmp-")]


@pytest.fixture()
def train_csv(tmp_path) -> Path:
    rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    return write_csv(tmp_path / "train.csv", rows * 2)


def test_full_disk_while_saving_a_model(tiny_model_dir, train_csv, tmp_path, capsys, monkeypatch):
    """ENOSPC in the middle of writing the weights: a one-line error, exit 2, no model and no temporary file."""
    import bertkit.checkpoint

    def full_disk(state, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1000)  # part of the file made it to the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(bertkit.checkpoint, "save_file", full_disk)
    out = tmp_path / "out"
    code, _, err = run_cli(["finetune", "classify", "--model", str(tiny_model_dir), "--train", str(train_csv),
                            "--epochs", "1", "--out", str(out)], capsys)
    errors = [line for line in err.splitlines() if line.startswith("bertkit: error:")]
    assert code == 2 and len(errors) == 1 and "No space left on device" in errors[0], err
    assert err.endswith(errors[0] + "\n") and "Traceback" not in err
    assert not (out / "model.safetensors").exists()
    assert not debris(tmp_path), debris(tmp_path)


def test_interrupted_save_keeps_the_previous_model(tiny_model_dir, tmp_path, monkeypatch):
    """A save cut off part-way (the process dies while writing) leaves the old weights whole under the real name."""
    import bertkit.checkpoint
    from bertkit.checkpoint import load_model, save_model

    model, _ = load_model(tiny_model_dir, "BertModel")
    save_model(model, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def cut_off(state, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise KeyboardInterrupt  # stands in for the end of the process mid-write

    monkeypatch.setattr(bertkit.checkpoint, "save_file", cut_off)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert not debris(tmp_path), debris(tmp_path)
