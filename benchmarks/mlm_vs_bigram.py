"""Has a pre-trained model learned to use its neighbours? Its masked-LM loss next to a counting baseline.

    python -m benchmarks.mlm_vs_bigram --model runs/story/pretrained [--no-nsp]

On the checkpoint's own held-out documents (the ones `bertkit pretrain` held out, read from the shards it
left in the model directory), both predict the same masked positions, with the same masks: the model from
everything it sees, and a bigram count table from the training documents, p(token | its left neighbour),
add-k smoothed, falling back to unigram counts where the left neighbour is masked too (see
`bertkit.pretraining.mlm_against_bigram`). A model above the bigram's loss has learned little beyond token
frequencies. Prints one JSON line: both losses (nats), both accuracies and the loss ratio.
"""

from __future__ import annotations

import argparse

from benchmarks.common import emit, machine
from bertkit.pretraining import mlm_against_bigram


def main() -> None:
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
