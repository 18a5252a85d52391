"""BERT+CRF for NER (`finetune ner --crf`): our batched Viterbi against pytorch-crf, the BIO/BIOES constraints,
the first-piece positions, the CRF's own learning rate, ONNX export of the decoder, and a run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchcrf

import bertkit
from bertkit.crf import CRF, FORBIDDEN, allowed_transitions, first_pieces, viterbi_decode
from bertkit.trainer import make_optimizer
from tests.conftest import run_cli
from tests.test_finetune_ner import CHINESE, ENGLISH, write_conll

BIO = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
BIOES = ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-PER", "E-PER", "S-PER"]


def _random_batch(seed: int, labels: int, batch: int = 6, length: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, length, labels, generator=generator) * 3
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length  # one row fills the batch
    return emissions, torch.arange(length)[None] < lengths[:, None]


def _torchcrf(labels: int, seed: int) -> torchcrf.CRF:
    torch.manual_seed(seed)
    crf = torchcrf.CRF(labels, batch_first=True)
    with torch.no_grad():  # pytorch-crf starts near zero; spread the scores so the paths differ from argmax
        for parameter in crf.parameters():
            parameter.mul_(30)
    return crf


def _ours(crf: torchcrf.CRF, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    tags = viterbi_decode(emissions, mask, crf.start_transitions, crf.transitions, crf.end_transitions)
    return [row[: int(n)] for row, n in zip(tags.tolist(), mask.sum(1))]


@pytest.mark.parametrize("seed", range(8))
def test_viterbi_equals_pytorch_crf_decode(seed):
    crf = _torchcrf(len(BIO), seed)
    emissions, mask = _random_batch(seed, len(BIO))
    theirs = crf.decode(emissions, mask)
    assert _ours(crf, emissions, mask) == theirs
    assert theirs != [row[: int(n)] for row, n in zip(emissions.argmax(-1).tolist(), mask.sum(1))]


def test_constrained_decode_equals_pytorch_crf_with_forbidden_scores():
    for labels in (BIO, BIOES):
        start, transitions, end = allowed_transitions(labels)
        for seed in range(5):
            reference = _torchcrf(len(labels), seed)
            ours = CRF(labels)
            ours.load_state_dict(reference.state_dict(), strict=False)
            with torch.no_grad():
                reference.start_transitions.masked_fill_(~start, FORBIDDEN)
                reference.transitions.masked_fill_(~transitions, FORBIDDEN)
                reference.end_transitions.masked_fill_(~end, FORBIDDEN)
            emissions, mask = _random_batch(seed, len(labels))
            paths = ours.best_paths(emissions, mask)
            assert [row[: int(n)] for row, n in zip(paths.tolist(), mask.sum(1))] == reference.decode(emissions, mask)


def _violations(tags: list[str], bioes: bool) -> list[int]:
    """Positions where a tag may not stand, by the BIO/BIOES rules written out independently."""
    bad, previous = [], "O"
    for i, tag in enumerate(tags + ["O"]):  # the extra O checks how the sequence ends
        opens = previous[0] in "BI"
        if tag[0] in "IE" and not (opens and previous[2:] == tag[2:]):
            bad.append(i)
        if bioes and tag[0] in "OBS" and opens:
            bad.append(i)
        previous = tag
    return bad


@pytest.mark.parametrize("labels", [BIO, BIOES], ids=["BIO", "BIOES"])
def test_transition_constraints_are_never_violated(labels):
    crf = CRF(labels)
    with torch.no_grad():  # transitions that reward every forbidden move, emissions that favour inside tags
        crf.transitions.fill_(5.0)
        crf.start_transitions.fill_(5.0)
    bioes = labels is BIOES
    unconstrained = 0
    for seed in range(20):
        emissions, mask = _random_batch(seed, len(labels), batch=8, length=12)
        emissions[..., [i for i, t in enumerate(labels) if t[0] in "IE"]] += 2.0
        for row, n in zip(crf.best_paths(emissions, mask).tolist(), mask.sum(1).tolist()):
            assert _violations([labels[i] for i in row[:n]], bioes) == []
        argmax = emissions.argmax(-1).tolist()
        unconstrained += sum(bool(_violations([labels[i] for i in row[:n]], bioes)) for row, n in zip(argmax, mask.sum(1)))
    assert unconstrained > 0, "the emissions alone should break the rules, or the test shows nothing"


def test_allowed_transitions_spelled_out():
    start, transitions, end = allowed_transitions(["O", "B-X", "I-X", "B-Y", "I-Y"])
    assert start.tolist() == [True, True, False, True, False]
    assert end.all()
    assert transitions[:, 2].tolist() == [False, True, True, False, False]  # I-X only after B-X or I-X
    assert transitions[:, [0, 1, 3]].all()


def test_first_pieces_moves_labelled_positions_to_the_front():
    emissions = torch.arange(2 * 5 * 1, dtype=torch.float).reshape(2, 5, 1)
    labels = torch.tensor([[-100, 3, -100, 4, -100], [-100, 1, 2, 0, -100]])
    gathered, tags, mask = first_pieces(emissions, labels)
    assert tags.tolist() == [[3, 4, 0], [1, 2, 0]] and mask.tolist() == [[True, True, False], [True, True, True]]
    assert gathered[..., 0].tolist()[0][:2] == [1.0, 3.0] and gathered[..., 0].tolist()[1] == [6.0, 7.0, 8.0]


def test_crf_parameters_get_their_own_learning_rate():
    model = torch.nn.Module()
    model.linear = torch.nn.Linear(3, 3)
    model.crf = CRF(BIO, lr=0.02)
    groups = make_optimizer(model, 1e-4, 0.01).param_groups
    crf_ids = {id(p) for p in model.crf.parameters()}
    (own,) = [g for g in groups if {id(p) for p in g["params"]} == crf_ids]
    assert own["lr"] == 0.02 and own["weight_decay"] == 0.0
    assert all(g["lr"] == 1e-4 for g in groups if g is not own)


class _Decoder(torch.nn.Module):
    def __init__(self, crf: CRF) -> None:
        super().__init__()
        for name, value in zip(("start", "transitions", "end"), crf.constrained()):
            self.register_buffer(name, value.detach().clone())

    def forward(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return viterbi_decode(emissions, mask, self.start, self.transitions, self.end)


def test_viterbi_exports_to_onnx(tmp_path):
    import onnxruntime

    crf = CRF(BIO)
    decoder = _Decoder(crf).eval()
    emissions, mask = _random_batch(0, len(BIO), batch=3, length=7)
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(decoder, (emissions, mask), input_names=["emissions", "mask"], output_names=["tags"],
                                dynamic_shapes={"emissions": {0: batch}, "mask": {0: batch}}, dynamo=True, verbose=False)
    program.save(tmp_path / "viterbi.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "viterbi.onnx"), providers=["CPUExecutionProvider"])
    other, other_mask = _random_batch(1, len(BIO), batch=5, length=7)  # another batch size than traced
    (tags,) = session.run(None, {"emissions": other.numpy(), "mask": other_mask.numpy()})
    np.testing.assert_array_equal(tags, decoder(other, other_mask).numpy())


def test_finetune_ner_with_crf_end_to_end(tiny_model_dir, tmp_path, capsys):
    train, dev = tmp_path / "train.conll", tmp_path / "dev.conll"
    write_conll(train, (ENGLISH + CHINESE) * 6)
    write_conll(dev, ENGLISH + CHINESE)
    out = tmp_path / "ner"
    code, _, err = run_cli(["finetune", "ner", "--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev),
                            "--out", str(out), "--epochs", "12", "--batch-size", "4", "--lr", "5e-3", "--crf",
                            "--crf-lr", "0.05", "--max-seq-len", "8", "--stride", "2"], capsys)
    assert code == 0, err
    settings = json.loads((out / "config.json").read_text())["bertkit"]
    assert settings["crf"] is True and settings["crf_lr"] == 0.05

    from safetensors.torch import load_file

    saved = load_file(out / "model.safetensors")
    assert {"crf.transitions", "crf.start_transitions", "crf.end_transitions"} <= set(saved)
    loaded = bertkit.load(out)
    assert torch.equal(loaded.model.crf.transitions.detach(), saved["crf.transitions"])
    metrics = loaded.evaluate(str(dev))
    assert metrics["f1"] == pytest.approx(json.loads((out / "metrics.json").read_text())["best"])
    assert metrics["f1"] >= 0.8, "the toy task should be learned"
    (prediction,) = loaded.predict(["john lives in paris"])
    assert _violations(prediction["tags"], bioes=False) == []


def test_crf_on_other_tasks_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(bertkit.BertkitError, match="finetune classify has no option 'crf'"):
        bertkit.finetune("classify", [{"text": "a", "label": "x"}], out=tmp_path / "x", crf=True)
    code, _, err = run_cli(["finetune", "classify", "--train", "t.csv", "--out", str(tmp_path / "y"), "--crf"], capsys)
    assert code == 2 and "--crf" in err and "ner" in err and len(err.strip().splitlines()) == 1
