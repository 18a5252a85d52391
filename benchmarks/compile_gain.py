"""Does torch.compile pay for BERT training on this machine? Pre-training steps of the same model on the
same batches, eager against `torch.compile` (inductor) on each encoder layer.

    python -m benchmarks.compile_gain [--model-size mini] [--steps 12] [--batch-size 32] [--max-len 128]

Both run the padded path, whose shapes are the same every step (the unpadded path re-plans its attention
groups per batch, which would recompile). The baseline here is bertkit eager, not transformers: this
measures one technique. Step times are medians after two warm-up steps; compile time is reported apart.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit, machine, peoples_daily_pretraining
from bertkit.data.pretrain import pretraining_collate
from bertkit.heads import BertForPreTraining
from bertkit.config import BertConfig
from bertkit.pretraining import masked_lm_step
from bertkit.trainer import make_optimizer

WARMUP = 2


def step_times(model: BertForPreTraining, batches: list[dict[str, torch.Tensor]], steps: int) -> list[float]:
    optimizer = make_optimizer(model, 1e-4, 0.01)
    model.train()
    times = []
    for index in range(steps + WARMUP):
        batch = batches[index % len(batches)]
        start = time.perf_counter()
        loss, _ = masked_lm_step(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-size", default="mini")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=128)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, instances = peoples_daily_pretraining(Path(tmp), args.max_len)
    config = BertConfig.from_size(args.model_size, tokenizer.vocab_size)
    size = args.batch_size
    batches = [pretraining_collate(instances[i * size : (i + 1) * size], tokenizer, torch.Generator().manual_seed(i), False)
               for i in range(8)]

    results = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = BertForPreTraining(config)
        model.bert.forward = functools.partial(type(model.bert).forward, model.bert, unpad=False)
        if name == "compiled":
            for layer in model.bert.layers:
                layer.compile()
        times = step_times(model, batches, args.steps)
        results[name] = {"step_ms": round(1000 * statistics.median(times[WARMUP:])), "first_step_s": round(times[0], 1)}

    emit({
        "benchmark": "compile_gain", "model_size": args.model_size, "batch_size": size, "max_len": args.max_len,
        "steps": args.steps, "eager_step_ms": results["eager"]["step_ms"],
        "compiled_step_ms": results["compiled"]["step_ms"],
        "speedup": round(results["eager"]["step_ms"] / results["compiled"]["step_ms"], 2),
        "compile_first_step_s": results["compiled"]["first_step_s"], **machine(),
    })


if __name__ == "__main__":
    main()
