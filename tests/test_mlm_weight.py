"""`finetune --mlm-weight λ`: the task loss plus λ times a masked-LM loss through the pre-trained MLM head."""

from __future__ import annotations

import pytest
import torch

import bertkit
from bertkit.checkpoint import load_hf_state
from tests.test_finetune_classify import NEGATIVE, POSITIVE

ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]


@pytest.fixture(scope="module")
def tiny_mlm_dir(tiny_model_dir, tmp_path_factory):
    """The tiny BERT with a masked-LM head (cls.predictions.*) of its own."""
    from bertkit.checkpoint import load_pretrained, save_model

    model, tokenizer, _ = load_pretrained(tiny_model_dir, "BertForMaskedLM")
    torch.manual_seed(1)
    with torch.no_grad():
        model.mlm.bias.normal_()
    path = tmp_path_factory.mktemp("tiny_mlm")
    save_model(model, path)
    tokenizer.save_pretrained(path)
    return path


def test_the_mlm_loss_is_added_and_its_head_saved(tiny_mlm_dir, tmp_path):
    settings = {"model": str(tiny_mlm_dir), "epochs": 1, "batch_size": 4, "seed": 3}
    plain = bertkit.finetune("classify", ROWS, out=tmp_path / "plain", **settings)
    mixed = bertkit.finetune("classify", ROWS, out=tmp_path / "mlm", mlm_weight=0.5, **settings)
    assert all(step["mlm"] > 0 for step in mixed.history.steps) and "mlm" not in plain.history.steps[0]
    # The same batches and seed: the loss is the task loss plus half the MLM loss, so the curves differ.
    assert [s["loss"] for s in mixed.history.steps] != [s["loss"] for s in plain.history.steps]
    saved = load_hf_state(tmp_path / "mlm")
    assert "cls.predictions.transform.dense.weight" in saved and "cls.predictions.bias" in saved
    original = load_hf_state(tiny_mlm_dir)["cls.predictions.transform.dense.weight"]
    assert not torch.equal(saved["cls.predictions.transform.dense.weight"], original), "the head trains too"
    assert [p["label"] for p in mixed.predict(["good movie"])] in (["pos"], ["neg"])


def test_mlm_weight_needs_an_mlm_head(tiny_model_dir, tmp_path):
    with pytest.raises(bertkit.BertkitError, match="needs a model with a masked-LM head"):
        bertkit.finetune("classify", ROWS, out=tmp_path / "x", model=str(tiny_model_dir), mlm_weight=0.1)
    assert not (tmp_path / "x").exists()
    with pytest.raises(bertkit.BertkitError, match="loss_fn= do not go together"):
        bertkit.finetune("classify", ROWS, out=tmp_path / "y", model=str(tiny_model_dir), mlm_weight=0.1,
                         loss_fn=lambda model, batch: (model(**batch).loss, {}))
