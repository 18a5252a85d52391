"""The default learning rate: a rule on the model's size and the task, used when the user gives no --lr."""

from __future__ import annotations

import json

import pytest

import bertkit
from bertkit.defaults import default_lr, default_lr_for
from tests.conftest import run_cli
from tests.test_finetune_classify import NEGATIVE, POSITIVE

ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]


@pytest.mark.parametrize(("hidden", "layers", "task", "expected"), [
    (768, 12, "classify", 3e-5),  # BERT-base: inside the BERT paper's 2e-5..5e-5
    (768, 12, "qa", 3e-5),
    (768, 12, "ner", 5e-5),
    (384, 6, "classify", 1e-4),  # all-MiniLM-L6-v2
    (384, 6, "qa", 1e-4),
    (384, 6, "ner", 2e-4),
    (512, 8, "classify", 5e-5),  # BERT-medium
    (512, 4, "ner", 1e-4),  # BERT-small
    (256, 4, "classify", 1e-4),  # BERT-mini
    (256, 4, "ner", 2e-4),
    (128, 2, "classify", 3e-4),  # BERT-tiny
    (128, 2, "ner", 5e-4),
    (1024, 24, "classify", 1e-5),  # BERT-large: two thirds of 2e-5, to one significant figure
    (1024, 24, "ner", 2e-5),
])
def test_the_rule_gives_the_documented_rates(hidden, layers, task, expected):
    assert default_lr(hidden, layers, task) == pytest.approx(expected)


def test_smaller_models_and_token_tagging_get_higher_rates():
    widths = [1024, 768, 512, 384, 256, 128]
    for task in ("classify", "ner"):
        rates = [default_lr(width, 6, task) for width in widths]
        assert rates == sorted(rates) and rates[0] < rates[-1]
    assert all(default_lr(w, 6, "ner") > default_lr(w, 6, "classify") for w in widths)


def test_finetune_without_lr_uses_the_rule_and_records_it(tiny_model_dir, tmp_path, capsys):
    result = bertkit.finetune("classify", ROWS, out=tmp_path / "m", model=str(tiny_model_dir), epochs=1, batch_size=4)
    config = json.loads((tmp_path / "m" / "metrics.json").read_text())["config"]
    expected = default_lr(32, 2, "classify")  # the tiny model: hidden 32, 2 layers
    assert config["lr"] == expected and config["lr_source"] == "default rule"
    err = capsys.readouterr().err
    assert err.count("learning rate") == 1 and f"learning rate {expected:g}" in err
    assert result.history.steps


def test_the_users_lr_wins(tiny_model_dir, tmp_path, capsys):
    bertkit.finetune("classify", ROWS, out=tmp_path / "m", model=str(tiny_model_dir), epochs=1, batch_size=4, lr=1e-3)
    config = json.loads((tmp_path / "m" / "metrics.json").read_text())["config"]
    assert config["lr"] == 1e-3 and config["lr_source"] == "user"
    assert "learning rate" not in capsys.readouterr().err


def test_the_cli_default_and_flag(tiny_model_dir, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    base = ["finetune", "classify", "--train", str(train), "--model", str(tiny_model_dir),
            "--epochs", "1", "--batch-size", "4"]
    code, _, err = run_cli([*base, "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "learning rate 0.0003: the default for classify" in err
    code, _, err = run_cli([*base, "--out", str(tmp_path / "b"), "--lr", "2e-4"], capsys)
    assert code == 0 and "the default for" not in err
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["config"]["lr"] == 2e-4
    code, _, err = run_cli([*base, "--out", str(tmp_path / "c"), "--lr", "0"], capsys)
    assert code == 2 and "lr (--lr) must be above 0" in err and len(err.strip().splitlines()) == 1


def test_a_resumed_default_run_keeps_its_rate(tiny_model_dir, tmp_path):
    """The rule gives the same rate again on --resume, so the saved run's fingerprint matches."""
    from bertkit.callbacks import Callback
    from bertkit.finetuning import finetune
    from bertkit.tasks import ClassifyTask
    from bertkit.trainer import TrainConfig

    class Interrupt(Callback):
        def on_step_end(self, trainer, record):
            if trainer.global_step == 2:
                raise KeyboardInterrupt

    out, config = tmp_path / "m", TrainConfig(epochs=2, batch_size=4, save_every=1)
    with pytest.raises(KeyboardInterrupt):
        finetune(ClassifyTask(), ROWS, out, str(tiny_model_dir), train_config=config, callbacks=[Interrupt()])
    history = finetune(ClassifyTask(), ROWS, out, str(tiny_model_dir), train_config=config, resume=True)
    assert not history.changes and json.loads((out / "metrics.json").read_text())["config"]["lr_source"] == "default rule"


def test_reads_the_size_from_a_model_config(minilm_dir):
    from bertkit.checkpoint import load_config

    config = load_config(minilm_dir)
    assert (config.hidden_size, config.num_hidden_layers) == (384, 6)
    assert default_lr_for(config, "classify") == 1e-4 and default_lr_for(config, "ner") == 2e-4


def test_a_trainer_without_a_rate_is_a_one_line_error():
    from torch import nn

    from bertkit.trainer import Trainer, TrainConfig

    with pytest.raises(bertkit.BertkitError, match="lr is None"):
        Trainer(nn.Linear(2, 2), [{"input_ids": [1, 2]}], TrainConfig(), "unused", 0, lambda m, d: None)
