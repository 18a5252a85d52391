"""BERT hyper-parameters: `BertConfig` under the Hugging Face `config.json` names, and the named sizes."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertkit.errors import BertkitError

# Google's BERT miniatures (github.com/google-research/bert): name -> (layers, hidden).
# Heads are hidden/64 and the feed-forward block is 4 x hidden in every size.
MODEL_SIZES: dict[str, tuple[int, int]] = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}

# config.json fields that BertConfig models; everything else in the file is kept verbatim in `extra`
# so that a load/save round trip never drops information (task fields, sentence-transformers notes).
_KNOWN_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "classifier_dropout",
    "id2label", "label2id", "problem_type", "architectures",
)


_SIZE_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size",
)


@dataclass
class BertConfig:
    """BERT hyper-parameters under their Hugging Face `config.json` names."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    classifier_dropout: float | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    architectures: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from bertkit.ops import ACTIVATIONS  # here, not at the top: the sizes and the config alone need no torch

        for name in _SIZE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise BertkitError(f"config: {name} must be a positive integer, not {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise BertkitError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise BertkitError(f"hidden_act {self.hidden_act!r} is not supported (use one of {sorted(ACTIVATIONS)})")
        if self.id2label is not None:
            self.id2label = {int(k): v for k, v in self.id2label.items()}
            if self.label2id is None:
                self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @classmethod
    def from_size(cls, size: str, vocab_size: int, **overrides: Any) -> BertConfig:
        """A config for one of the named BERT miniature sizes."""
        if size not in MODEL_SIZES:
            raise BertkitError(f"unknown model size {size!r}; choose one of {', '.join(MODEL_SIZES)}")
        layers, hidden = MODEL_SIZES[size]
        return cls(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=hidden // 64,
            intermediate_size=4 * hidden,
            **overrides,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertConfig:
        if data.get("model_type", "bert") != "bert":
            raise BertkitError(f"model_type is {data.get('model_type')!r}; bertkit loads BERT models only")
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise BertkitError(f"position_embedding_type {data['position_embedding_type']!r} is not supported")
        known = {k: data[k] for k in _KNOWN_FIELDS if k in data}
        extra = {k: v for k, v in data.items() if k not in _KNOWN_FIELDS and k != "model_type"}
        try:
            return cls(**known, extra=extra)
        except TypeError as exc:  # a field of the wrong type, e.g. a string where a number belongs
            raise BertkitError(f"config does not describe a BERT model: {exc}") from None

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> BertConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BertkitError(f"{path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BertkitError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise BertkitError(f"{path}: expected a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"model_type": "bert", **self.extra}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name in ("id2label", "label2id", "problem_type", "architectures")):
                continue
            data[f.name] = value
        if self.id2label is not None:
            data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return data
