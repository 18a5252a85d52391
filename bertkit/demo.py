"""`bertkit demo`: a real BERT end to end in under a minute, offline.

Loads a real checkpoint, tokenizes English and Chinese, runs the encoder, ranks sentence similarity
with mean-pooled embeddings (how all-MiniLM-L6-v2 was trained to be used), and saves and reloads the
checkpoint to show that the round trip is exact.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bertkit.checkpoint import load_pretrained, save_model

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a stringed instrument.",
    "The stock market fell sharply on Monday.",
    "Share prices dropped at the start of the week.",
    "今天天气很好，我们去公园散步吧。",
]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors: the sentence embedding all-MiniLM-L6-v2 was trained for."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def run_demo(model_name: str | None, out_dir: str) -> None:
    model, tokenizer, model_dir = load_pretrained(model_name, architecture="BertModel")
    model.eval()
    print(f"model: {model_dir}")
    cfg = model.config
    print(f"  {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, vocab {cfg.vocab_size}")
    for text in (SENTENCES[0], SENTENCES[-1]):
        print(f"tokens of {text!r}:\n  {' '.join(tokenizer.encode(text).tokens)}")

    batch = tokenizer(SENTENCES)
    start = time.perf_counter()
    with torch.inference_mode():
        hidden = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
    elapsed = time.perf_counter() - start
    embeddings = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    similarity = embeddings @ embeddings.T
    print(f"encoded {len(SENTENCES)} sentences in {elapsed * 1000:.0f} ms; cosine similarity of mean-pooled embeddings:")
    for i, text in enumerate(SENTENCES):
        scores = " ".join(f"{similarity[i, j]:5.2f}" for j in range(len(SENTENCES)))
        print(f"  {scores}  {text}")
    best = int(similarity[0, 1:].argmax()) + 1
    print(f"closest to sentence 1: {SENTENCES[best]!r}")

    out = Path(out_dir)
    save_model(model, out)
    tokenizer.save_pretrained(out)
    reloaded, _, _ = load_pretrained(out)
    reloaded.eval()
    with torch.inference_mode():
        again = reloaded(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
    diff = (again - hidden).abs().max().item()
    print(f"saved to {out} (Hugging Face layout) and reloaded: max abs difference {diff:.1e}")
