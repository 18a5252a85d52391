"""Token tagging (NER): the first piece of each word is labelled; long sentences run in overlapping windows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bertkit.data import ner
from bertkit.errors import BertkitError
from bertkit.options import Options, option
from bertkit.tasks.base import Task


@dataclass
class NerOptions(Options):
    max_seq_len: int = option(128, "longest window, in tokens", min=8)
    stride: int = option(32, "overlap, in tokens, of windows over long sentences", min=0)
    crf: bool = option(False, "a CRF over the tag scores (BIO/BIOES-constrained Viterbi decoding)")
    crf_lr: float = option(5e-3, "with --crf: learning rate of the CRF's transition scores", above=0)


@dataclass
class _TextNerExample(ner.NerExample):
    """A raw text to tag: entity offsets point into `text` itself."""

    text: str = ""


class NerTask(Task):
    """Token tagging: the first piece of each word is labelled; long sentences run in overlapping windows."""

    name = "ner"
    help = "token tagging (NER) from CoNLL or JSONL, BIO or BIOES"
    architecture = "BertForTokenClassification"
    main_metric = "f1"
    Options = NerOptions
    outputs = {"logits": True}
    request_fields = frozenset({"texts"})
    request_help = '{"texts": [...]}'
    empty_prediction = {"entities": [], "tags": []}

    def read(self, path: str | os.PathLike, require_labels: bool = True) -> list[ner.NerExample]:
        return ner.read_ner(path, require_tags=require_labels, encoding=self.encoding)

    def stream(self, path: str | os.PathLike) -> Iterator[ner.NerExample]:
        return ner.iter_ner(path, require_tags=False, encoding=self.encoding)

    def from_records(self, records: list[dict[str, Any]], what: str, require_labels: bool = True) -> list[ner.NerExample]:
        examples = []
        for line, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                raise BertkitError(f'{what}:{line}: expected {{"tokens": [...], "tags": [...]}}, got {type(record).__name__}')
            examples.append(ner._jsonl_example(Path(what), line, record, require_labels))
        return examples

    def from_text(self, text: str, line: int) -> ner.NerExample:
        return _TextNerExample(ner.split_words(text)[0], None, line, text=text)

    def problem(self, example: ner.NerExample) -> str | None:
        return None if example.words else "empty text"

    def label_list(self, examples: list[ner.NerExample]) -> list[str]:
        return ner.label_list(examples)

    def check_labels(self, examples: list[ner.NerExample], config, path: str | os.PathLike) -> None:
        known = config.label2id or {}
        for example in examples:
            for tag in example.tags or []:
                if tag not in known:
                    raise BertkitError(f"{path}:{example.line}: tag {tag!r} is not one of the training tags ({', '.join(known)})")

    def _windows(self, example: ner.NerExample, tokenizer, label2id: dict[str, int] | None) -> list[ner.NerWindow]:
        return ner.encode_ner(example.words, tokenizer, self.options.max_seq_len, self.options.stride,
                              label2id, example.tags if label2id is not None else None)

    def features(self, examples: list[ner.NerExample], tokenizer, config) -> list:
        return [
            {"input_ids": w.input_ids, "token_type_ids": w.token_type_ids, "labels": w.labels}
            for example in examples
            for w in self._windows(example, tokenizer, config.label2id)
        ]

    def predict(self, model, tokenizer, examples: list[ner.NerExample], batch_size: int) -> list[dict]:
        id2label = model.config.id2label
        windows = [self._windows(example, tokenizer, None) for example in examples]
        features = [{"input_ids": w.input_ids, "token_type_ids": w.token_type_ids} for ws in windows for w in ws]
        logits = [row["logits"] for row in self._rows(model, features, batch_size, tokenizer)]
        word_scores, cursor = [], 0
        for example, example_windows in zip(examples, windows):
            word_scores.append(ner.word_logits(example_windows, logits[cursor : cursor + len(example_windows)],
                                               len(example.words)))
            cursor += len(example_windows)
        if self.options.crf:
            paths = self._crf_decode(model, word_scores)
        else:
            paths = [scores.argmax(-1).tolist() for scores in word_scores]
        results = []
        for example, label_ids, word_logits in zip(examples, paths, word_scores):
            scores = word_logits.softmax(-1)[torch.arange(len(label_ids)), label_ids].tolist()
            tags = [id2label[i] for i in label_ids]
            if isinstance(example, _TextNerExample):  # offsets into the text exactly as the user gave it
                text, spans = example.text, ner.split_words(example.text)[1]
            else:
                text, spans = ner.join_words(example.words)
            results.append({"entities": ner.decode_entities(text, spans, tags, scores), "tags": tags})
        return results

    def _crf_decode(self, model, word_scores: list[torch.Tensor]) -> list[list[int]]:
        """The CRF's best tag sequence of each example, all decoded in one batch."""
        crf = getattr(model, "crf", None)
        if crf is None:
            raise BertkitError("this model was fine-tuned with --crf, but the CRF is not in the loaded model "
                               "(the ONNX backend runs without it; use --backend torch)")
        from torch.nn.utils.rnn import pad_sequence

        device = crf.transitions.device
        lengths = [len(scores) for scores in word_scores]
        emissions = pad_sequence(word_scores, batch_first=True).to(device)
        mask = torch.arange(emissions.shape[1], device=device)[None] < torch.tensor(lengths, device=device)[:, None]
        paths = crf.best_paths(emissions, mask).tolist()
        return [path[:length] for path, length in zip(paths, lengths)]

    def prior_predictions(self, examples: list[ner.NerExample], prior: dict[str, Any] | None) -> list[dict]:
        """Every word "O" (outside any entity): the majority tag of any NER data."""
        return [{"entities": [], "tags": ["O"] * len(example.words)} for example in examples]

    def score(self, examples: list[ner.NerExample], predictions: list[dict], config) -> dict[str, Any]:
        from bertkit import metrics

        return metrics.entity_metrics([e.tags for e in examples], [p["tags"] for p in predictions])
