"""Continual learning (`finetune classify --continual`): what each stage keeps in its model directory, the grown
head, the rehearsal mix, the EWC penalty against its definition, the forgetting table, and the one-line errors."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import bertkit
from bertkit.checkpoint import load_hf_state
from bertkit.continual import (EWCLoss, add_fisher, balanced_sample, fisher_diagonal, load_ewc, read_examples,
                               rehearsal_draws)
from bertkit.errors import BertkitError
from bertkit.tasks import ClassifyTask
from tests.conftest import run_cli

SENTIMENT = ([{"text": t, "label": "pos"} for t in ("good fun movie", "great story", "love the actor", "fun plot",
                                                      "a great film", "good movie", "love it", "great fun")]
             + [{"text": t, "label": "neg"} for t in ("bad boring film", "awful plot", "hate the story", "boring",
                                                        "an awful movie", "bad actor")])
PLACES = ([{"text": t, "label": "where"} for t in ("john lives in paris", "smith lives in new york", "where does he live ?",
                                                    "she lives in paris")]
          + [{"text": t, "label": "work"} for t in ("john works at google", "who works at google ?", "smith works",
                                                     "she works at google")])
TRAIN = {"epochs": 2, "batch_size": 4, "lr": 1e-3}


@pytest.fixture(scope="module")
def stage_one(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("continual") / "stage1"
    bertkit.finetune("classify", SENTIMENT, dev=SENTIMENT, out=out, model=tiny_model_dir, rehearsal_size=6,
                     stage_name="sentiment", **TRAIN)
    return out


def test_a_plain_run_keeps_a_class_balanced_sample_and_its_stage(stage_one):
    kept = read_examples(stage_one / "rehearsal.jsonl", ClassifyTask())
    assert len(kept) == 6 and Counter(e.label for _, e in kept) == {"pos": 3, "neg": 3}
    assert {stage for stage, _ in kept} == {"sentiment"}
    assert all({"text": e.text, "label": e.label} in SENTIMENT for _, e in kept)
    stages = json.loads((stage_one / "stages.json").read_text())
    (stage,) = stages["stages"]
    assert (stage["name"], stage["task"], stage["labels"], stage["dev"]) == (
        "sentiment", "classify", ["neg", "pos"], "stages/sentiment-dev.jsonl")
    assert len(read_examples(stage_one / stage["dev"], ClassifyTask())) == stage["dev_examples"] == len(SENTIMENT)
    metrics = json.loads((stage_one / "metrics.json").read_text())
    assert stages["scores"] == {"sentiment": metrics["best"]} and "forgetting" not in metrics


def test_balanced_sample_shares_the_room_and_keeps_small_groups_whole():
    items = [("a", i) for i in range(10)] + [("b", i) for i in range(2)] + [("c", i) for i in range(10)]
    chosen = balanced_sample(items, 10, key=lambda item: item[0], seed=0)
    assert Counter(group for group, _ in chosen) == {"a": 4, "b": 2, "c": 4} and len(set(chosen)) == 10
    assert balanced_sample(items, 100, key=lambda item: item[0], seed=0).__len__() == len(items)


@pytest.mark.parametrize(("new", "ratio", "expected"), [(10, 0.5, 10), (30, 0.25, 10), (7, 0.3, 3)])
def test_rehearsal_mix_ratio(new, ratio, expected):
    memory = list(range(4))
    draws = rehearsal_draws(memory, new, ratio, seed=1)
    assert len(draws) == expected == round(new * ratio / (1 - ratio))
    counts = Counter(draws)
    assert max(counts.values()) - min(counts.get(m, 0) for m in memory) <= 1  # each kept example as often (±1)


def test_rehearsal_stage_grows_the_head_and_keeps_the_old_rows(stage_one, tmp_path):
    seen = {}

    def capture(model):  # runs after the old rows are copied in, before any training
        seen["weight"], seen["bias"] = model.classifier.weight.detach().clone(), model.classifier.bias.detach().clone()
        return model

    out = tmp_path / "stage2"
    model = bertkit.finetune("classify", PLACES, dev=PLACES, out=out, model=stage_one, continual=True,
                             rehearsal_ratio=0.5, rehearsal_size=6, prepare_model=capture, stage_name="places", **TRAIN)
    old = load_hf_state(stage_one)
    assert seen["weight"].shape == (4, 32)
    assert torch.equal(seen["weight"][:2], old["classifier.weight"]) and torch.equal(seen["bias"][:2], old["classifier.bias"])
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos", "2": "where", "3": "work"}
    assert set(model.predict(["good fun movie"])[0]["scores"]) == {"neg", "pos", "where", "work"}
    # The old task is still scored among every label the model now knows.
    assert model.evaluate(SENTIMENT)["accuracy"] == json.loads((out / "stages.json").read_text())["scores"]["sentiment"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["continual"]["rehearsal_examples"] == len(PLACES)  # ratio 0.5: as many kept as new examples
    kept = read_examples(out / "rehearsal.jsonl", ClassifyTask())
    counts = Counter((stage, e.label) for stage, e in kept)  # 6 shared by 2 stages × 2 labels, as evenly as can be
    assert set(counts) == {("sentiment", "neg"), ("sentiment", "pos"), ("places", "where"), ("places", "work")}
    assert sorted(counts.values()) == [1, 1, 2, 2] and counts["sentiment", "neg"] == counts["sentiment", "pos"]
    assert (out / "stages" / "sentiment-dev.jsonl").read_text() == (stage_one / "stages" / "sentiment-dev.jsonl").read_text()


def test_same_labels_keep_the_head_and_a_stage_without_dev_has_no_score(stage_one, tmp_path):
    more = [{"text": "the story was fun", "label": "pos"}, {"text": "the plot was awful", "label": "neg"}] * 3
    out = tmp_path / "stage2"
    bertkit.finetune("classify", more, out=out, model=stage_one, continual=True, continual_strategy="none",
                     epochs=1, batch_size=4)
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    record = json.loads((out / "stages.json").read_text())
    assert [(s["name"], s["dev"], s.get("score")) for s in record["stages"]][1] == ("stage2", None, None)
    (row,) = json.loads((out / "metrics.json").read_text())["forgetting"]
    assert row["task"] == "sentiment" and row["after"] == bertkit.load(out).evaluate(SENTIMENT)["accuracy"]


def test_forgetting_table_on_the_command_line(stage_one, tmp_path, capsys):
    train = tmp_path / "places.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in PLACES), encoding="utf-8")
    out = tmp_path / "stage2"
    code, _, err = run_cli(["finetune", "classify", "--train", str(train), "--dev", str(train), "--out", str(out),
                            "--model", str(stage_one), "--continual", "--continual-strategy", "none", "--epochs", "2",
                            "--batch-size", "4", "--lr", "1e-3"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    before = json.loads((stage_one / "stages.json").read_text())["scores"]["sentiment"]
    after = bertkit.load(out).evaluate(SENTIMENT)["accuracy"]
    (row,) = metrics["forgetting"]
    assert row == {"task": "sentiment", "before": before, "after": after, "drop": pytest.approx(before - after)}
    assert metrics["continual"]["strategy"] == "none" and metrics["continual"]["rehearsal_examples"] == 0
    assert metrics["continual"]["scores"]["stage2"] == metrics["best"]
    assert (out / "forgetting.png").stat().st_size > 0
    assert f"sentiment {before:.4f} -> {after:.4f}" in err


def test_ewc_penalty_is_its_definition_and_zero_at_the_anchor():
    model = nn.Linear(2, 3)  # a head that grew from 2 labels to 3
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        model.bias.copy_(torch.tensor([0.5, -0.5, 9.0]))
    anchors = {"weight": torch.tensor([[1.0, 1.0], [2.0, 4.0]]), "bias": torch.tensor([0.0, 0.0])}
    fisher = {"weight": torch.tensor([[0.5, 2.0], [1.0, 3.0]]), "bias": torch.tensor([4.0, 0.0])}
    ewc = EWCLoss(anchors, fisher, weight=10.0)
    # λ/2 Σ F (θ-θ*)²: weight 2.0·1² + 1.0·1² = 3, bias 4.0·0.5² = 1; the new row (label 3) is not penalised.
    penalty = ewc.penalty(model)
    assert penalty.item() == pytest.approx(10.0 / 2 * (3.0 + 1.0))
    penalty.backward()
    assert torch.allclose(model.weight.grad, torch.tensor([[0.0, 20.0], [10.0, 0.0], [0.0, 0.0]]))  # λ F (θ-θ*)
    with torch.no_grad():
        model.weight[:2] = anchors["weight"]
        model.bias[:2] = anchors["bias"]
    assert ewc.penalty(model).item() == 0.0
    assert add_fisher({"bias": torch.ones(3)}, {"bias": torch.tensor([1.0, 2.0])})["bias"].tolist() == [2.0, 3.0, 1.0]


class _Squares(nn.Module):
    """loss = (w · x - y)² / 2 for x = the input ids as floats: its per-example gradient is (w · x - y) x."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -1.0]))

    def forward(self, input_ids, attention_mask, labels):
        error = input_ids.float()[0] @ self.w - labels.float()[0]
        return SimpleNamespace(loss=error**2 / 2)


def test_fisher_is_the_mean_squared_per_example_gradient():
    features = [{"input_ids": [1, 2], "labels": 0}, {"input_ids": [3, 1], "labels": 1}]
    # errors: 1 - 2 - 0 = -1 -> gradient (-1, -2); 3 - 1 - 1 = 1 -> (3, 1); squares (1, 4) and (9, 1), mean (5, 2.5)
    assert fisher_diagonal(_Squares(), features, pad_token_id=0)["w"].tolist() == [5.0, 2.5]


def test_ewc_stage_saves_anchors_and_fisher(stage_one, tmp_path):
    out = tmp_path / "stage2"
    bertkit.finetune("classify", PLACES, dev=PLACES, out=out, model=stage_one, continual=True, continual_strategy="ewc",
                     ewc_lambda=100.0, **TRAIN)
    anchors, fisher = load_ewc(out / "ewc.safetensors")
    trained = load_hf_state(out)
    assert torch.equal(anchors["classifier.weight"], trained["classifier.weight"])
    assert anchors["classifier.weight"].shape == fisher["classifier.weight"].shape == (4, 32)
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    steps = bertkit.load(out).history.epochs
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["continual"]["ewc_lambda"] == 100.0 and len(metrics["forgetting"]) == 1 and steps
    assert set(load_file(out / "ewc.safetensors")) == {f"{kind}.{name}" for kind in ("anchor", "fisher") for name in anchors}


@pytest.fixture
def ner_dir(tiny_model_dir, tmp_path):
    """A model directory that says it is a NER model (its head is never loaded: the check comes first)."""
    directory = tmp_path / "ner"
    shutil.copytree(tiny_model_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(architectures=["BertForTokenClassification"], id2label={"0": "O", "1": "B-PER"},
                  label2id={"O": 0, "B-PER": 1}, bertkit={"task": "ner"})
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_bad_continual_input_is_one_line(stage_one, tiny_model_dir, ner_dir, tmp_path, capsys):
    train = tmp_path / "places.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in PLACES), encoding="utf-8")
    conll = tmp_path / "ner.conll"
    conll.write_text("john\tB-PER\nlives\tO\n", encoding="utf-8")
    out = tmp_path / "out"
    cases = [
        (["classify", "--model", str(tiny_model_dir), "--continual"],
         f"--continual needs a fine-tuned model; {tiny_model_dir} is a pre-trained encoder without a task head "
         "(BertModel); fine-tune it first with `bertkit finetune`"),
        (["classify", "--model", str(ner_dir), "--continual"], f"--continual: {ner_dir} was fine-tuned for ner, not classify"),
        (["classify", "--model", str(stage_one), "--continual", "--multi-label"],
         f"--continual: {stage_one} was not fine-tuned on multi-label data; the new data must match"),
        (["classify", "--model", str(stage_one), "--ewc-lambda", "5"], "--ewc-lambda goes with --continual"),
        (["classify", "--model", str(stage_one), "--continual", "--ewc-lambda", "5"],
         "--ewc-lambda goes with --continual-strategy ewc"),
        (["classify", "--model", str(stage_one), "--continual", "--stage-name", "sentiment"],
         f"--stage-name 'sentiment' is already a stage of {stage_one} (sentiment)"),
        (["classify", "--model", str(stage_one), "--continual", "--out", str(stage_one), "--overwrite"],
         "--continual: --out must be a new directory, not --model itself"),
        (["ner", "--model", str(ner_dir), "--continual", "--train", str(conll)],
         "--continual is not supported yet for ner; classification only"),
    ]
    for args, message in cases:
        command = ["finetune", args[0], "--train", str(train), "--out", str(out)] + args[1:]
        code, _, err = run_cli(command, capsys)
        assert (code, err) == (2, f"bertkit: error: {message}\n"), args
        assert not out.exists()


def test_rehearsal_needs_a_kept_sample(stage_one, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(stage_one, bare)
    (bare / "rehearsal.jsonl").unlink()
    with pytest.raises(BertkitError, match=r"^--continual-strategy rehearsal: .* keeps no training sample"):
        bertkit.finetune("classify", PLACES, out=tmp_path / "out", model=bare, continual=True)
    with pytest.raises(BertkitError, match=r"^--continual-strategy ewc: .* keeps no training sample"):
        bertkit.finetune("classify", PLACES, out=tmp_path / "out", model=bare, continual=True, continual_strategy="ewc")


def test_mini_newsgroups_labels_come_from_the_headers_which_are_dropped():
    from bertkit.datasets import mini_newsgroups

    posts = mini_newsgroups()
    assert len(posts) == 200 and Counter(label for _, label in posts) == {"atheism": 100, "space": 100}
    assert not any(text.startswith(("Newsgroups:", "From:", "Path:")) or "\nNewsgroups:" in text.split("\n\n")[0]
                   for text, _ in posts)
    assert posts == mini_newsgroups()  # a fixed order
