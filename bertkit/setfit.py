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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.batching import collate
from bertkit.checkpoint import load_config, load_pretrained, resolve_model_dir, save_model
from bertkit.data.classify import ClassifyExample
from bertkit.embed import embed_batch, encode
from bertkit.errors import BertkitError
from bertkit.finetune import refuse_existing_model
from bertkit.heads import BertForSequenceClassification
from bertkit.tasks import ClassifyTask
from bertkit.tokenizer import BertTokenizer, read_json_object
from bertkit.trainer import set_seed


@dataclass
class SetFitConfig:
    num_pairs: int = field(default=640, metadata={"help": "contrastive pairs in all, half positive, whatever the number of classes", "min": 2})
    epochs: int = field(default=1, metadata={"help": "passes over the pairs", "min": 1})
    batch_size: int = field(default=16, metadata={"help": "pairs per step", "min": 1})
    lr: float = field(default=2e-5, metadata={"help": "encoder learning rate (linear decay)", "min": 0.0})
    k: int | None = field(default=None, metadata={"help": "keep K random training examples per class (default: all)", "min": 1})
    max_seq_len: int = field(default=128, metadata={"help": "tokens per text", "min": 3})
    head_c: float = field(default=1.0, metadata={"help": "inverse L2 strength of the logistic regression", "min": 0.0})
    seed: int = field(default=42, metadata={"help": "seed of the K-shot sample, the pairs and the training"})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, least = getattr(self, f.name), f.metadata.get("min")
            if least is not None and value is not None and value < least:
                raise BertkitError(f"{f.name} must be at least {least}; got {value}")


def sample_per_class(examples: list[ClassifyExample], k: int, seed: int) -> list[ClassifyExample]:
    """K examples of each label, drawn at random (in file order within the sample)."""
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
    config: SetFitConfig,
) -> list[float]:
    """Train the encoder so that the cosine of each pair's mean-pooled embeddings approaches its target; the losses."""
    encoder = model.bert
    encoder.train()
    device = next(encoder.parameters()).device
    encodings = tokenizer.encode_batch(texts, max_length=config.max_seq_len)
    features = [{"input_ids": e.input_ids, "token_type_ids": e.token_type_ids} for e in encodings]
    steps = config.epochs * math.ceil(len(pairs) / config.batch_size)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    rng = random.Random(config.seed)
    losses = []
    for _ in range(config.epochs):
        order = pairs[:]
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            chunk = order[start : start + config.batch_size]
            left, right = (
                embed_batch(encoder, {k: v.to(device) for k, v in collate(
                    [features[pair[side]] for pair in chunk], tokenizer.pad_token_id).items()}, normalize=False)
                for side in (0, 1)
            )
            target = torch.tensor([pair[2] for pair in chunk], device=device)
            loss = F.mse_loss(F.cosine_similarity(left, right), target)
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


def _embedding_classifier(model_name: str | os.PathLike | None, labels: list[str], settings: dict[str, Any]) -> tuple[
    BertForSequenceClassification, BertTokenizer
]:
    """A classifier over the normalised mean-pooled embedding of a pre-trained encoder, head still empty."""
    task = ClassifyTask(settings)
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
    train_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_name: str | None = None,
    dev_path: str | os.PathLike | None = None,
    config: SetFitConfig | None = None,
    settings: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """SetFit on a classification file; saves the model to `out_dir` and returns {"pairs", "final_loss", "dev"?}."""
    config = config or SetFitConfig()
    out = Path(out_dir)
    refuse_existing_model(out, overwrite=overwrite)
    task = ClassifyTask(settings)
    if task.settings["multi_label"] or task.settings["text_pair_column"]:
        raise BertkitError("SetFit classifies single texts with one label each (no --multi-label, no --text-pair-column)")
    train = task.read(train_path)
    dev = task.read(dev_path) if dev_path else None
    if config.k is not None:
        train = sample_per_class(train, config.k, config.seed)
    labels = task.label_list(train)
    set_seed(config.seed)
    model, tokenizer = _embedding_classifier(model_name, labels, task.settings)
    if dev is not None:
        task.check_labels(dev, model.config, dev_path)
    texts = [example.text for example in train]
    pairs = sample_pairs([example.label for example in train], config.num_pairs, config.seed)
    losses = contrastive_tune(model, tokenizer, texts, pairs, config)
    embeddings = encode(model, tokenizer, texts, max_seq_len=config.max_seq_len)
    label2id = model.config.label2id
    _set_head(model, *fit_head(embeddings, [label2id[e.label] for e in train], len(labels), config.head_c, config.seed))
    result: dict[str, Any] = {"examples": len(train), "pairs": len(pairs), "final_loss": losses[-1]}
    if dev is not None:
        with torch.inference_mode():
            result["dev"] = task.score(dev, task.predict(model, tokenizer, dev, 64), model.config)
    _save(model, tokenizer, out)
    return result


def read_label_descriptions(source: dict[str, str] | str | os.PathLike) -> dict[str, str]:
    """Label -> description, from a dict or a JSON file holding one object of strings."""
    data: Any = read_json_object(Path(source)) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(data, dict) or len(data) < 2:
        raise BertkitError("labels must map at least two labels to their descriptions, e.g. {\"pos\": \"a great movie\"}")
    for label, description in data.items():
        if not isinstance(description, str) or not description.strip():
            raise BertkitError(f"label {label!r}: the description must be non-empty text, not {description!r}")
    return {str(label): description for label, description in data.items()}


def zeroshot_classifier(
    labels: dict[str, str] | str | os.PathLike,
    model_name: str | os.PathLike | None = None,
    temperature: float = 0.05,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> tuple[BertForSequenceClassification, BertTokenizer]:
    """A classifier scoring each text by cosine similarity to each label's description, with no training.

    The head's rows are the descriptions' normalised embeddings divided by `temperature`, so the logits are
    cosines / temperature and `scores` their softmax. Saved to `out_dir` when given.
    """
    if temperature <= 0:
        raise BertkitError(f"temperature must be positive; got {temperature}")
    descriptions = read_label_descriptions(labels)
    if out_dir is not None:
        refuse_existing_model(Path(out_dir), overwrite=overwrite)
    names = list(descriptions)
    model, tokenizer = _embedding_classifier(model_name, names, {})
    model.eval()
    vectors = encode(model, tokenizer, [descriptions[name] for name in names])
    _set_head(model, vectors / temperature, np.zeros(len(names)))
    if out_dir is not None:
        _save(model, tokenizer, Path(out_dir))
    return model, tokenizer
