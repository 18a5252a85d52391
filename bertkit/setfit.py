"""Few-shot and zero-shot classification with a sentence encoder (SetFit style).

SetFit: fine-tune the encoder contrastively on pairs of labelled examples (cosine similarity pulled to 1
for the same label, to 0 for different labels), then fit a scikit-learn logistic regression on the
embeddings. Zero-shot: score a text by its cosine similarity to each label's description.

Both results are saved as an ordinary BertForSequenceClassification directory whose head reads the
normalised mean-pooled embedding (`classifier_pooling: "mean"`): the logistic regression, or the label
descriptions' embeddings, become its linear layer. So the model predicts, evaluates, serves and exports to
one ONNX graph like any classifier, with the same JSON; and its encoder is the embedder (`bertkit embed`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.batching import collate
from bertkit.callbacks import to_json
from bertkit.checkpoint import load_config, load_pretrained, refuse_to_replace_model, resolve_model_dir, save_model
from bertkit.data.classify import ClassifyExample
from bertkit.embeddings import embed_batch, encode
from bertkit.errors import BertkitError
from bertkit.fileio import atomic_write_text
from bertkit.heads import BertForSequenceClassification
from bertkit.options import Options, option, split_keywords
from bertkit.tasks import ClassifyTask
from bertkit.tasks.classify import ClassifyOptions
from bertkit.tokenizer import BertTokenizer, read_json_object
from bertkit.trainer import History, set_seed


@dataclass
class SetFitOptions(Options):
    """The settings of `bertkit finetune setfit` besides the classify columns and --max-seq-len."""

    num_pairs: int = option(640, "contrastive pairs in all, half of one label, whatever the number of classes", min=2)
    epochs: int = option(1, "passes over the pairs", min=1)
    batch_size: int = option(16, "pairs per step", min=1)
    lr: float = option(2e-5, "encoder learning rate (AdamW, linear decay)", above=0)
    k: int | None = option(None, "keep K random training examples per class (default: all)", min=1)
    head_c: float = option(1.0, "inverse L2 strength of the logistic-regression head", above=0)
    seed: int = option(42, "seed of the K-shot sample, the pairs and the training", min=0)


def sample_per_class(examples: list[ClassifyExample], k: int, seed: int) -> list[ClassifyExample]:
    """K examples of each label, drawn at random (in input order within the sample)."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        by_label[example.label].append(index)
    rng = random.Random(seed)
    chosen: list[int] = []
    for label, indices in sorted(by_label.items()):
        if len(indices) < k:
            raise BertkitError(f"K={k} examples per class, but label {label!r} has only {len(indices)}")
        chosen += rng.sample(indices, k)
    return [examples[i] for i in sorted(chosen)]


def sample_pairs(labels: list[str], num_pairs: int, seed: int) -> list[tuple[int, int, float]]:
    """`num_pairs` (i, j, target) pairs, half of one label (target 1) and half of two labels (target 0).

    A pair's label (or two labels) is drawn uniformly first, then its examples, so every class is seen
    equally often however unbalanced the data, and the count stays fixed as classes grow (setfit #249).
    """
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    names = sorted(by_label)
    pairable = [name for name in names if len(by_label[name]) >= 2]
    if not pairable:
        raise BertkitError("SetFit needs at least two examples of some label to draw similar pairs from")
    rng = random.Random(seed)
    pairs = []
    for n in range(num_pairs):
        if n % 2 == 0:
            i, j = rng.sample(by_label[rng.choice(pairable)], 2)
            pairs.append((i, j, 1.0))
        else:
            first, second = rng.sample(names, 2)
            pairs.append((rng.choice(by_label[first]), rng.choice(by_label[second]), 0.0))
    rng.shuffle(pairs)
    return pairs


def contrastive_tune(
    model: BertForSequenceClassification, tokenizer: BertTokenizer, texts: list[str], pairs: list[tuple[int, int, float]],
    options: SetFitOptions, max_seq_len: int,
) -> list[float]:
    """Train the encoder so that the cosine of each pair's mean-pooled embeddings approaches its target; the losses."""
    encoder = model.bert
    encoder.train()
    device = next(encoder.parameters()).device
    encodings = tokenizer.encode_batch(texts, max_length=max_seq_len)
    features = [{"input_ids": e.input_ids, "token_type_ids": e.token_type_ids} for e in encodings]
    steps = options.epochs * math.ceil(len(pairs) / options.batch_size)
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=options.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    rng = random.Random(options.seed)

    def embed(side: int, chunk: list[tuple[int, int, float]]) -> torch.Tensor:
        batch = collate([features[pair[side]] for pair in chunk], tokenizer.pad_token_id)
        return embed_batch(encoder, {k: v.to(device) for k, v in batch.items()}, normalize=False)

    losses = []
    for _ in range(options.epochs):
        order = pairs[:]
        rng.shuffle(order)
        for start in range(0, len(order), options.batch_size):
            chunk = order[start : start + options.batch_size]
            target = torch.tensor([pair[2] for pair in chunk], device=device)
            loss = F.mse_loss(F.cosine_similarity(embed(0, chunk), embed(1, chunk)), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    encoder.eval()
    return losses


def fit_head(embeddings: np.ndarray, label_ids: list[int], num_labels: int, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A logistic regression on the embeddings as (num_labels, hidden) weights and (num_labels,) biases.

    Softmax over these logits equals scikit-learn's predict_proba: for two labels its one logit w.x+b
    becomes the pair (0, w.x+b), whose softmax is the sigmoid.
    """
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(embeddings, label_ids)
    if list(head.classes_) != list(range(num_labels)):
        raise BertkitError("every label needs at least one training example for the logistic-regression head")
    weight, bias = head.coef_.astype(np.float32), head.intercept_.astype(np.float32)
    if num_labels == 2:
        weight = np.concatenate([np.zeros_like(weight), weight])
        bias = np.concatenate([np.zeros_like(bias), bias])
    return weight, bias


def _embedding_classifier(model_name: str | os.PathLike | None, labels: list[str], task: ClassifyTask) -> tuple[
    BertForSequenceClassification, BertTokenizer
]:
    """A classifier over the normalised mean-pooled embedding of a pre-trained encoder, head still empty."""
    if model_name is not None and not isinstance(model_name, (str, os.PathLike)):
        raise BertkitError("model= takes a model directory or hub id here")
    model_dir = resolve_model_dir(model_name)
    config = task.config_for(load_config(model_dir), labels)
    config.extra.update(classifier_pooling="mean", classifier_normalize=True)
    model, tokenizer, _ = load_pretrained(model_dir, "BertForSequenceClassification", config)
    return model, tokenizer


def _set_head(model: BertForSequenceClassification, weight: np.ndarray, bias: np.ndarray) -> None:
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)))
        model.classifier.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
    model.eval()


def _save(model: BertForSequenceClassification, tokenizer: BertTokenizer, out: Path) -> None:
    save_model(model, out)
    tokenizer.save_pretrained(out)


def train_setfit(
    train: Any,
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    dev: Any = None,
    overwrite: bool = False,
    **options: Any,
) -> History:
    """SetFit on classification data (a path, a list of dicts or a DataFrame, as for `finetune classify`).

    `options`: the classify columns and max_seq_len, and every field of SetFitOptions. The model is saved
    to `out` with metrics.json; the History has one epoch ({"train_loss", "examples", "pairs", "dev"?}) and
    the loss per step.
    """
    classify_options, setfit_options = split_keywords(options, ClassifyOptions, SetFitOptions, what="finetune setfit")
    settings = SetFitOptions(**setfit_options)
    task = ClassifyTask(classify_options)
    if task.options.multi_label or task.options.text_pair_column:
        raise BertkitError("SetFit classifies single texts with one label each (no --multi-label, no --text-pair-column)")
    out_dir = Path(out)
    refuse_to_replace_model(out_dir, overwrite, resume=None)
    examples = task.examples(train, "train")
    dev_examples = task.examples(dev, "dev") if dev is not None else None
    if settings.k is not None:
        examples = sample_per_class(examples, settings.k, settings.seed)
    labels = task.label_list(examples)
    set_seed(settings.seed)
    classifier, tokenizer = _embedding_classifier(model, labels, task)
    if dev_examples is not None:
        task.check_labels(dev_examples, classifier.config, dev if isinstance(dev, (str, os.PathLike)) else "dev")
    texts = [example.text for example in examples]
    pairs = sample_pairs([example.label for example in examples], settings.num_pairs, settings.seed)
    max_seq_len = task.options.max_seq_len
    losses = contrastive_tune(classifier, tokenizer, texts, pairs, settings, max_seq_len)
    embeddings = encode(classifier, tokenizer, texts, max_seq_len=max_seq_len)
    label2id = classifier.config.label2id
    weight, bias = fit_head(embeddings, [label2id[e.label] for e in examples], len(labels), settings.head_c, settings.seed)
    _set_head(classifier, weight, bias)
    epoch: dict[str, Any] = {"epoch": 1, "train_loss": losses[-1], "examples": len(examples), "pairs": len(pairs)}
    history = History(epochs=[epoch], steps=[{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)])
    if dev_examples is not None:
        with torch.inference_mode():
            epoch["dev"] = task.score(dev_examples, task.predict(classifier, tokenizer, dev_examples, 64), classifier.config)
        history.best, history.best_epoch = epoch["dev"]["accuracy"], 1
    _save(classifier, tokenizer, out_dir)
    summary = {"main_metric": "accuracy", "best": history.best, "best_epoch": history.best_epoch,
               "config": {**task.settings, **dataclasses.asdict(settings)}, "epochs": history.epochs}
    atomic_write_text(out_dir / "metrics.json", to_json(summary))
    return history


def read_label_descriptions(source: dict[str, str] | str | os.PathLike) -> dict[str, str]:
    """Label -> description, from a dict or a JSON file holding one object of strings."""
    data: Any = read_json_object(Path(source)) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(data, dict) or len(data) < 2:
        raise BertkitError('labels must map at least two labels to their descriptions, e.g. {"pos": "a great movie"}')
    for label, description in data.items():
        if not isinstance(description, str) or not description.strip():
            raise BertkitError(f"label {label!r}: the description must be non-empty text, not {description!r}")
    return {str(label): description for label, description in data.items()}


@dataclass
class ZeroShotOptions(Options):
    """The settings of `bertkit finetune zeroshot` besides --labels, --out and --model."""

    temperature: float = option(0.05, "scores = softmax(cosine / temperature)", above=0)


def zeroshot_classifier(
    labels: dict[str, str] | str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    overwrite: bool = False,
    **options: Any,
) -> None:
    """Save to `out` a classifier scoring each text by cosine similarity to each label's description.

    The head's rows are the descriptions' normalised embeddings divided by `temperature`, so the logits are
    cosines / temperature and `scores` their softmax. No training.
    """
    (zeroshot_options,) = split_keywords(options, ZeroShotOptions, what="zeroshot")
    settings = ZeroShotOptions(**zeroshot_options)
    descriptions = read_label_descriptions(labels)
    refuse_to_replace_model(Path(out), overwrite, resume=None)
    names = list(descriptions)
    classifier, tokenizer = _embedding_classifier(model, names, ClassifyTask())
    classifier.eval()
    vectors = encode(classifier, tokenizer, [descriptions[name] for name in names])
    _set_head(classifier, vectors / settings.temperature, np.zeros(len(names)))
    _save(classifier, tokenizer, Path(out))
