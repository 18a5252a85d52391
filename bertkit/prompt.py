"""Classification with the masked-LM head (PET style): a template and a verbalizer, no training.

The template holds `{text}` (and `{pair}` for sentence pairs) and one `[MASK]`; the verbalizer maps each
label to one or more words. A word of n word pieces is scored by putting n masks in the template and
averaging the log-probabilities of its pieces at those masks (one forward pass per piece count, batched
over texts and words, unlike PET's batch size 1, pet #20). A label's logit is the best of its words';
`scores` are their softmax over the labels, optionally calibrated against a content-free input (divided
by the probabilities the model gives "N/A", then renormalised).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bertkit.batching import collate, inference_batches
from bertkit.checkpoint import load_config, load_pretrained, resolve_model_dir
from bertkit.errors import BertkitError
from bertkit.heads import BertForMaskedLM
from bertkit.tokenizer import MASK, BertTokenizer, read_json_object

CONTENT_FREE = "N/A"
MLM_ARCHITECTURES = ("BertForMaskedLM", "BertForPreTraining")
PromptInput = str | tuple[str, str]  # a text, or (text, pair) for a template with {pair}


@dataclass
class Prompt:
    template: str  # e.g. "{text} It was [MASK]."
    verbalizer: dict[str, list[str]]  # label -> words

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or self.template.count(MASK) != 1:
            raise BertkitError(f"the template must hold exactly one {MASK}; got {self.template!r}")
        if "{text}" not in self.template:
            raise BertkitError(f"the template must hold {{text}}; got {self.template!r}")
        if len(self.verbalizer) < 2:
            raise BertkitError("the verbalizer must name at least two labels")
        for label, words in self.verbalizer.items():
            if not words:
                raise BertkitError(f"label {label!r} has no verbalizer word")

    @classmethod
    def load(cls, source: dict[str, Any] | str | os.PathLike) -> Prompt:
        """From {"template": ..., "verbalizer": {label: word or [words]}}, as a dict or a JSON file."""
        data = read_json_object(Path(source)) if isinstance(source, (str, os.PathLike)) else source
        if not isinstance(data, dict) or not isinstance(data.get("template"), str) or not isinstance(data.get("verbalizer"), dict):
            raise BertkitError('a prompt is {"template": "... {text} ... [MASK] ...", "verbalizer": {"label": ["word"]}}')
        return cls.make(data["template"], data["verbalizer"])

    @classmethod
    def make(cls, template: str, verbalizer: dict[str, Any] | str | os.PathLike) -> Prompt:
        """A template and a verbalizer given as a dict or a JSON file {label: word or [words]}."""
        data = read_json_object(Path(verbalizer)) if isinstance(verbalizer, (str, os.PathLike)) else verbalizer
        if not isinstance(data, dict):
            raise BertkitError('a verbalizer maps each label to its words, e.g. {"pos": ["great"], "neg": ["awful"]}')
        words = {}
        for label, value in data.items():
            listed = [value] if isinstance(value, str) else value
            if not isinstance(listed, list) or not all(isinstance(word, str) and word.strip() for word in listed):
                raise BertkitError(f"label {label!r}: the verbalizer gives a word or a list of words, not {value!r}")
            words[str(label)] = listed
        return cls(template, words)

    @property
    def pairs(self) -> bool:
        return "{pair}" in self.template

    def word_pieces(self, tokenizer: BertTokenizer) -> list[tuple[str, list[int]]]:
        """(label, pieces) of every word of every label, checked: each piece in the vocabulary, and together
        spelling the word (case and accents aside where the tokenizer drops them). A Chinese word is one
        piece per character."""
        result = []
        for label, words in self.verbalizer.items():
            for word in words:
                encoding = tokenizer.encode(word)
                pieces = encoding.input_ids[1:-1]
                if not pieces or tokenizer.unk_token_id in pieces:
                    raise BertkitError(f"label {label!r}: the word {word!r} is not in the vocabulary (it tokenizes to "
                                       f"{' '.join(encoding.tokens[1:-1]) or 'nothing'})")
                spelled = tokenizer.decode(pieces).replace(" ", "")
                expected = (word.lower() if tokenizer.do_lower_case else word).replace(" ", "")
                if spelled != expected and spelled != _strip_accents(expected):
                    raise BertkitError(f"label {label!r}: the word {word!r} tokenizes to {spelled!r}")
                result.append((label, pieces))
        return result

    def encode(self, tokenizer: BertTokenizer, text: str, pair: str | None, masks: int,
               max_length: int | None = None) -> dict[str, list[int]]:
        """[CLS] template [SEP] with the text (and pair) filled in and `masks` masks in place of [MASK].

        Each part is encoded apart, so the masks stand as whole words; when the whole is longer than
        `max_length`, the longer of text and pair loses tokens from its end, the template none.
        """
        parts = [part for part in re.split(r"(\{text\}|\{pair\}|\[MASK\])", self.template) if part]
        filled = {"{text}": text, "{pair}": pair or ""}

        def pieces(value: str) -> list[int]:
            return tokenizer.encode(value).input_ids[1:-1] if value.strip() else []

        encoded = [[tokenizer.mask_token_id] * masks if part == MASK else pieces(filled.get(part, part)) for part in parts]
        if max_length is not None:
            bodies = [i for i, part in enumerate(parts) if part in filled]
            excess = 2 + sum(map(len, encoded)) - max_length
            while excess > 0 and any(encoded[i] for i in bodies):
                longest = max(bodies, key=lambda i: len(encoded[i]))
                encoded[longest] = encoded[longest][:-1]
                excess -= 1
        ids = [tokenizer.cls_token_id] + [i for part in encoded for i in part] + [tokenizer.sep_token_id]
        return {"input_ids": ids, "token_type_ids": [0] * len(ids)}


class PromptClassifier:
    """Zero-shot predictions from a masked-LM checkpoint, the same JSON as a fine-tuned classifier's."""

    def __init__(self, model: BertForMaskedLM, tokenizer: BertTokenizer, prompt: Prompt, calibrate: bool = False,
                 batch_size: int = 32, max_length: int | None = None) -> None:
        self.model, self.tokenizer, self.prompt, self.batch_size = model.eval(), tokenizer, prompt, batch_size
        self.max_length = max_length or min(tokenizer.model_max_length, model.config.max_position_embeddings)
        self.pairs = prompt.pairs
        self.labels = list(prompt.verbalizer)
        self.words = prompt.word_pieces(tokenizer)
        content_free = (CONTENT_FREE, CONTENT_FREE) if self.pairs else CONTENT_FREE
        self.calibration = self._label_log_probs([content_free])[0] if calibrate else None

    def _items(self, inputs: list[PromptInput]) -> list[tuple[str, str | None]]:
        if isinstance(inputs, (str, tuple)) or not isinstance(inputs, list) or not inputs:
            raise BertkitError("predict takes a non-empty list of texts (or (text, pair) tuples)")
        items = []
        for number, item in enumerate(inputs, start=1):
            text, pair = item if isinstance(item, tuple) and len(item) == 2 else (item, None)
            if not isinstance(text, str) or not text.strip() or (pair is not None and not isinstance(pair, str)):
                raise BertkitError(f"input {number}: expected a non-empty string or a (text, pair) tuple, got {item!r}")
            if self.pairs != (pair is not None):
                need = "(text, pair) tuples" if self.pairs else "single texts"
                raise BertkitError(f"input {number}: the template {'holds' if self.pairs else 'has no'} {{pair}}; give {need}")
            items.append((text, pair))
        return items

    def word_log_probs(self, inputs: list[PromptInput]) -> torch.Tensor:
        """(inputs, words): each verbalizer word's mean log-probability over its masks."""
        items = self._items(inputs)
        result = torch.empty(len(items), len(self.words))
        device = next(self.model.parameters()).device
        for masks in sorted({len(pieces) for _, pieces in self.words}):
            columns = [j for j, (_, pieces) in enumerate(self.words) if len(pieces) == masks]
            pieces = torch.tensor([self.words[j][1] for j in columns], device=device)  # (words, masks)
            features = [self.prompt.encode(self.tokenizer, *item, masks, self.max_length) for item in items]
            for indices in inference_batches([len(f["input_ids"]) for f in features], self.batch_size):
                batch = collate([features[i] for i in indices], self.tokenizer.pad_token_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                positions = batch["input_ids"] == self.tokenizer.mask_token_id
                with torch.inference_mode():
                    logits = self.model(**batch, positions=positions).logits  # (batch * masks, vocab)
                log_probs = logits.float().log_softmax(-1).view(len(indices), masks, -1)  # (batch, masks, vocab)
                gathered = log_probs[:, torch.arange(masks, device=device)[:, None], pieces.T]  # (batch, masks, words)
                result[torch.tensor(indices)[:, None], torch.tensor(columns)] = gathered.mean(1).cpu()
        return result

    def _label_log_probs(self, inputs: list[PromptInput]) -> torch.Tensor:
        words = self.word_log_probs(inputs)
        best = torch.stack([words[:, [j for j, (l, _) in enumerate(self.words) if l == label]].amax(1)
                            for label in self.labels], 1)
        return best.log_softmax(-1)  # (inputs, labels)

    def predict(self, inputs: list[PromptInput]) -> list[dict]:
        """One {"label", "score", "scores"} per input, the same JSON as a fine-tuned classifier's."""
        log_probs = self._label_log_probs(inputs)
        if self.calibration is not None:
            log_probs = (log_probs - self.calibration).log_softmax(-1)
        results = []
        for row in log_probs.exp().tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"label": self.labels[best], "score": row[best], "scores": dict(zip(self.labels, row))})
        return results

    def evaluate(self, data: Any, **columns: Any) -> dict[str, Any]:
        """Accuracy, macro F1 and per-class figures on labelled data (a path, dicts or a DataFrame), as
        `bertkit evaluate` gives them; `columns`: text_column, text_pair_column, label_column."""
        from bertkit import metrics
        from bertkit.tasks import ClassifyTask

        task = ClassifyTask(columns)
        examples = task.examples(data, "data")
        inputs = [(e.text, e.text_pair) if self.pairs else e.text for e in examples]
        index = {label: i for i, label in enumerate(self.labels)}
        if unknown := sorted({e.label for e in examples} - set(index)):
            raise BertkitError(f"the data has labels the verbalizer lacks: {', '.join(map(repr, unknown))}")
        predicted = [index[p["label"]] for p in self.predict(inputs)]
        return metrics.classification_metrics([index[e.label] for e in examples], predicted, self.labels)


def _strip_accents(text: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def load_prompt_classifier(
    model: str | os.PathLike | None,
    prompt: Prompt,
    calibrate: bool = False,
    batch_size: int = 32,
) -> PromptClassifier:
    """A PromptClassifier on a checkpoint with a masked-LM head (BertForMaskedLM or BertForPreTraining)."""
    model_dir = resolve_model_dir(model)
    architecture = (load_config(model_dir).architectures or ["BertModel"])[0]
    if architecture not in MLM_ARCHITECTURES:
        raise BertkitError(f"{model_dir} is a {architecture}, without a masked-LM head; prompts need a "
                           f"{' or '.join(MLM_ARCHITECTURES)} checkpoint")
    mlm, tokenizer, _ = load_pretrained(model_dir, "BertForMaskedLM")
    return PromptClassifier(mlm, tokenizer, prompt, calibrate, batch_size)
