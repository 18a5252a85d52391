"""Pre-training throughput (MLM + NSP): bertkit's trainer vs the transformers Trainer with
BertForPreTraining and DataCollatorForLanguageModeling, same config, data, batch, steps and precision.

    python -m benchmarks.pretrain_throughput [--model-size mini] [--steps 40] [--batch-size 32] [--max-len 128]

Data: People's Daily 1998 as NSP pairs (built once by bertkit, fed to both), a char-level vocab trained
on it. Tokens/s counts real (non-padding) tokens of the batches each side trained on.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
import transformers

from benchmarks.common import emit, encoder_forward_flops, machine, matmul_peak_flops
from bertkit.data.pretrain import Shards, create_instances, pretraining_collate
from bertkit.datasets import peoples_daily_sentences
from bertkit.heads import BertForPreTraining
from bertkit.model import BertConfig
from bertkit.pretrain import masked_lm_step
from bertkit.tokenizer import train_tokenizer
from bertkit.trainer import bf16_available, Trainer, TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-size", default="mini")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    args = parser.parse_args()
    # Both sides train in bf16 only where the CPU has it natively; emulated bf16 is many times slower than fp32.
    args.bf16 = args.bf16 and bf16_available(torch.device("cpu"))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "corpus.txt"
        corpus.write_text("\n\n".join("\n".join(d) for d in peoples_daily_sentences()) + "\n", encoding="utf-8")
        tokenizer = train_tokenizer([corpus], 8000, show_progress=False)
        tokenizer.save_pretrained(work / "tok")
        shards = Shards.open_or_build([corpus], tokenizer, work / "shards", chinese_words=False, show_progress=False)
        instances = create_instances(shards, args.max_len, random.Random(0))
        config = BertConfig.from_size(args.model_size, tokenizer.vocab_size)

        counted = {"bertkit": 0, "transformers": 0}
        work_done = {"bertkit": 0.0, "transformers": 0.0}  # model FLOPs of the forward passes each side trained on

        def count(name: str, batch: dict) -> None:
            counted[name] += int(batch["attention_mask"].sum())
            work_done[name] += encoder_forward_flops(config.hidden_size, config.num_hidden_layers,
                                                     batch["attention_mask"].sum(1).tolist(), config.vocab_size,
                                                     int((batch["labels"] != -100).sum()))

        def ours_collate(features, seed):
            batch = pretraining_collate([f["instance"] for f in features], tokenizer, torch.Generator().manual_seed(seed), False)
            count("bertkit", batch)
            return batch

        torch.manual_seed(0)
        ours = BertForPreTraining(config)
        train = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-4, bf16=args.bf16, max_steps=args.steps)
        trainer = Trainer(ours, [{"input_ids": i.tokens, "instance": i} for i in instances], train, work / "ours",
                          tokenizer.pad_token_id, save=lambda m, d: None, collate_fn=ours_collate, loss_fn=masked_lm_step)
        start = time.perf_counter()
        trainer.fit()
        ours_s = time.perf_counter() - start

        hf_tokenizer = transformers.BertTokenizerFast.from_pretrained(work / "tok")
        mlm_collator = transformers.DataCollatorForLanguageModeling(hf_tokenizer, mlm_probability=0.15)

        def theirs_collate(rows):
            batch = mlm_collator(rows)
            count("transformers", batch)
            return batch

        torch.manual_seed(0)
        theirs = transformers.BertForPreTraining(transformers.BertConfig(**{
            k: v for k, v in config.to_dict().items() if k not in ("architectures",)}, attn_implementation="sdpa"))
        dataset = [{"input_ids": i.tokens, "token_type_ids": i.token_type_ids, "next_sentence_label": i.next_sentence_label}
                   for i in instances]
        hf_args = transformers.TrainingArguments(
            output_dir=str(work / "theirs"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=1e-4, weight_decay=0.01, warmup_steps=0.1, bf16=args.bf16, use_cpu=True, report_to=[],
            save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0,
        )
        hf_trainer = transformers.Trainer(model=theirs, args=hf_args, train_dataset=dataset, data_collator=theirs_collate)
        start = time.perf_counter()
        hf_trainer.train()
        theirs_s = time.perf_counter() - start

    ours_tps, theirs_tps = counted["bertkit"] / ours_s, counted["transformers"] / theirs_s
    peak = matmul_peak_flops(torch.bfloat16 if args.bf16 else torch.float32)
    # Forward and backward: 3x the forward's FLOPs. Both sides are credited with the same useful work (real tokens,
    # masked positions scored), so the fraction says how much of the machine each turns into training.
    achieved = {"bertkit": 3 * work_done["bertkit"] / ours_s, "transformers": 3 * work_done["transformers"] / theirs_s}
    emit({
        "benchmark": "pretrain_throughput", "model_size": args.model_size, "steps": args.steps,
        "batch_size": args.batch_size, "max_len": args.max_len, "bf16": args.bf16,
        "bertkit_tokens_per_s": round(ours_tps), "transformers_tokens_per_s": round(theirs_tps),
        "ratio": round(ours_tps / theirs_tps, 2),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "achieved_gflops": {name: round(flops / 1e9, 1) for name, flops in achieved.items()},
        "fraction_of_peak": {name: round(flops / peak, 3) for name, flops in achieved.items()},
        **machine(),
    })


if __name__ == "__main__":
    main()
