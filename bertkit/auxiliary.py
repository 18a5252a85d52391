"""Fine-tuning with an auxiliary masked-LM loss (`finetune --mlm-weight λ`), a regulariser for small data:
loss = task loss + λ · MLM loss, the MLM loss on a masked copy of the same batch (BERT's 15%, 80/10/10).

The pre-trained model's own MLM head (`cls.predictions.*`) is attached to the task model and trained with it;
it is saved beside the task head under the same Hugging Face names, which task-head loaders ignore.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit.checkpoint import hf_to_ours, load_config, load_hf_state, resolve_model_dir
from bertkit.data.pretrain import mask_tokens
from bertkit.errors import BertkitError
from bertkit.heads import MLMHead, _cross_entropy


def load_mlm_head(model_dir: Path) -> MLMHead:
    """The masked-LM head of the pre-trained model in `model_dir`, weights loaded."""
    ours, _ = hf_to_ours(load_hf_state(model_dir))
    weights = {k.removeprefix("mlm."): v for k, v in ours.items() if k.startswith("mlm.")}
    head = MLMHead(load_config(model_dir))
    if set(weights) != set(head.state_dict()):
        raise BertkitError(f"--mlm-weight needs a model with a masked-LM head; {model_dir} has none "
                           "(no cls.predictions weights)")
    head.load_state_dict(weights)
    return head


class MaskedLMAuxiliaryLoss:
    """loss_fn(model, batch) -> (task loss + weight · MLM loss, {"mlm": MLM loss}) for the Trainer."""

    def __init__(self, weight: float, vocab_size: int, mask_token_id: int, special_ids: list[int]) -> None:
        self.weight = weight
        self.vocab_size = vocab_size
        self.mask_token_id = mask_token_id
        self.special_ids = special_ids

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        task_loss = model(**batch).loss
        module = getattr(model, "module", model)  # under DDP the heads sit on the wrapped module
        tokens = batch["input_ids"].cpu()
        special = ~batch["attention_mask"].bool().cpu() | torch.isin(tokens, torch.tensor(self.special_ids))
        # Masks come from the global RNG, which the trainer seeds and saves with its state: a resume draws the same.
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        masked, labels = mask_tokens(tokens, special, None, self.vocab_size, self.mask_token_id, generator,
                                     special_ids=self.special_ids)
        device = batch["input_ids"].device
        hidden = module.bert(masked.to(device), batch["attention_mask"], batch.get("token_type_ids")).last_hidden_state
        mlm_loss = _cross_entropy(module.mlm(hidden, module.bert.embeddings.word.weight), labels.to(device))
        return task_loss + self.weight * mlm_loss, {"mlm": mlm_loss.item()}


def mlm_hooks(weight: float, source: Any, prepare_model: Any, loss_fn: Any) -> tuple[Any, MaskedLMAuxiliaryLoss]:
    """(prepare_model, loss_fn) for `finetune(mlm_weight=weight)`: the MLM head attached after the user's own
    prepare_model, and the combined loss. A loss_fn of the user's cannot be combined with it."""
    from bertkit.tokenizer import BertTokenizer

    if loss_fn is not None:
        raise BertkitError("mlm_weight= and loss_fn= do not go together; add the MLM loss in your loss_fn instead")
    if not isinstance(source, (str, os.PathLike, type(None))):
        raise BertkitError("--mlm-weight needs model= as a directory or hub id (its MLM head is loaded from there)")
    model_dir = resolve_model_dir(source)
    head = load_mlm_head(model_dir)  # a model without one fails now, before anything is trained
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    specials = sorted({tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
                       tokenizer.mask_token_id})

    def prepare(model: nn.Module) -> nn.Module:
        model = prepare_model(model) if prepare_model is not None else model
        model.mlm = copy.deepcopy(head)  # a fresh copy for each model (cross-validation folds train several)
        return model

    return prepare, MaskedLMAuxiliaryLoss(weight, tokenizer.vocab_size, tokenizer.mask_token_id, specials)
