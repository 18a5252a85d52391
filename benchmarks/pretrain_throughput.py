"""Pre-training throughput (MLM + NSP): bertkit's trainer vs the transformers Trainer with
BertForPreTraining and DataCollatorForLanguageModeling, same config, data, batch, steps and precision.

    python -m benchmarks.pretrain_throughput [--model-size mini] [--steps 20] [--rounds 3] [--batch-size 32] [--max-len 128]

Data: People's Daily 1998 as NSP pairs (built once by bertkit, fed to both), a char-level vocab trained
on it. Tokens/s counts real (non-padding) tokens of the batches each side trained on, in the steady state
after 3 warm-up steps; `whole_fit_ratios` divide by the whole fit() instead (start-up, saving and plots
included). Each library fits --rounds times, taking turns; the reported figures are the median round's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers

from benchmarks.common import emit, encoder_forward_flops, machine, matmul_peak_flops, peoples_daily_pretraining
from bertkit.data.pretrain import pretraining_collate
from bertkit.heads import BertForPreTraining
from bertkit.config import BertConfig
from bertkit.pretraining import masked_lm_step
from bertkit.runtime import bf16_available
from bertkit.trainer import Trainer, TrainConfig


WARMUP_STEPS = 3


def steady_rate(rows: list[tuple[float, int, float]]) -> tuple[float, float]:
    """(real tokens/s, FLOP/s) between the warm-up and the last batch, without start-up or the end of training."""
    seconds = rows[-1][0] - rows[WARMUP_STEPS][0]
    done = rows[WARMUP_STEPS:-1]
    return sum(r[1] for r in done) / seconds, sum(r[2] for r in done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-size", default="mini")
    parser.add_argument("--steps", type=int, default=20, help="per fit; the first 3 are not timed")
    parser.add_argument("--rounds", type=int, default=3, help="fits per library, alternating which goes first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    args = parser.parse_args()
    # Both sides train in bf16 only where the CPU has it natively; emulated bf16 is many times slower than fp32.
    args.bf16 = args.bf16 and bf16_available(torch.device("cpu"))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokenizer, instances = peoples_daily_pretraining(work, args.max_len)
        config = BertConfig.from_size(args.model_size, tokenizer.vocab_size)
        hf_tokenizer = transformers.BertTokenizerFast.from_pretrained(work / "tok")
        mlm_collator = transformers.DataCollatorForLanguageModeling(hf_tokenizer, mlm_probability=0.15)
        dataset = [{"input_ids": i.tokens, "token_type_ids": i.token_type_ids, "next_sentence_label": i.next_sentence_label}
                   for i in instances]

        def fit(name: str) -> tuple[list[tuple[float, int, float]], float]:
            """One fit of `args.steps` steps from fresh weights: per batch, when its collation began (each side's
            loop asks for a batch as the step before it ends), its real tokens and its forward FLOPs; and the
            seconds of the whole fit()."""
            marks: list[tuple[float, int, float]] = []

            def count(batch: dict) -> dict:
                scored = (batch["labels"] != -100).sum(1)
                flops = encoder_forward_flops(config.hidden_size, config.num_hidden_layers,
                                              batch["attention_mask"].sum(1).tolist(), config.vocab_size,
                                              int(scored.sum()), last_layer_outputs=(scored + 1).tolist())
                marks.append((time.perf_counter(), int(batch["attention_mask"].sum()), flops))
                return batch

            torch.manual_seed(0)
            if name == "bertkit":
                def ours_collate(features, seed):
                    return count(pretraining_collate([f["instance"] for f in features], tokenizer,
                                                     torch.Generator().manual_seed(seed), False))

                train = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-4, bf16=args.bf16, max_steps=args.steps)
                trainer = Trainer(BertForPreTraining(config), [{"input_ids": i.tokens, "instance": i} for i in instances],
                                  train, work / "ours", tokenizer.pad_token_id, save=lambda m, d: None,
                                  collate_fn=ours_collate, loss_fn=masked_lm_step)
            else:
                theirs = transformers.BertForPreTraining(transformers.BertConfig(**{
                    k: v for k, v in config.to_dict().items() if k not in ("architectures",)}, attn_implementation="sdpa"))
                hf_args = transformers.TrainingArguments(
                    output_dir=str(work / "theirs"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                    learning_rate=1e-4, weight_decay=0.01, warmup_steps=0.1, bf16=args.bf16, use_cpu=True, report_to=[],
                    save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0,
                )
                trainer = transformers.Trainer(model=theirs, args=hf_args, train_dataset=dataset,
                                               data_collator=lambda rows: count(mlm_collator(rows)))
            start = time.perf_counter()
            trainer.train() if name == "transformers" else trainer.fit()
            return marks, time.perf_counter() - start

        # This machine's speed drifts by 10-20% over minutes, so the libraries take turns, and each round's
        # ratio compares two fits that ran back to back.
        rounds = []
        for index in range(args.rounds):
            order = ("bertkit", "transformers") if index % 2 == 0 else ("transformers", "bertkit")
            rounds.append({name: fit(name) for name in order})

    peak = matmul_peak_flops(torch.bfloat16 if args.bf16 else torch.float32)
    per_round = []
    for result in rounds:
        steady = {name: steady_rate(marks) for name, (marks, _) in result.items()}
        whole = {name: sum(r[1] for r in marks) / seconds for name, (marks, seconds) in result.items()}
        per_round.append({
            "tokens_per_s": {name: round(tps) for name, (tps, _) in steady.items()},
            "ratio": steady["bertkit"][0] / steady["transformers"][0],
            "whole_fit_ratio": whole["bertkit"] / whole["transformers"],
            # Forward and backward: 3x the forward's FLOPs. Both sides are credited with the same useful work (real
            # tokens, masked positions scored), so the fraction says how much of the machine each turns into training.
            "achieved_gflops": {name: 3 * flops_per_s / 1e9 for name, (_, flops_per_s) in steady.items()},
        })
    middle = sorted(per_round, key=lambda r: r["ratio"])[len(per_round) // 2]  # the median round
    emit({
        "benchmark": "pretrain_throughput", "model_size": args.model_size, "steps": args.steps, "rounds": args.rounds,
        "batch_size": args.batch_size, "max_len": args.max_len, "bf16": args.bf16,
        "bertkit_tokens_per_s": middle["tokens_per_s"]["bertkit"],
        "transformers_tokens_per_s": middle["tokens_per_s"]["transformers"],
        "ratio": round(middle["ratio"], 2),
        "round_ratios": [round(r["ratio"], 2) for r in per_round],
        "whole_fit_ratios": [round(r["whole_fit_ratio"], 2) for r in per_round],
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "achieved_gflops": {name: round(v, 1) for name, v in middle["achieved_gflops"].items()},
        "fraction_of_peak": {name: round(v * 1e9 / peak, 3) for name, v in middle["achieved_gflops"].items()},
        **machine(),
    })


if __name__ == "__main__":
    main()
