"""bertkit: BERT end to end on PyTorch.

    import bertkit
    clf = bertkit.finetune("classify", train="train.csv", dev="dev.csv", out="runs/x", epochs=3)
    clf.predict(["great book"])        # the same JSON as `bertkit predict`
    clf.evaluate("test.csv")           # the same dict as `bertkit evaluate`
    clf = bertkit.load("runs/x")       # backend="onnx" for the exported graph
    bertkit.embed(["a text"])          # sentence embeddings (mean pooling, L2 norm); also clf.embed(...)
    bertkit.distill("runs/x", train="train.csv", out="runs/x-small", unlabeled="more.txt")  # a smaller student
    bertkit.finetune("setfit", train="train.csv", out="runs/few", k=8)   # few-shot SetFit
    bertkit.zeroshot({"pos": "a great movie", "neg": "an awful movie"}, out="runs/zs")

Names are imported on first use, so `import bertkit` stays quick and loads neither torch nor matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "finetune": "bertkit.api",
    "distill": "bertkit.api",
    "load": "bertkit.api",
    "pretrain": "bertkit.api",
    "baseline": "bertkit.baselines",
    "tune": "bertkit.tuning",
    "embed": "bertkit.api",
    "zeroshot": "bertkit.api",
    "prompt_classifier": "bertkit.api",
    "FineTuned": "bertkit.api",
    "BertkitError": "bertkit.errors",
    "TrainConfig": "bertkit.trainer",
    "History": "bertkit.trainer",
    "BertConfig": "bertkit.model",
    "BertModel": "bertkit.model",
    "BertForPreTraining": "bertkit.heads",
    "BertForMaskedLM": "bertkit.heads",
    "BertForSequenceClassification": "bertkit.heads",
    "BertForTokenClassification": "bertkit.heads",
    "BertForQuestionAnswering": "bertkit.heads",
    "BertTokenizer": "bertkit.tokenizer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bertkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
