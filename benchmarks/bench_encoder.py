"""Encoder forward throughput: bertkit vs transformers on all-MiniLM-L6-v2, real variable-length English.

Both models get the very same padded batches (input order, padded to the longest text in each batch,
tokenized once beforehand), so the figure measures the encoders alone.

    python benchmarks/bench_encoder.py [--dtype fp32|bf16] [--batch-size 32] [--max-len 256]
"""

from __future__ import annotations

import argparse

import torch
import transformers

from benchmarks.common import best_time, emit, encoder_forward_flops, english_texts, interleave, machine, matmul_peak_flops
from bertkit.checkpoint import default_model_dir, load_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dtype = DTYPES[args.dtype]

    model_dir = default_model_dir()
    texts = interleave(english_texts())
    hf_tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
    batches = [
        hf_tokenizer(texts[i : i + args.batch_size], padding=True, truncation=True, max_length=args.max_len, return_tensors="pt")
        for i in range(0, len(texts), args.batch_size)
    ]
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded_tokens = sum(b["attention_mask"].numel() for b in batches)

    ours, _ = load_model(model_dir, "BertModel")
    theirs = transformers.BertModel.from_pretrained(model_dir, attn_implementation="sdpa")
    ours, theirs = ours.eval().to(dtype), theirs.eval().to(dtype)

    def run_ours() -> None:
        with torch.inference_mode():
            for b in batches:
                ours(b["input_ids"], b["attention_mask"], b["token_type_ids"])

    def run_theirs() -> None:
        with torch.inference_mode():
            for b in batches:
                theirs(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"])

    ours_s = best_time(run_ours, args.repeats)
    theirs_s = best_time(run_theirs, args.repeats)
    config = ours.config
    flops = encoder_forward_flops(config.hidden_size, config.num_hidden_layers,
                                  [n for b in batches for n in b["attention_mask"].sum(1).tolist()])
    peak = matmul_peak_flops(dtype)
    emit({
        "benchmark": "encoder_forward",
        "model": "all-MiniLM-L6-v2",
        "dtype": args.dtype,
        "texts": len(texts),
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "padding_fraction": round(1 - real_tokens / padded_tokens, 3),
        "bertkit_texts_per_s": round(len(texts) / ours_s, 1),
        "transformers_texts_per_s": round(len(texts) / theirs_s, 1),
        "ratio": round(theirs_s / ours_s, 2),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "fraction_of_peak": {"bertkit": round(flops / ours_s / peak, 3), "transformers": round(flops / theirs_s / peak, 3)},
        **machine(),
    })


if __name__ == "__main__":
    main()
