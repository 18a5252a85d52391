"""Sentence embeddings from any BERT encoder: pooling that ignores padding, batched through the unpadded encoder.

The default (mean over real tokens, then L2 norm) is the sentence-transformers recipe of models such as
all-MiniLM-L6-v2. Padding positions never enter a pool (transformers #22137): an embedding is the same
whether its text is encoded alone or batched with longer ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit.batching import collate, inference_batches
from bertkit.checkpoint import load_pretrained
from bertkit.errors import BertkitError
from bertkit.heads import pool
from bertkit.model import BertModel
from bertkit.tokenizer import BertTokenizer

POOLINGS = ("mean", "cls", "max")


def check_pooling(pooling: str, layers: Sequence[int], num_layers: int) -> None:
    if pooling not in POOLINGS:
        raise BertkitError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
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
    layers: Sequence[int] = (-1,),
) -> torch.Tensor:
    """One padded batch -> (batch, hidden) embeddings, with gradients when enabled (SetFit trains through this).

    Several `layers` are averaged token by token before pooling.
    """
    mask = batch["attention_mask"]
    lower = tuple(layers) != (-1,)
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
    layers: Sequence[int] = (-1,),
    batch_size: int = 64,
    max_seq_len: int | None = None,
) -> np.ndarray:
    """Texts -> (len(texts), hidden) float32 embeddings in input order, batched by length."""
    encoder = encoder_of(model)
    check_pooling(pooling, layers, encoder.config.num_hidden_layers)
    if isinstance(texts, str):
        raise BertkitError("texts must be a list of strings, not a single string")
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


def load_encoder(name_or_path: str | os.PathLike | None) -> tuple[BertModel, BertTokenizer, Path]:
    """The bare encoder of any model directory (heads are left out), with its tokenizer."""
    model, tokenizer, model_dir = load_pretrained(name_or_path, "BertModel")
    model.eval()
    return model, tokenizer, model_dir


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


def write_embeddings(path: Path, ids: list[int], vectors: np.ndarray, overwrite: bool = False) -> None:
    """.npy (one row per text, input order) or .jsonl ({"id", "embedding"} per line), written atomically."""
    import json
    import tempfile

    suffix = path.suffix.lower()
    if suffix not in (".npy", ".jsonl"):
        raise BertkitError(f"{path}: the output must end in .npy or .jsonl")
    if path.exists() and not overwrite:
        raise BertkitError(f"{path} already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".bertkit-tmp-", suffix=suffix, delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        if suffix == ".npy":
            np.save(tmp_path, vectors)
        else:
            lines = (json.dumps({"id": i, "embedding": row.tolist()}) for i, row in zip(ids, vectors))
            tmp_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp_path.chmod(0o644)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
