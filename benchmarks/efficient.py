"""How much each parameter-efficient method trains: the trainable share of a 2-label classifier on a real BERT.

    python -m benchmarks.efficient [--model DIR]   (default: the packaged all-MiniLM-L6-v2)

LoRA is also counted the usual way, `peft` on transformers' BertForSequenceClassification of the same
checkpoint (query, key, value and attention output, the classifier as modules_to_save): query, key and value
are one fused layer in bertkit and three in transformers, so a rank-r update there has more parameters. One
JSON line per method. Counting only, nothing trains: it takes seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io

from benchmarks.common import emit, machine
from bertkit.checkpoint import load_config, load_model, resolve_model_dir
from bertkit.efficient import EfficientOptions, prepare

METHODS = {
    "freeze_encoder": EfficientOptions(freeze="encoder"),
    "freeze_3": EfficientOptions(freeze="3"),
    "freeze_6": EfficientOptions(freeze="6"),
    "bitfit": EfficientOptions(peft="bitfit"),
    "lora_r8_qkv_out": EfficientOptions(peft="lora", lora_rank=8),
    "houlsby_64": EfficientOptions(peft="adapter", adapter_size=64),
}


def counts(model) -> tuple[int, int]:
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


def transformers_lora(model_dir, rank: int) -> tuple[int, int]:
    """The baseline: peft's LoRA on transformers' separate query, key, value and attention output layers."""
    import transformers
    from peft import LoraConfig, get_peft_model

    model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    config = LoraConfig(r=rank, lora_alpha=16, target_modules=["query", "key", "value", "attention.output.dense"],
                        modules_to_save=["classifier"])
    model = get_peft_model(model, config)
    return counts(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    model_dir = resolve_model_dir(args.model)
    for name, options in METHODS.items():
        config = load_config(model_dir)
        config.id2label = {0: "neg", 1: "pos"}
        if options.freeze is not None and options.freeze.isdigit() and int(options.freeze) > config.num_hidden_layers:
            continue
        model, _ = load_model(model_dir, "BertForSequenceClassification", config)
        with contextlib.redirect_stderr(io.StringIO()):
            prepare(model, options)
        trainable, total = counts(model)
        result = {"bench": "efficient", "method": name, "model": str(model_dir), "trainable": trainable,
                  "total": total, "share_pct": round(100 * trainable / total, 3), "machine": machine()}
        if name.startswith("lora"):
            theirs, their_total = transformers_lora(model_dir, options.lora_rank)
            result |= {"transformers_peft_trainable": theirs, "transformers_peft_total": their_total,
                       "transformers_peft_share_pct": round(100 * theirs / their_total, 3)}
        emit(result)


if __name__ == "__main__":
    main()
