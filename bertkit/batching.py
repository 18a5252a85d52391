"""Turning feature dicts into padded tensor batches, grouped by length so little compute goes to padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from bertkit.data.windows import window_inputs

# The label of positions that no loss scores (padding, [CLS], the later pieces of a word, unmasked tokens);
# the same value as torch's cross-entropy default and Hugging Face's datasets.
IGNORE_INDEX = -100

Feature = dict[str, Any]  # input_ids, token_type_ids (lists of ints) and task fields (labels, positions)

# Per-token fields and the value that pads them; anything else is one value per example.
_PAD_VALUES = {"input_ids": None, "token_type_ids": 0, "labels": IGNORE_INDEX}


def collate(features: Sequence[Feature], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the per-token fields to the longest feature and stack everything into tensors."""
    if "windows" in features[0]:
        return collate_windows(features, pad_token_id)
    longest = max(len(f["input_ids"]) for f in features)
    batch: dict[str, torch.Tensor] = {}
    mask = torch.zeros(len(features), longest, dtype=torch.long)
    for i, f in enumerate(features):
        mask[i, : len(f["input_ids"])] = 1
    batch["attention_mask"] = mask
    for key, value in features[0].items():
        # Token-level fields are int lists (multi-label targets are float lists, one per example).
        if key in _PAD_VALUES and isinstance(value, list) and all(isinstance(v, int) for v in value):
            pad = pad_token_id if _PAD_VALUES[key] is None else _PAD_VALUES[key]
            batch[key] = torch.tensor([f[key] + [pad] * (longest - len(f[key])) for f in features], dtype=torch.long)
        elif isinstance(value, float) or (isinstance(value, list) and isinstance(value[0], float)):
            batch[key] = torch.tensor([f[key] for f in features], dtype=torch.float)
        elif isinstance(value, int):
            batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
    return batch


def collate_windows(features: Sequence[Feature], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Documents read in overlapping windows (`classify --long windows`): every window of every document is a row,
    `window_document` (windows,) says whose it is, and the labels stay one per document, so the model pools each
    document's windows and the loss reads the pooled logits."""
    rows, owners = [], []
    for document, feature in enumerate(features):
        for ids in window_inputs(feature["input_ids"], feature["windows"]):
            rows.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
            owners.append(document)
    batch = collate(rows, pad_token_id)
    batch["window_document"] = torch.tensor(owners, dtype=torch.long)
    if "labels" in features[0]:
        multi = isinstance(features[0]["labels"], list)  # multi-label: a 0/1 vector per document
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float if multi else torch.long)
    return batch


def training_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, group_size: int = 50
) -> list[list[int]]:
    """Shuffled batches, of similar-length examples when `group_size` > 1.

    Shuffle everything, sort within groups of `group_size` batches by length, cut into batches, and
    shuffle the batch order: each epoch still sees a random order of random batches, but a batch
    rarely pads a short text up to a long one. With group_size 1 the batches are plain random ones.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * group_size
    batches = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def inference_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Batches of indices sorted by length: the least padding; callers restore input order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def forward_in_batches(
    model: torch.nn.Module, features: Sequence[Feature], batch_size: int, pad_token_id: int
) -> Iterator[tuple[list[int], Any]]:
    """Run the model over features in length-sorted batches; yields (feature indices, model output).

    Only the model inputs are passed (labels are left out), so this serves prediction and evaluation.
    """
    device = next(model.parameters()).device
    lengths = [len(f["input_ids"]) for f in features]
    for indices in inference_batches(lengths, batch_size):
        batch = collate([{k: features[i][k] for k in ("input_ids", "token_type_ids")} for i in indices], pad_token_id)
        yield indices, model(**{k: v.to(device) for k, v in batch.items()})


def forward_rows(
    model: torch.nn.Module, features: Sequence[Feature], batch_size: int, pad_token_id: int, outputs: dict[str, bool]
) -> list[dict[str, torch.Tensor]]:
    """Each feature's model outputs, in feature order, as float32 rows.

    `outputs` names the output fields to keep, each True when it has one entry per token: those rows are
    cut to the feature's own length, so padding never reaches the decoding.
    """
    rows: list[dict[str, torch.Tensor]] = [{} for _ in features]
    for indices, output in forward_in_batches(model, features, batch_size, pad_token_id):
        for name, per_token in outputs.items():
            values = getattr(output, name).float()
            for row, i in zip(values, indices):
                rows[i][name] = row[: len(features[i]["input_ids"])] if per_token else row
    return rows
