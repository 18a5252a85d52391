"""Run under torchrun by test_ddp.py: one optimizer step of the real Trainer, then rank 0 saves the weights."""

from __future__ import annotations

import sys

import torch

from bertkit.trainer import Trainer, TrainConfig
from tests.test_trainer import features, tiny_classifier


def one_step(out: str, grad_accum: int) -> dict[str, torch.Tensor]:
    model = tiny_classifier(dropout=0.0)
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-2, bf16=False, max_steps=1, grad_accum=grad_accum, seed=5)
    Trainer(model, features(), config, out, pad_token_id=0, save=lambda m, d: None).fit()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


if __name__ == "__main__":
    state = one_step(sys.argv[1], grad_accum=1)
    if torch.distributed.get_rank() == 0:
        torch.save(state, sys.argv[2])
