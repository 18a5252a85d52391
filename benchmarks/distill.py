"""`bertkit distill` on real English data: a 3-layer student of an all-MiniLM-L6-v2 sentiment classifier.

Data: gensim's 200 Pang & Lee polarity reviews in the demo's balanced splits (110 train, 30 dev, 60 test).
Unlabelled text for the teacher to label: the sentences of gensim's 10 IMDB reviews (alldata-id-10.txt, in
domain) and, after them, sentences of the Lee news corpus (out of domain), none of them in the test set.

- teacher: all-MiniLM-L6-v2 (6 layers) fine-tuned on the 110 labelled reviews, best dev epoch kept;
- distilled: 3 of the teacher's layers (1, 3, 5), `bertkit distill` on the labelled reviews plus the
  unlabelled sentences, and once on the labelled reviews alone;
- hard labels only (no teacher): the same 3 layers of the pre-trained (not fine-tuned) MiniLM, fine-tuned on
  the 110 labelled reviews, as one would without distillation.

Every model keeps its best dev epoch and is scored on the same 60 test reviews; its agreement with the teacher
(the share of the same labels) is counted on those and on --held-out further Lee sentences it never saw. Speed: `predict` on 500 real
English texts (the reviews and Lee news articles, ≤128 tokens), best of --repeats passes after a warm-up, at
one thread. One JSON line: accuracy of teacher and students (ratio student/teacher), texts/s (ratio),
parameters and model.safetensors size.

    OMP_NUM_THREADS=1 python -m benchmarks.distill [--epochs 5] [--unlabeled 600] [--held-out 400] [--repeats 1]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import best_time, emit, english_texts, interleave, machine, package_file, polarity_reviews
from bertkit.demo import PER_CLASS, split_by_class


def unlabeled_sentences(limit: int) -> list[str]:
    """Sentences of the IMDB reviews first (in domain), then of the Lee news corpus, `limit` in all."""
    test_data = "gensim/test/test_data/"
    reviews = package_file("gensim", test_data + "alldata-id-10.txt").read_text(encoding="utf-8").splitlines()
    news = package_file("gensim", test_data + "lee_background.cor").read_text(encoding="utf-8").splitlines()
    documents = [line.split(" ", 1)[1] for line in reviews if line.strip()] + [line for line in news if line.strip()]
    sentences = []
    for document in documents:
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(document.split())):
            if len(sentence.split()) >= 4:
                sentences.append(sentence)
    return sentences[:limit]


def rows(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"text": text, "label": label} for text, label in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--unlabeled", type=int, default=600, help="unlabelled sentences for the teacher to label")
    parser.add_argument("--held-out", type=int, default=400, help="further sentences, not trained on, to compare "
                        "the students' labels with the teacher's")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)

    import bertkit
    from bertkit.checkpoint import default_model_dir, load_pretrained
    from bertkit.distillation import student_from_layers

    data = split_by_class(polarity_reviews(), PER_CLASS)
    train, dev, test = rows(data["train"]), rows(data["dev"]), rows(data["test"])
    timed_texts = interleave(english_texts())
    common = {"epochs": args.epochs, "lr": args.lr, "batch_size": 16, "seed": 1, "overwrite": True}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bertkit-distill-") as tmp:
        work = Path(tmp)
        more = work / "more.txt"
        sentences = unlabeled_sentences(args.unlabeled + args.held_out)
        sentences, held_out = sentences[: args.unlabeled], sentences[args.unlabeled :]
        test_texts, teacher_labels = [row["text"] for row in test], {}
        more.write_text("\n".join(sentences) + "\n", encoding="utf-8")

        def run(name: str, train_model) -> None:
            started = time.perf_counter()
            model = train_model(work / name)
            seconds = time.perf_counter() - started
            texts_per_s = len(timed_texts) / best_time(lambda: model.predict(timed_texts), args.repeats)
            labels = [p["label"] for p in model.predict(test_texts + held_out)]
            teacher_labels.setdefault("labels", labels)  # the teacher runs first
            agree = [mine == theirs for mine, theirs in zip(labels, teacher_labels["labels"])]
            results[name] = {
                "accuracy": model.evaluate(test)["accuracy"],
                "agreement_with_teacher_test": round(sum(agree[: len(test)]) / len(test), 3),
                "agreement_with_teacher_held_out": round(sum(agree[len(test):]) / len(held_out), 3),
                "dev_accuracy": model.history.best,
                "train_seconds": round(seconds, 1),
                "predict_texts_per_s": round(texts_per_s, 1),
                "parameters": sum(p.numel() for p in model.model.parameters()),
                "safetensors_mib": round((work / name / "model.safetensors").stat().st_size / 2**20, 2),
            }
            print(f"{name}: {results[name]}", flush=True)

        run("teacher", lambda out: bertkit.finetune("classify", train, dev=dev, out=out, model=default_model_dir(),
                                                    **common))
        teacher = work / "teacher"
        run("distilled", lambda out: bertkit.distill(teacher, train, dev=dev, out=out, unlabeled=more,
                                                     student_layers=3, **common))
        run("distilled_labelled_only", lambda out: bertkit.distill(teacher, train, dev=dev, out=out,
                                                                   student_layers=3, **common))
        encoder, tokenizer, _ = load_pretrained(default_model_dir())
        run("hard_labels_only", lambda out: bertkit.finetune("classify", train, dev=dev, out=out, tokenizer=tokenizer,
                                                             model=student_from_layers(encoder, 3)[0], **common))

    teacher, student = results["teacher"], results["distilled"]
    emit({
        "benchmark": "distill",
        "data": {"train": len(train), "dev": len(dev), "test": len(test), "unlabeled": len(sentences), "held_out": len(held_out),
                 "timed_texts": len(timed_texts)},
        "settings": {"student_layers": 3, "layer_map": [1, 3, 5], "temperature": 2.0, "alpha": 0.5, **common},
        **results,
        "accuracy_ratio_student_teacher": round(student["accuracy"] / teacher["accuracy"], 3),
        "speed_ratio_student_teacher": round(student["predict_texts_per_s"] / teacher["predict_texts_per_s"], 2),
        "parameter_ratio_student_teacher": round(student["parameters"] / teacher["parameters"], 3),
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
