"""Sentence embeddings from any BERT encoder: pooling that ignores padding, batched by length.

The default (mean over real tokens, then L2 norm) is the sentence-transformers recipe of models such as
all-MiniLM-L6-v2. Padding positions never enter a pool (transformers #22137): an embedding is the same
whether its text is encoded alone or batched with longer ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit.batching import collate, inference_batches
from bertkit.checkpoint import load_pretrained
from bertkit.errors import BertkitError
from bertkit.fileio import atomic_path
from bertkit.heads import pool
from bertkit.model import BertModel
from bertkit.options import Options, option
from bertkit.tokenizer import BertTokenizer

POOLINGS = ("mean", "cls", "max")
Layers = str | Sequence[int]  # "-1,-2" (the command line) or (-1, -2)


@dataclass
class EmbedOptions(Options):
    """How texts become vectors: the flags of `bertkit embed` and `similar`, keywords of `embed()`."""

    pooling: str = option("mean", "how token vectors become one (mean and max read real tokens only)", choices=POOLINGS)
    normalize: bool = option(True, "leave the embeddings unnormalised (default: L2 norm 1)")
    layers: str = option("-1", "layers to average before pooling, written --layers=-1,-2 (0: the embeddings, -1: the last)")
    max_seq_len: int | None = option(None, "truncate texts to this many tokens (default: the model's limit)", min=3)


def parse_layers(layers: Layers) -> tuple[int, ...]:
    if isinstance(layers, str):
        try:
            return tuple(int(part) for part in layers.split(","))
        except ValueError:
            raise BertkitError(f"layers are comma-separated numbers such as -1,-2; got {layers!r}") from None
    return tuple(layers)


def check_layers(layers: tuple[int, ...], num_layers: int) -> None:
    if not layers:
        raise BertkitError("layers must name at least one layer (-1 is the last)")
    for layer in layers:
        if not -(num_layers + 1) <= layer <= num_layers:
            raise BertkitError(
                f"layer {layer} does not exist: the model has {num_layers} layers (0 is the embeddings, -1 the last)"
            )


def encoder_of(model: nn.Module) -> BertModel:
    """The encoder inside a head model (or the model itself when it is a bare encoder)."""
    return model if isinstance(model, BertModel) else model.bert


def embed_batch(
    encoder: BertModel,
    batch: dict[str, torch.Tensor],
    pooling: str = "mean",
    normalize: bool = True,
    layers: tuple[int, ...] = (-1,),
) -> torch.Tensor:
    """One padded batch -> (batch, hidden) embeddings, with gradients when enabled (SetFit trains through this).

    Several `layers` are averaged token by token before pooling.
    """
    mask = batch["attention_mask"]
    lower = layers != (-1,)
    out = encoder(batch["input_ids"], mask, batch.get("token_type_ids"), output_hidden_states=lower)
    hidden = torch.stack([out.hidden_states[i] for i in layers]).mean(0) if lower else out.last_hidden_state
    pooled = pool(hidden, mask, pooling)
    return F.normalize(pooled, dim=-1) if normalize else pooled


def encode(
    model: nn.Module,
    tokenizer: BertTokenizer,
    texts: Sequence[str],
    pooling: str = "mean",
    normalize: bool = True,
    layers: Layers = (-1,),
    max_seq_len: int | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Texts -> (len(texts), hidden) float32 embeddings in input order, batched by length."""
    encoder = encoder_of(model)
    EmbedOptions(pooling=pooling, normalize=normalize, max_seq_len=max_seq_len)  # one-line range and choice errors
    layers = parse_layers(layers)
    check_layers(layers, encoder.config.num_hidden_layers)
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise BertkitError("texts must be a list of strings")
    encodings = tokenizer.encode_batch(list(texts), max_length=max_seq_len)
    features = [{"input_ids": e.input_ids, "token_type_ids": e.token_type_ids} for e in encodings]
    result = np.zeros((len(features), encoder.config.hidden_size), dtype=np.float32)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            for indices in inference_batches([len(f["input_ids"]) for f in features], batch_size):
                batch = {k: v.to(device) for k, v in collate([features[i] for i in indices], tokenizer.pad_token_id).items()}
                result[indices] = embed_batch(encoder, batch, pooling, normalize, layers).float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return result


def load_encoder(name_or_path: str | os.PathLike | None) -> tuple[BertModel, BertTokenizer]:
    """The bare encoder of any model directory (heads are left out), with its tokenizer."""
    model, tokenizer, _ = load_pretrained(name_or_path, "BertModel")
    return model.eval(), tokenizer


def cosine_top_k(query: np.ndarray, corpus: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(index, cosine) of the k corpus rows most similar to `query`, best first."""
    norms = np.linalg.norm(corpus, axis=1) * np.linalg.norm(query)
    scores = corpus @ query / np.where(norms == 0, 1, norms)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order]


def read_texts(path: str | os.PathLike, text_column: str = "text") -> tuple[list[int], list[str]]:
    """(ids, texts) of a .txt file (one text per non-blank line, id = line number) or a classification file."""
    from bertkit.data.classify import iter_classify
    from bertkit.data.io import iter_lines

    if Path(path).suffix.lower() == ".txt":
        rows = [(number, text) for number, text in iter_lines(path) if text.strip()]
    else:
        rows = [(e.line, e.text) for e in iter_classify(path, text_column, require_labels=False)]
    if not rows:
        raise BertkitError(f"{path}: the file has no texts")
    return [number for number, _ in rows], [text for _, text in rows]


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse a bad or existing output before any model runs."""
    if path.suffix.lower() not in (".npy", ".jsonl"):
        raise BertkitError(f"{path}: the output must end in .npy or .jsonl")
    if path.exists() and not overwrite:
        raise BertkitError(f"{path} already exists; pass --overwrite to replace it")


def write_embeddings(path: Path, ids: list[int], vectors: np.ndarray) -> None:
    """.npy (one row per text, input order) or .jsonl ({"id", "embedding"} per line), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".npy":
            with tmp.open("wb") as handle:
                np.save(handle, vectors)
        else:
            lines = (json.dumps({"id": i, "embedding": row.tolist()}) for i, row in zip(ids, vectors))
            tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
