"""Models that others extend: peft wraps the heads, and checkpoints keep parameters outside BERT's table."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from bertkit.checkpoint import LoadReport, load_model, save_model
from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.heads import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
from bertkit.model import BertModel

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40, id2label={0: "a", 1: "b", 2: "c"})


def batch(labels: bool = True) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 99, (3, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    return {**out, "labels": torch.tensor([0, 2, 1])} if labels else out


@pytest.mark.parametrize("head", [BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering])
def test_heads_accept_hugging_face_keywords_with_the_same_meaning(head):
    torch.manual_seed(0)
    model = head(BertConfig(**TINY)).eval()
    inputs = batch(labels=False)
    plain = model(**inputs)
    keywords = dict(inputs_embeds=None, position_ids=None, head_mask=None, output_attentions=False,
                    output_hidden_states=None, return_dict=True)
    same = model(**inputs, **keywords)
    for name in ("logits", "start_logits", "end_logits"):
        if hasattr(plain, name):
            torch.testing.assert_close(getattr(same, name), getattr(plain, name))


@pytest.mark.parametrize("keywords, message", [
    ({"output_attentions": True}, "output_attentions is not supported; pass None or False"),
    ({"return_dict": False}, "return_dict is not supported; pass None or True"),
    ({"inputs_embeds": torch.zeros(3, 10, 32)}, "inputs_embeds is not supported; pass None"),
    ({"use_cache": None}, "unexpected keyword argument 'use_cache'"),
])
def test_heads_refuse_what_they_do_not_support(keywords, message):
    model = BertForSequenceClassification(BertConfig(**TINY))
    with pytest.raises(BertkitError, match=message):
        model(**batch(), **keywords)


def test_peft_lora_wraps_sequence_classification_forward_and_backward():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY))
    lora = peft.LoraConfig(task_type="SEQ_CLS", target_modules=["qkv", "out"], r=4, lora_alpha=8)
    wrapped = peft.get_peft_model(model, lora)
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert any("lora_A" in name for name in trainable) and any("classifier" in name for name in trainable)
    assert not any("embeddings" in name for name in trainable)
    out = wrapped(**batch())
    out.loss.backward()
    lora_b = next(p for name, p in wrapped.named_parameters() if "lora_B" in name and "qkv" in name)
    assert lora_b.grad is not None and lora_b.grad.abs().sum() > 0  # B starts at zero; its gradient does not


class Adapter(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.down = nn.Linear(size, 4)
        self.scale = nn.Parameter(torch.ones(1))


def with_extras(model: nn.Module, seed: int) -> nn.Module:
    """An adapter inside an encoder layer and a second head beside `bert`, both outside the name table."""
    torch.manual_seed(seed)
    encoder = model if isinstance(model, BertModel) else model.bert
    encoder.layers[0].attention.adapter = Adapter(32)
    model.extra_head = nn.Linear(32, 5)
    return model


def test_extra_parameters_round_trip_under_their_own_names(tmp_path):
    saved = with_extras(BertForSequenceClassification(BertConfig(**TINY)), seed=0)
    save_model(saved, tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert {"bert.layers.0.attention.adapter.down.weight", "bert.layers.0.attention.adapter.scale",
            "extra_head.weight", "bert.encoder.layer.0.attention.self.query.weight"} <= keys

    fresh = with_extras(BertForSequenceClassification(BertConfig(**TINY)), seed=1)
    report = load_model_into(fresh, tmp_path)
    assert report == LoadReport(fresh=[], unused=[])
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value, rtol=0, atol=0)


def load_model_into(model: nn.Module, directory) -> LoadReport:
    from bertkit.checkpoint import load_hf_state, load_weights

    return load_weights(model, load_hf_state(directory))


def test_extra_parameters_missing_or_unexpected_are_reported(tmp_path):
    save_model(with_extras(BertForSequenceClassification(BertConfig(**TINY)), seed=0), tmp_path)
    plain, report = load_model(tmp_path)  # nothing here takes the adapter or the second head
    assert report.fresh == []
    assert report.unused == ["bert.layers.0.attention.adapter.down.bias", "bert.layers.0.attention.adapter.down.weight",
                             "bert.layers.0.attention.adapter.scale", "extra_head.bias", "extra_head.weight"]

    save_model(plain, tmp_path)  # and a model that has them, loaded from a checkpoint that does not
    report = load_model_into(with_extras(BertForSequenceClassification(BertConfig(**TINY)), seed=1), tmp_path)
    assert report.unused == []
    assert sorted(report.fresh) == ["bert.layers.0.attention.adapter.down.bias", "bert.layers.0.attention.adapter.down.weight",
                                    "bert.layers.0.attention.adapter.scale", "extra_head.bias", "extra_head.weight"]


def test_missing_bert_weights_are_still_an_error(tmp_path):
    save_model(BertModel(BertConfig(**TINY)), tmp_path)
    from safetensors.torch import save_file

    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.1.output.dense.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(BertkitError, match="layers.1.ffn.down.weight is missing from the checkpoint"):
        load_model(tmp_path)


def test_encoder_extras_move_between_a_bare_encoder_and_a_head_model(tmp_path):
    encoder = with_extras(BertModel(BertConfig(**TINY)), seed=0)
    del encoder.extra_head
    save_model(encoder, tmp_path)
    head = with_extras(BertForSequenceClassification(BertConfig(**TINY)), seed=1)
    report = load_model_into(head, tmp_path)
    assert report.unused == [] and "bert.layers.0.attention.adapter.scale" not in report.fresh
    torch.testing.assert_close(head.bert.layers[0].attention.adapter.down.weight,
                               encoder.layers[0].attention.adapter.down.weight, rtol=0, atol=0)
