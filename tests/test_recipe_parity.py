"""bertkit's fine-tuning recipe against the transformers Trainer's, step by step, with the randomness taken out.

With dropout off and the whole data set in one batch, the two trainers see the same inputs in every step,
so what is left to differ is the recipe: the loss, the head, the pooler, AdamW's settings, which weights
are decayed, warmup and decay, clipping. Starting from the same weights (classifier head included) the two
loss curves must then agree to float rounding. transformers is the oracle here, not a dependency.
"""

from __future__ import annotations


import pytest
import torch

from bertkit.batching import collate
from bertkit.checkpoint import load_pretrained
from bertkit.trainer import Trainer, TrainConfig

transformers = pytest.importorskip("transformers")

TEXTS = ["good movie", "great fun film", "awful plot", "boring story", "i love the actor", "i hate the film",
         "what a great story !", "the plot was bad ."]
LABELS = [1, 1, 0, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("warmup_ratio", [0.0, 0.25])
def test_the_loss_curves_match_the_transformers_trainer(tiny_model_dir, tmp_path, warmup_ratio):
    hf_tokenizer = transformers.BertTokenizerFast.from_pretrained(tiny_model_dir)
    torch.manual_seed(3)
    start = transformers.BertForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    start.save_pretrained(tmp_path / "start")
    hf_tokenizer.save_pretrained(tmp_path / "start")

    encoded = hf_tokenizer(TEXTS)
    steps, lr = 8, 5e-3
    rows = [{"input_ids": i, "token_type_ids": t, "attention_mask": m, "labels": y}
            for i, t, m, y in zip(encoded["input_ids"], encoded["token_type_ids"], encoded["attention_mask"], LABELS)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=steps, per_device_train_batch_size=len(rows),
        learning_rate=lr, weight_decay=0.01, warmup_steps=warmup_ratio, lr_scheduler_type="linear", max_grad_norm=1.0,
        seed=0, use_cpu=True, report_to=[], save_strategy="no", eval_strategy="no", logging_steps=1,
        disable_tqdm=True, dataloader_num_workers=0)
    hf_model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "start")
    trainer = transformers.Trainer(model=hf_model, args=args, train_dataset=rows,
                                   data_collator=transformers.DataCollatorWithPadding(hf_tokenizer))
    trainer.train()
    theirs = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    model, tokenizer, _ = load_pretrained(tmp_path / "start", "BertForSequenceClassification")
    assert model.config.hidden_dropout_prob == 0.0 and model.config.attention_probs_dropout_prob == 0.0
    with torch.no_grad():  # the same start: the saved head is loaded, not drawn afresh
        batch = collate([{k: r[k] for k in ("input_ids", "token_type_ids", "labels")} for r in rows], 0)
        assert torch.allclose(model(**batch).logits, hf_model.__class__.from_pretrained(tmp_path / "start")(**batch).logits,
                              atol=1e-5)
    features = [{k: r[k] for k in ("input_ids", "token_type_ids", "labels")} for r in rows]
    config = TrainConfig(epochs=steps, batch_size=len(rows), lr=lr, warmup_ratio=warmup_ratio, bf16=False)
    ours = Trainer(model, features, config, tmp_path / "ours", tokenizer.pad_token_id, lambda m, d: None,
                   callbacks=[])
    history = ours.fit()
    mine = [step["loss"] for step in history.steps]
    assert len(mine) == len(theirs) == steps
    # The loss before each step's update: the first is the shared start, the rest follow the two recipes.
    assert mine[0] == pytest.approx(theirs[0], rel=1e-5)
    assert mine == pytest.approx(theirs, rel=2e-4), (mine, theirs)
    assert mine[-1] < mine[0] - 1e-3, "the model trained"
