"""Runs that fail loudly: a diverged loss, a resume with other data or settings, a crash mid-epoch."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bertkit.callbacks import to_json
from bertkit.errors import BertkitError
from bertkit.trainer import STATE_DIR, TMP_PREFIX, Trainer, TrainConfig
from tests.test_trainer import features, tiny_classifier


class Interrupted(Exception):
    pass


def die_after(monkeypatch, steps: int):
    original = Trainer._step

    def step_then_die(self):
        original(self)
        if self.global_step == steps:
            raise Interrupted

    monkeypatch.setattr(Trainer, "_step", step_then_die)
    return original


def test_a_diverged_loss_stops_with_advice_and_is_never_the_best(tmp_path):
    saved = []
    config = TrainConfig(epochs=3, batch_size=8, lr=1e12, max_grad_norm=0.0, bf16=False)
    trainer = Trainer(tiny_classifier(), features(), config, tmp_path, 0, save=lambda m, d: saved.append(d),
                      evaluate=lambda m: {"accuracy": 0.5}, main_metric="accuracy")
    with pytest.raises(BertkitError, match=r"--lr.*--max-grad-norm") as error:
        trainer.fit()
    assert "\n" not in str(error.value)
    assert saved == [] and not (tmp_path / "metrics.json").exists()


def test_metrics_json_has_no_nan_or_infinity():
    text = to_json({"best": float("nan"), "epochs": [{"loss": float("inf")}, {"loss": 1.0}]})
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert data["best"] is None and data["epochs"][0]["loss"] is None and data["epochs"][1]["loss"] == 1.0
    assert "null" in data["null_values"]


def interrupted_run(tmp_path, monkeypatch, config: TrainConfig):
    original = die_after(monkeypatch, 4)
    with pytest.raises(Interrupted):
        Trainer(tiny_classifier(), features(), config, tmp_path, 0, save=lambda m, d: None).fit()
    monkeypatch.setattr(Trainer, "_step", original)


def test_resume_refuses_other_settings_or_data_unless_allowed(tmp_path, monkeypatch):
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, bf16=False, save_every=3)
    interrupted_run(tmp_path, monkeypatch, config)
    changed = TrainConfig(epochs=2, batch_size=8, lr=1e-2, bf16=False, save_every=3)
    with pytest.raises(BertkitError, match=r"lr 0.001 -> 0.01.*--allow-changes"):
        Trainer(tiny_classifier(), features(), changed, tmp_path, 0, save=lambda m, d: None).fit(resume=True)
    with pytest.raises(BertkitError, match="the training data"):
        Trainer(tiny_classifier(), features(30), config, tmp_path, 0, save=lambda m, d: None).fit(resume=True)
    changed.allow_changes = True
    history = Trainer(tiny_classifier(), features(), changed, tmp_path, 0, save=lambda m, d: None).fit(resume=True)
    assert len(history.changes) == 1 and "lr 0.001 -> 0.01" in history.changes[0]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["resumed_with_changes"] == history.changes and metrics["config"]["lr"] == 0.01


def test_pretrain_resume_names_a_changed_setting(tmp_path, monkeypatch, english_texts):
    from bertkit.pretraining import PretrainSettings, pretrain

    lines = [t[:120] for t in english_texts[:40]]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(lines[i : i + 5]) for i in range(0, 40, 5)) + "\n", encoding="utf-8")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 64, "max_position_embeddings": 64}))

    def settings(**train) -> PretrainSettings:
        options = {"epochs": 1, "batch_size": 4, "lr": 1e-3, "bf16": False, "max_steps": 6, "save_every": 2, **train}
        return PretrainSettings(corpus=[str(corpus)], out=str(tmp_path / "out"), vocab_size=300, config=str(config),
                                max_seq_len=32, train=TrainConfig(**options), resume=True)

    original = die_after(monkeypatch, 3)
    first = settings()
    first.resume = False
    with pytest.raises(Interrupted):
        pretrain(first)
    monkeypatch.setattr(Trainer, "_step", original)
    with pytest.raises(BertkitError, match="batch_size 4 -> 8"):
        pretrain(settings(batch_size=8))
    history = pretrain(settings(batch_size=8, allow_changes=True))
    assert "batch_size 4 -> 8" in history.changes[0]


def finetune_cli(tmp_path, out: str, *extra: str) -> int:
    from bertkit.cli import main

    return main(["finetune", "classify", "--model", str(tmp_path / "model"), "--train", str(tmp_path / "train.csv"),
                 "--out", str(tmp_path / out), "--epochs", "2", "--batch-size", "4", "--lr", "1e-3",
                 "--no-bf16", *extra])


def test_finetune_save_every_resumes_mid_epoch_like_an_uninterrupted_run(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(tiny_model_dir, tmp_path / "model")
    rows = [("good fine great", "pos"), ("bad awful poor", "neg")] * 6  # 3 steps an epoch
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows), encoding="utf-8")
    assert finetune_cli(tmp_path, "full") == 0
    original = die_after(monkeypatch, 2)  # mid-epoch 1; the state from step 1 is the one to resume
    with pytest.raises(Interrupted):
        finetune_cli(tmp_path, "cut", "--save-every", "1")
    monkeypatch.setattr(Trainer, "_step", original)
    debris = tmp_path / "cut" / STATE_DIR / f"{TMP_PREFIX}killed-save"
    debris.write_bytes(b"half a state")  # what a kill during a save leaves
    assert finetune_cli(tmp_path, "cut", "--save-every", "1", "--resume") == 0
    full, cut = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    for key in full:
        torch.testing.assert_close(cut[key], full[key], rtol=0, atol=1e-6, msg=key)
    losses = [json.loads((tmp_path / d / "metrics.json").read_text())["epochs"][-1]["train_loss"] for d in ("full", "cut")]
    assert math.isclose(losses[0], losses[1], abs_tol=1e-6)
    assert not list((tmp_path / "cut").rglob(f"{TMP_PREFIX}*"))


def test_inference_precision_follows_native_bf16(monkeypatch):
    from bertkit import runtime

    assert runtime.use_bf16(torch.device("cpu")) == runtime.bf16_available(torch.device("cpu"))
    for native in (True, False):
        monkeypatch.setattr(runtime, "bf16_available", lambda device, native=native: native)
        assert runtime.use_bf16(torch.device("cpu")) is native
        assert runtime.use_bf16(torch.device("cpu"), fp32=True) is False
