"""Prediction speed and agreement: PyTorch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8, one classifier.

The classifier is all-MiniLM-L6-v2 fine-tuned briefly on 150 real movie reviews (Pang & Lee polarity,
pos/neg); the other 50 are its held-out test. Speed is `Predictor.predict` end to end (tokenizing,
length-sorted batches, the forward passes, softmax) over 500 real English texts, short reviews and long
news articles, truncated at 128 tokens. Agreement is the share of those 500 texts where a backend's
label equals the PyTorch label.

    python -m benchmarks.onnx_predict [--batch-size 32] [--repeats 3] [--epochs 3] [--lr 2e-4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import onnxruntime

from benchmarks.common import best_time, emit, english_texts, interleave, machine, package_file
from bertkit.export import export_onnx
from bertkit.finetune import finetune
from bertkit.inference import Predictor
from bertkit.tasks import ClassifyTask
from bertkit.trainer import TrainConfig


def polarity_reviews() -> list[tuple[str, str]]:
    """(text, "pos"/"neg") for the 200 labelled one-line reviews, in file order (alternating blocks)."""
    path = package_file("gensim", "gensim/test/test_data/pang_lee_polarity.cor")
    rows = []
    for line in path.read_text(encoding="cp1252").splitlines():
        if line.strip():
            label, text = line.split(" ", 1)
            rows.append((text.strip(), label.removeprefix("__label__")))
    return rows


def write_jsonl(rows: list[tuple[str, str]], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in rows), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-4)
    args = parser.parse_args()

    reviews = interleave(polarity_reviews())
    train, test = reviews[:150], reviews[150:]
    texts = english_texts()
    with tempfile.TemporaryDirectory() as work:
        model_dir = Path(work) / "minilm-polarity"
        finetune(ClassifyTask(), write_jsonl(train, Path(work) / "train.jsonl"), model_dir, None,
                 train_config=TrainConfig(epochs=args.epochs, batch_size=16, lr=args.lr, seed=1, bf16=False))
        test_file = write_jsonl(test, Path(work) / "test.jsonl")
        fp32 = export_onnx(model_dir)
        int8 = export_onnx(model_dir, Path(work) / "model.int8.onnx", quantize="int8")
        predictors = {
            "torch_fp32": Predictor(model_dir, args.batch_size),
            "onnx_fp32": Predictor(model_dir, args.batch_size, backend="onnx"),
            "onnx_int8": Predictor(model_dir, args.batch_size, backend="onnx", onnx_file=int8.path),
        }
        examples = predictors["torch_fp32"].from_texts(texts)
        seconds, outputs, accuracy = {}, {}, {}
        for name, predictor in predictors.items():
            outputs[name] = predictor.predict(examples)
            seconds[name] = best_time(lambda: predictor.predict(examples), args.repeats)
            accuracy[name] = predictor.evaluate(test_file)["accuracy"]
        reference = outputs.pop("torch_fp32")
        agreement = {name: sum(a["label"] == b["label"] for a, b in zip(preds, reference)) / len(texts)
                     for name, preds in outputs.items()}
        score_diffs = {name: max(abs(a["scores"][k] - b["scores"][k]) for a, b in zip(preds, reference) for k in a["scores"])
                       for name, preds in outputs.items()}
        emit({
            "benchmark": "onnx_predict",
            "model": "all-MiniLM-L6-v2 + classifier fine-tuned on 150 Pang & Lee reviews",
            "texts": len(texts),
            "max_seq_len": 128,
            "batch_size": args.batch_size,
            "texts_per_s": {name: round(len(texts) / s, 1) for name, s in seconds.items()},
            "speedup_vs_torch": {name: round(seconds["torch_fp32"] / s, 2) for name, s in seconds.items() if name != "torch_fp32"},
            "label_agreement_with_torch": agreement,
            "max_score_diff_vs_torch": {name: float(f"{d:.2e}") for name, d in score_diffs.items()},
            "heldout_accuracy_50_reviews": accuracy,
            "file_mib": {"onnx_fp32": round(fp32.size_bytes / 2**20, 1), "onnx_int8": round(int8.size_bytes / 2**20, 1)},
            "onnxruntime": onnxruntime.__version__,
            **machine(),
        })


if __name__ == "__main__":
    main()
