"""A linear-chain CRF over BERT's tag scores (`finetune ner --crf`), as bert4torch and PaddleNLP ship it.

The loss is pytorch-crf's; decoding is our batched Viterbi, plain tensor operations (no Python per
example), so it runs on whole batches and exports to ONNX. Both see only each word's first piece: the
positions that carry a label in training and that `ner.word_logits` picks when predicting. BIO/BIOES
constraints (no I-PER after O, no I-PER after B-LOC, ...) are enforced when decoding, so a decoded
sequence is always well formed; the gold sequences the loss sees are well formed anyway.
"""

from __future__ import annotations

import torch
from torchcrf import CRF as _TorchCRF

from bertkit.batching import IGNORE_INDEX

# A transition the constraints forbid scores this much: far below any real path, yet finite (no NaN).
FORBIDDEN = -1e4


def _split(tag: str) -> tuple[str, str]:
    return (tag, "") if tag == "O" else (tag[0], tag[2:])


def allowed_transitions(labels: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(start (L,), transitions (L, L) from row to column, end (L,)) as booleans, for BIO or BIOES tags.

    Inside tags (I-, and E- in BIOES) continue an entity of their type begun by B- (or continued by I-);
    in BIOES an entity is closed by E- or is a single S-, so B- and I- may not be followed by O, B-, S- or
    the end, nor start after anything but a closed entity.
    """
    bioes = any(_split(tag)[0] in "ES" for tag in labels)
    n = len(labels)
    start, end = torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    transitions = torch.ones(n, n, dtype=torch.bool)
    for j, tag in enumerate(labels):
        prefix, kind = _split(tag)
        if prefix in "IE":
            start[j] = False
        if bioes and prefix in "BI":
            end[j] = False
        for i, previous in enumerate(labels):
            p_prefix, p_kind = _split(previous)
            opens = p_prefix in "BI"  # the previous tag leaves an entity open
            if prefix in "IE":
                transitions[i, j] = opens and p_kind == kind
            elif bioes:
                transitions[i, j] = not opens
    return start, transitions, end


def viterbi_decode(emissions: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, transitions: torch.Tensor,
                   end: torch.Tensor) -> torch.Tensor:
    """The best tag sequence of each row: emissions (B, T, L), mask (B, T) with each row's positions first,
    start/end (L,), transitions (L, L) -> tags (B, T), 0 where the mask is off. Tensor operations only
    (the loop over T unrolls when traced), so it exports to ONNX."""
    mask = mask.bool()
    score = start + emissions[:, 0]  # (B, L): the best path ending in each tag
    history = []
    for t in range(1, emissions.shape[1]):
        candidates = score[:, :, None] + transitions[None] + emissions[:, t, None, :]  # (B, L from, L to)
        best, previous = candidates.max(dim=1)
        on = mask[:, t, None]
        score = torch.where(on, best, score)  # past a row's end its scores stay put
        history.append(torch.where(on, previous, torch.arange(score.shape[1], device=score.device).expand_as(previous)))
    last = (score + end).argmax(dim=1)  # (B,)
    tags = [last]
    for previous in reversed(history):  # off positions point at themselves, so the last real tag carries back
        last = previous.gather(1, last[:, None]).squeeze(1)
        tags.append(last)
    return torch.stack(tags[::-1], dim=1).masked_fill(~mask, 0)


def first_pieces(emissions: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each row's labelled positions (first pieces of words) to its front, in order: emissions (B, T, L),
    labels (B, T) with IGNORE_INDEX elsewhere -> (emissions (B, W, L), tags (B, W), mask (B, W)), W the most
    words of any row."""
    keep = labels != IGNORE_INDEX
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # kept positions first, in order
    words = int(keep.sum(dim=1).max()) if keep.numel() else 0
    order = order[:, :words]
    gathered = emissions.gather(1, order[..., None].expand(-1, -1, emissions.shape[-1]))
    return gathered, labels.gather(1, order).clamp(min=0), keep.gather(1, order)


class CRF(_TorchCRF):
    """pytorch-crf's CRF (its parameters: start_transitions, end_transitions, transitions), with the BIO/BIOES
    constraints of `labels` and its own learning rate (`lr`, read by the trainer's optimizer)."""

    def __init__(self, labels: list[str], lr: float | None = None) -> None:
        super().__init__(len(labels), batch_first=True)
        start, transitions, end = allowed_transitions(labels)
        self.register_buffer("start_allowed", start, persistent=False)
        self.register_buffer("transitions_allowed", transitions, persistent=False)
        self.register_buffer("end_allowed", end, persistent=False)
        if lr is not None:
            for parameter in self.parameters():
                parameter.own_lr = lr  # see trainer.make_optimizer

    def loss(self, emissions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per word of the gold tags at the labelled positions."""
        emissions, tags, mask = first_pieces(emissions.float(), labels)
        rows = mask[:, 0] if mask.shape[1] else mask.new_zeros(mask.shape[0])  # windows with no word of their own
        if not bool(rows.any()):
            return emissions.sum() * 0.0
        return -self(emissions[rows], tags[rows], mask[rows], reduction="token_mean")

    def constrained(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """start, transitions, end with the forbidden ones set to FORBIDDEN."""
        return (self.start_transitions.masked_fill(~self.start_allowed, FORBIDDEN),
                self.transitions.masked_fill(~self.transitions_allowed, FORBIDDEN),
                self.end_transitions.masked_fill(~self.end_allowed, FORBIDDEN))

    def best_paths(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Constrained Viterbi: emissions (B, W, L), mask (B, W) -> tags (B, W)."""
        return viterbi_decode(emissions.float(), mask, *self.constrained())

