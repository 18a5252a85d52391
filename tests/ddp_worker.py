"""Run under torchrun by test_ddp.py: one optimizer step of the real Trainer, then rank 0 saves the weights;
or, with `early-stop`, a run whose dev score never improves, which every rank must leave together."""

from __future__ import annotations

import os
import sys

import torch

from bertkit.trainer import Trainer, TrainConfig
from tests.test_trainer import features, tiny_classifier


def one_step(out: str, grad_accum: int) -> dict[str, torch.Tensor]:
    model = tiny_classifier(dropout=0.0)
    # warmup 0: with one step, a warmup would make that step's rate 0 (the Trainer's schedule) and change nothing
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-2, warmup_ratio=0.0, bf16=False, max_steps=1, grad_accum=grad_accum, seed=5)
    Trainer(model, features(), config, out, pad_token_id=0, save=lambda m, d: None).fit()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def early_stop(out: str) -> int:
    """Epochs run with patience 1 when rank 0's dev score never improves and rank 1's always does:
    one rank wanting to stop must stop both."""
    rank = int(os.environ["RANK"])
    calls: list[int] = []

    def evaluate(model) -> dict[str, float]:
        calls.append(1)
        return {"accuracy": 0.5 if rank == 0 else float(len(calls))}

    config = TrainConfig(epochs=6, batch_size=4, lr=1e-3, bf16=False, patience=1, seed=5)
    history = Trainer(tiny_classifier(), features(), config, out, pad_token_id=0, save=lambda m, d: None,
                      evaluate=evaluate, main_metric="accuracy").fit()
    return len(history.epochs)


if __name__ == "__main__" and sys.argv[1] == "early-stop":
    print(f"rank {os.environ['RANK']} ran {early_stop(sys.argv[2])} epochs")
elif __name__ == "__main__":
    state = one_step(sys.argv[1], grad_accum=1)
    if torch.distributed.get_rank() == 0:
        torch.save(state, sys.argv[2])
