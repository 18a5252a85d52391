"""benchmarks/pretraining_helps.py (the former main job), shrunk: pre-train, fine-tune both ways, compare, predict, plot."""

from __future__ import annotations

import json

from benchmarks.pretraining_helps import StoryConfig, run_story


def test_story_runs_end_to_end_on_a_small_budget(tmp_path, capsys):
    config = StoryConfig(out=str(tmp_path / "story"), model_size="tiny", pretrain_steps=3, pretrain_batch_size=8,
                         max_seq_len=32, vocab_size=1500, train_size=32, dev_size=16, test_size=32, finetune_epochs=1, finetune_lrs=(1e-3, 1e-5),
                         seeds=(1, 2),
                         max_documents=300)
    results = run_story(config)
    out = tmp_path / "story"
    for name in ("comparison.png", "results.json", "pretrained/training_curve.png", "pretrained/model.safetensors",
                 "random_init/model.safetensors", "finetuned/pre-trained-lr1e-05-seed1/metrics.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["accuracy"] == results["accuracy"]
    assert {len(v) for v in results["accuracy"].values()} == {2}
    # Each start's rate is the one with the best dev accuracy, and its later seeds use that rate.
    for name, by_lr in results["dev_accuracy_by_lr"].items():
        assert set(by_lr) == {"0.001", "1e-05"}
        assert by_lr[f"{results['chosen_lr'][name]:g}"] == max(by_lr.values())
        assert (out / "finetuned" / f"{name.replace(' ', '_')}-lr{results['chosen_lr'][name]:g}-seed2" / "metrics.json").is_file()
    assert set(results["mlm_against_bigram"]) >= {"model_mlm_loss", "bigram_mlm_loss"}
    printed = capsys.readouterr().out
    assert "pre-training adds" in printed and printed.count("gold") == 5
