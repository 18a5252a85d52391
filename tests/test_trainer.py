"""The training loop: schedule, weight-decay groups, accumulation, and exact resume."""

from __future__ import annotations

import torch

from bertkit.heads import BertForSequenceClassification
from bertkit.config import BertConfig
from bertkit.trainer import Trainer, TrainConfig, linear_schedule, make_optimizer


def tiny_classifier(seed: int = 0, dropout: float = 0.1) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(config)


def features(count: int = 40) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(count):
        length = int(torch.randint(3, 20, (1,), generator=g))
        ids = torch.randint(5, 50, (length,), generator=g).tolist()
        rows.append({"input_ids": [2] + ids + [3], "token_type_ids": [0] * (length + 2), "labels": i % 2})
    return rows


def test_schedule_warms_up_then_decays_to_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = linear_schedule(optimizer, warmup=4, total=10)
    rates = []
    for _ in range(10):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:5] == sorted(rates[:5]) and rates[4] == 1.0
    assert rates[4:] == sorted(rates[4:], reverse=True) and scheduler.get_last_lr()[0] == 0.0


def test_no_weight_decay_on_biases_and_layernorm():
    model = tiny_classifier()
    decay, no_decay = make_optimizer(model, 1e-3, 0.01).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(n.endswith("weight") and "norm" not in n for n in (names[id(p)] for p in decay["params"]))
    assert {names[id(p)] for p in no_decay["params"]} >= {"bert.embeddings.norm.weight", "classifier.bias"}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01


class Interrupted(Exception):
    pass


class StopsAfterFourSteps(Trainer):
    """A run killed right after its fourth optimizer step (its last saved state is from step 3)."""

    def _step(self) -> None:
        super()._step()
        if self.global_step == 4:
            raise Interrupted


def test_resume_gives_the_same_next_losses(tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, bf16=False, seed=3, save_every=3)
    full = Trainer(tiny_classifier(), features(), config, tmp_path / "full", 0, save=lambda m, d: None).fit()
    cut = StopsAfterFourSteps(tiny_classifier(), features(), config, tmp_path / "cut", 0, save=lambda m, d: None)
    try:
        cut.fit()
    except Interrupted:
        pass
    # A different initialisation proves the weights come from the saved state, not from the seed.
    resumed = Trainer(tiny_classifier(seed=99), features(), config, tmp_path / "cut", 0, save=lambda m, d: None)
    history = resumed.fit(resume=True)
    assert [s["step"] for s in history.steps] == [s["step"] for s in full.steps] == list(range(1, 11))
    torch.testing.assert_close(
        torch.tensor([s["loss"] for s in history.steps]), torch.tensor([s["loss"] for s in full.steps]), rtol=0, atol=1e-6
    )


def test_gradient_accumulation_matches_a_big_batch(tmp_path):
    big = tiny_classifier()
    small = tiny_classifier()
    for model in (big, small):
        model.eval()  # no dropout: the two runs must see the same function
    batch = features(8)
    from bertkit.batching import collate

    full = collate(batch, 0)
    big(**full).loss.backward()
    for half in (batch[:4], batch[4:]):
        (small(**collate(half, 0)).loss / 2).backward()
    for (name, a), (_, b) in zip(big.named_parameters(), small.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_max_steps_stops_and_ends_the_schedule(tmp_path):
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, bf16=False, max_steps=7)  # 5 batches an epoch
    trainer = Trainer(tiny_classifier(), features(), config, tmp_path, 0, save=lambda m, d: None)
    history = trainer.fit()
    assert [s["step"] for s in history.steps] == list(range(1, 8))
    assert trainer.scheduler.get_last_lr()[0] == 0.0


def test_collate_seed_and_loss_logs_reach_the_history(tmp_path):
    from bertkit.batching import collate

    seeds: list[int] = []

    def collate_fn(batch, seed):
        seeds.append(seed)
        return collate(batch, 0)

    def loss_fn(model, batch):
        out = model(**batch)
        return out.loss, {"accuracy": float((out.logits.argmax(-1) == batch["labels"]).float().mean())}

    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, bf16=False)
    history = Trainer(tiny_classifier(), features(), config, tmp_path, 0, save=lambda m, d: None,
                      collate_fn=collate_fn, loss_fn=loss_fn).fit()
    assert len(set(seeds)) == len(seeds) == 10  # a different seed for every batch of both epochs
    assert all(0.0 <= s["accuracy"] <= 1.0 for s in history.steps)
