"""Has a pre-trained model learned to use its neighbours? Its masked-LM loss next to a counting baseline.

    python -m benchmarks.mlm_vs_bigram --model runs/story/pretrained [--no-nsp]

On the checkpoint's own held-out documents (the ones `bertkit pretrain` held out, read from the shards it
left in the model directory), both predict the same masked positions, with the same masks: the model from
everything it sees, and a bigram count table from the training documents, p(token | its left neighbour),
add-k smoothed, falling back to unigram counts where the left neighbour is masked too (see
`mlm_against_bigram` below). A model above the bigram's loss has learned little beyond token
frequencies. Prints one JSON line: both losses (nats), both accuracies and the loss ratio.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
import torch

from bertkit.checkpoint import load_model
from bertkit.data.pretrain import Shards, create_instances
from bertkit.errors import BertkitError
from bertkit.batching import IGNORE_INDEX
from bertkit.pretraining import _split_documents, held_out_batches
from bertkit.tokenizer import BertTokenizer

BIGRAM_SMOOTHING = 0.1  # add-k for the bigram counts, scaled by the unigram distribution


class Bigram:
    """p(token | left neighbour) from counts over the training documents, add-k smoothed towards the unigram."""

    def __init__(self, shards: Shards, documents: range, vocab_size: int) -> None:
        first, last = int(shards.document_starts[documents[0]]), int(shards.document_starts[documents[-1] + 1])
        tokens = np.asarray(shards.tokens[int(shards.sentence_starts[first]) : int(shards.sentence_starts[last])],
                            dtype=np.int64)
        self.vocab_size = vocab_size
        self.unigram = (np.bincount(tokens, minlength=vocab_size) + 1.0) / (len(tokens) + vocab_size)
        # Sorted pair codes left*V + right with their counts; a left token's row is one contiguous slice.
        self.pairs, self.counts = np.unique(tokens[:-1] * vocab_size + tokens[1:], return_counts=True)
        self.left_totals = np.bincount(tokens[:-1], minlength=vocab_size)
        self._rows: dict[int, np.ndarray] = {}

    def row(self, left: int) -> np.ndarray:
        if left not in self._rows:
            lo, hi = np.searchsorted(self.pairs, [left * self.vocab_size, (left + 1) * self.vocab_size])
            row = BIGRAM_SMOOTHING * self.vocab_size * self.unigram
            row[self.pairs[lo:hi] % self.vocab_size] += self.counts[lo:hi]
            self._rows[left] = row / (self.left_totals[left] + BIGRAM_SMOOTHING * self.vocab_size)
        return self._rows[left]


def mlm_against_bigram(model_dir: str | Path, max_seq_len: int = 128, nsp: bool = True, batch_size: int = 64) -> dict[str, float]:
    """A pre-trained checkpoint's masked-LM loss and accuracy next to a bigram count table's, on the same masked
    positions of the documents `pretrain` held out (read from the shards it left in the model directory).

    The bigram predicts a masked token from the token to its left as the model sees it, falling back to unigram
    counts where that neighbour is masked too. A model above the bigram's loss has learned little beyond token
    frequencies and the nearest neighbour: the plateau short pre-training runs end on.
    """
    model_dir = Path(model_dir)
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    model, _ = load_model(model_dir, "BertForPreTraining")
    model.eval()
    shards = Shards.open(model_dir / "shards")
    train_docs, held_docs = _split_documents(shards.num_documents, nsp)
    if held_docs is None:
        raise BertkitError(f"the corpus in {model_dir} is too small to have held documents out")
    held = create_instances(shards, max_seq_len, random.Random(0), nsp=nsp, documents=held_docs)
    bigram = Bigram(shards, train_docs, tokenizer.vocab_size)
    model_nll = bigram_nll = 0.0
    model_correct = bigram_correct = positions = 0
    for batch in held_out_batches(held, tokenizer, batch_size, whole_word=False):
        with torch.inference_mode():
            logits = model(**batch, masked_only=True).mlm_logits.float()
        where = batch["labels"] != IGNORE_INDEX
        labels = batch["labels"][where]
        model_nll += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        model_correct += int((logits.argmax(-1) == labels).sum())
        for (row, column), label in zip(where.nonzero().tolist(), labels.tolist()):
            left = int(batch["input_ids"][row, column - 1])  # [MASK] when the neighbour is masked too
            probabilities = bigram.unigram if left == tokenizer.mask_token_id else bigram.row(left)
            bigram_nll -= math.log(probabilities[label])
            bigram_correct += int(probabilities.argmax() == label)
        positions += len(labels)
    if not positions:
        raise BertkitError("the held-out documents gave no masked positions")
    return {
        "masked_positions": positions,
        "model_mlm_loss": model_nll / positions, "bigram_mlm_loss": bigram_nll / positions,
        "model_mlm_accuracy": model_correct / positions, "bigram_mlm_accuracy": bigram_correct / positions,
    }


def main() -> None:
    from benchmarks.common import emit, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/story/pretrained")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--no-nsp", action="store_true", help="the checkpoint was pre-trained with --no-nsp")
    args = parser.parse_args()
    result = mlm_against_bigram(args.model, args.max_seq_len, nsp=not args.no_nsp)
    emit({
        "benchmark": "mlm_vs_bigram", "model": args.model,
        **{key: round(value, 4) for key, value in result.items()},
        "loss_ratio": round(result["model_mlm_loss"] / result["bigram_mlm_loss"], 3),
        **machine(),
    })


if __name__ == "__main__":
    main()
