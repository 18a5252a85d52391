"""What a fine-tuned BERT is measured against: the majority-class (prior) baseline, which `evaluate` reports
beside every model's score, and `bertkit baseline`, TF-IDF features + logistic regression (scikit-learn), the
"text representation + statistical learning" recipe that came before BERT.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from bertkit.checkpoint import refuse_to_replace_model
from bertkit.data.cjk import is_cjk
from bertkit.errors import BertkitError
from bertkit.fileio import atomic_write_text
from bertkit.options import Options, option, split_keywords

if TYPE_CHECKING:
    from bertkit.data.classify import ClassifyExample
    from bertkit.tasks import Task

PRIOR_KEY = "label_prior"  # under "bertkit" in a fine-tuned model's config.json
BASELINE_FILES = ("metrics.json", "predictions.jsonl")


def prior_metrics(task: Task, examples: list[Any], config: Any, prior: dict[str, Any] | None = None) -> dict | None:
    """The scores of always predicting the majority class on `examples`, or None where the task has no such
    baseline (QA). The prior is `prior` (training labels), else the one saved with the model; a model trained
    elsewhere has none, and then the evaluated labels' own majority is used, which `from` says."""
    source = "training labels"
    if prior is None:
        prior = (getattr(config, "extra", {}).get("bertkit") or {}).get(PRIOR_KEY)
    if prior is None and (prior := task.label_prior(examples)) is not None:
        source = "evaluated labels (the model saved no training prior)"
    predictions = task.prior_predictions(examples, prior)
    if predictions is None:
        return None
    return {**task.score(examples, predictions, config), **({"from": source} if prior is not None else {})}


@dataclass
class BaselineOptions(Options):
    """The settings of `bertkit baseline` besides the classification columns."""

    analyzer: str = option("auto", "TF-IDF terms: word 1-2-grams, char 1-3-grams (needs no word segmentation, "
                                   "for Chinese), or auto: char when most training texts contain CJK characters",
                           choices=("auto", "word", "char"))
    c: float = option(1.0, "C of the logistic regression: the inverse of the regularisation strength", above=0)
    max_features: int | None = option(None, "keep only the N most frequent terms (default: all)", min=1)
    seed: int = option(42, "random seed of the solver", min=0)
    overwrite: bool = option(False, "replace a baseline already in --out")


def choose_analyzer(texts: list[str], analyzer: str) -> str:
    if analyzer != "auto":
        return analyzer
    cjk = sum(any(is_cjk(char) for char in text) for text in texts)
    return "char" if cjk > len(texts) / 2 else "word"


def _texts(examples: list[ClassifyExample]) -> list[str]:
    """One string per example; a sentence pair's two texts on two lines."""
    return [e.text if e.pair is None else f"{e.text}\n{e.pair}" for e in examples]


def _pipeline(analyzer: str, options: BaselineOptions, multi_label: bool) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    if analyzer == "char":  # character n-grams within words: Chinese needs no segmenter (jieba) this way
        vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True,
                                     max_features=options.max_features)
    else:  # single-letter words ("a", "I", Chinese characters between spaces) count too
        vectorizer = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b",
                                     sublinear_tf=True, max_features=options.max_features)
    classifier = LogisticRegression(C=options.c, max_iter=1000, random_state=options.seed)
    return make_pipeline(vectorizer, OneVsRestClassifier(classifier) if multi_label else classifier)


def baseline(train: Any, test: Any, out: str | os.PathLike | None = None, **options: Any) -> dict[str, Any]:
    """Fit TF-IDF + logistic regression on `train` and score it on `test` (paths, lists of dicts or DataFrames,
    read as `finetune("classify")` reads them). Returns the same dict as `evaluate`, the majority-class scores
    under "prior"; with `out`, also writes out/metrics.json and out/predictions.jsonl (one line per test row).

    `options`: the classification columns (text_column, text_pair_column, label_column, multi_label) and
    analyzer, c, max_features, seed, overwrite.
    """
    from bertkit.tasks.classify import ClassifyOptions, ClassifyTask

    task_options, settings = split_keywords(options, ClassifyOptions, BaselineOptions, what="baseline")
    settings = BaselineOptions(**settings)
    task = ClassifyTask(task_options)
    if out is not None:
        refuse_to_replace_model(Path(out), settings.overwrite, None, BASELINE_FILES, "a baseline")
    train_examples = task.examples(train, "train")
    test_examples = task.examples(test, "test")
    labels = task.label_list(train_examples)
    config = SimpleNamespace(id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    task.check_labels(test_examples, config, test if isinstance(test, (str, os.PathLike)) else "test")

    multi_label = task.options.multi_label
    texts = _texts(train_examples)
    analyzer = choose_analyzer(texts, settings.analyzer)
    if multi_label:
        targets = [[int(label in e.label) for label in labels] for e in train_examples]
    else:
        targets = [config.label2id[e.label] for e in train_examples]
    model = _pipeline(analyzer, settings, multi_label)
    try:
        model.fit(texts, targets)
    except ValueError as exc:  # a training file whose texts hold no term at all, say
        raise BertkitError(f"baseline: cannot fit on the training data ({str(exc).splitlines()[0]})") from None
    probabilities = model.predict_proba(_texts(test_examples)).tolist()
    predictions = [task.prediction(probs, labels) for probs in probabilities]
    metrics = task.score(test_examples, predictions, config)
    metrics["prior"] = prior_metrics(task, test_examples, config, task.label_prior(train_examples))
    if out is not None:
        from bertkit.callbacks import to_json

        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        record = {**metrics, "baseline": {"model": "tf-idf + logistic regression", "analyzer": analyzer,
                                          "c": settings.c, "max_features": settings.max_features, "seed": settings.seed}}
        lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
        atomic_write_text(directory / "predictions.jsonl", lines)
        atomic_write_text(directory / "metrics.json", to_json(record))
    return metrics
