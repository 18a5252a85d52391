"""`bertkit predict` speed and peak memory vs transformers, with ONNX Runtime as a second peer.

The classifier is all-MiniLM-L6-v2 fine-tuned briefly on 150 real movie reviews (Pang & Lee polarity,
pos/neg); the other 50 are its held-out test. The timed work is 500 real English texts, short one-line
reviews and long news articles in a fixed shuffle, truncated at 128 tokens, end to end from strings to
labels and scores:

- bertkit: `Predictor.predict_stream`, what `bertkit predict --input` runs (length-sorted batches,
  unpadded encoder), with the torch backend in fp32 and bf16, and the onnx backend (fp32 and int8 graphs);
- transformers: `BertForSequenceClassification` (SDPA attention) over batches in input order, each padded
  to its longest text by the tokenizer (dynamic padding), then softmax; fp32, and bf16 under the same
  autocast bertkit uses.

Each contender runs in a fresh process, so its peak memory is its own: `peak_mib` is the process's
high-water resident memory while predicting (model, runtime and all), `extra_mib` what predicting adds
on top of the loaded model. Throughput is the best of --repeats passes after a warm-up, and of --rounds
rounds that run every contender in turn (peak memory: the highest of the rounds).

    python -m benchmarks.predict_speed [--batch-size 32] [--repeats 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (best_time, emit, encoder_forward_flops, english_texts, interleave, machine, matmul_peak_flops,
                               polarity_classifier)
from bertkit.checkpoint import default_model_dir

CONTENDERS = ("bertkit_fp32", "transformers_fp32", "bertkit_bf16", "transformers_bf16", "onnx_fp32", "onnx_int8")
MAX_LEN = 128


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the high-water mark restarts from the current RSS


def _load(contender: str, model_dir: Path, batch_size: int):
    """A function from texts to (label, scores) for this contender, with its model loaded."""
    if contender.startswith("transformers"):
        import transformers

        from bertkit.trainer import autocast

        tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
        model = transformers.BertForSequenceClassification.from_pretrained(model_dir, attn_implementation="sdpa").eval()
        labels = model.config.id2label
        bf16 = contender.endswith("bf16")

        def predict(texts: list[str]) -> list[tuple[str, list[float]]]:
            results = []
            with torch.inference_mode(), autocast(torch.device("cpu"), bf16):
                for start in range(0, len(texts), batch_size):
                    batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=MAX_LEN,
                                      return_tensors="pt")
                    probabilities = model(**batch).logits.float().softmax(-1)
                    results += [(labels[int(p.argmax())], p.tolist()) for p in probabilities]
            return results

        return predict

    from bertkit.inference import Predictor

    if contender.startswith("onnx"):
        graph = model_dir / ("model.int8.onnx" if contender == "onnx_int8" else "model.onnx")
        predictor = Predictor(model_dir, batch_size, backend="onnx", onnx_file=graph)
    else:
        predictor = Predictor(model_dir, batch_size, fp32=not contender.endswith("bf16"))
    names = [predictor.config.id2label[i] for i in range(predictor.config.num_labels)]

    def predict(texts: list[str]) -> list[tuple[str, list[float]]]:
        outputs = predictor.predict_stream(predictor.from_texts(texts))
        return [(p["label"], [p["scores"][name] for name in names]) for p in outputs]

    return predict


def worker(contender: str, model_dir: Path, batch_size: int, repeats: int, texts: list[str], test_texts: list[str]) -> dict:
    predict = _load(contender, model_dir, batch_size)
    loaded = _rss_mib("VmRSS")
    _reset_peak_rss()
    seconds = best_time(lambda: predict(texts), repeats)
    outputs = predict(texts)
    return {
        "texts_per_s": len(texts) / seconds,
        "peak_mib": _rss_mib("VmHWM"),
        "extra_mib": _rss_mib("VmHWM") - loaded,
        "labels": [label for label, _ in outputs],
        "scores": [scores for _, scores in outputs],
        "test_labels": [label for label, _ in predict(test_texts)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    texts = interleave(english_texts())
    if args.worker:
        work = Path(args.work)
        test = json.loads((work / "test.json").read_text())
        result = worker(args.worker, work / "model", args.batch_size, args.repeats, texts, [t for t, _ in test])
        print(json.dumps(result))
        return

    from bertkit.export import export_onnx
    from bertkit.trainer import bf16_available

    # bf16 is measured only where the CPU has it natively; emulated bf16 is many times slower than fp32 for both.
    contenders = [c for c in CONTENDERS if bf16_available(torch.device("cpu")) or not c.endswith("bf16")]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir, test = polarity_classifier(work / "model")
        (work / "test.json").write_text(json.dumps(test))
        graphs = {"onnx_fp32": export_onnx(model_dir), "onnx_int8": export_onnx(model_dir, model_dir / "model.int8.onnx", quantize="int8")}
        # Rounds alternate the contenders, so that a slow spell of a shared machine does not land on one of them.
        rounds: dict[str, list[dict]] = {contender: [] for contender in contenders}
        for _ in range(args.rounds):
            for contender in contenders:
                command = [sys.executable, "-m", "benchmarks.predict_speed", "--worker", contender, "--work", str(work),
                           "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
                rounds[contender].append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
        results = {}
        for contender, runs in rounds.items():
            results[contender] = {**max(runs, key=lambda r: r["texts_per_s"]),
                                  "peak_mib": max(r["peak_mib"] for r in runs), "extra_mib": max(r["extra_mib"] for r in runs),
                                  "rounds_texts_per_s": [round(r["texts_per_s"], 1) for r in runs]}

    reference = results["transformers_fp32"]
    gold = [label for _, label in test]

    def summary(name: str) -> dict:
        r = results[name]
        return {
            "texts_per_s": round(r["texts_per_s"], 1),
            "rounds_texts_per_s": r["rounds_texts_per_s"],
            "peak_mib": round(r["peak_mib"]),
            "extra_mib": round(r["extra_mib"]),
            "label_agreement_with_transformers_fp32": sum(a == b for a, b in zip(r["labels"], reference["labels"])) / len(texts),
            "max_score_diff_vs_transformers_fp32": float(f"{max(abs(a - b) for x, y in zip(r['scores'], reference['scores']) for a, b in zip(x, y)):.2e}"),
            "heldout_accuracy_50_reviews": sum(a == b for a, b in zip(r["test_labels"], gold)) / len(gold),
        }

    figures = {name: summary(name) for name in contenders}
    # Where the time goes: the model's matmul FLOPs over the real tokens, against the measured fp32 matmul rate.
    from bertkit.tokenizer import BertTokenizer

    config = json.loads((Path(default_model_dir()) / "config.json").read_text())
    lengths = [len(e.input_ids) for e in BertTokenizer.from_pretrained(default_model_dir()).encode_batch(texts, max_length=MAX_LEN)]
    flops = encoder_forward_flops(config["hidden_size"], config["num_hidden_layers"], lengths,
                                  last_layer_outputs=[1] * len(lengths))
    peak = matmul_peak_flops(torch.float32)
    for name, figure in figures.items():
        figure["fraction_of_fp32_matmul_peak"] = round(flops * figure["texts_per_s"] / len(texts) / peak, 3)
    has_bf16 = "bertkit_bf16" in figures
    emit({
        "benchmark": "predict_speed",
        "model": "all-MiniLM-L6-v2 + classifier fine-tuned on 150 Pang & Lee reviews",
        "texts": len(texts), "max_seq_len": MAX_LEN, "batch_size": args.batch_size,
        "ratio_fp32": round(figures["bertkit_fp32"]["texts_per_s"] / figures["transformers_fp32"]["texts_per_s"], 2),
        "ratio_bf16": round(figures["bertkit_bf16"]["texts_per_s"] / figures["transformers_bf16"]["texts_per_s"], 2)
        if has_bf16 else "not measured: this CPU has no native bf16",
        "ratio_onnx_fp32_vs_transformers_fp32": round(figures["onnx_fp32"]["texts_per_s"] / figures["transformers_fp32"]["texts_per_s"], 2),
        "peak_mib_ratio_fp32": round(figures["bertkit_fp32"]["peak_mib"] / figures["transformers_fp32"]["peak_mib"], 2),
        "peak_mib_ratio_bf16": round(figures["bertkit_bf16"]["peak_mib"] / figures["transformers_bf16"]["peak_mib"], 2)
        if has_bf16 else None,
        "fp32_matmul_peak_gflops": round(peak / 1e9, 1),
        "model_gflop_per_text": round(flops / len(texts) / 1e9, 2),
        "contenders": figures,
        "onnx_file_mib": {name: round(graph.size_bytes / 2**20, 1) for name, graph in graphs.items()},
        **machine(),
    })


if __name__ == "__main__":
    main()
