"""Zero-shot classification with the masked-LM head (PET style): a template and a verbalizer, no training.

The template holds `{text}` and one `[MASK]`; the verbalizer maps each label to one or more words. A word
of n word pieces is scored by putting n masks in the template and averaging the log-probabilities of its
pieces at those masks (one forward pass per piece count, batched over texts and words, unlike PET's batch
size 1, pet #20). A label's logit is the best of its words'; `scores` are their softmax over the labels,
optionally calibrated against a content-free input (divided by the probabilities the model gives "N/A").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bertkit.batching import collate, inference_batches
from bertkit.errors import BertkitError
from bertkit.heads import BertForMaskedLM
from bertkit.tokenizer import BertTokenizer, read_json_object

MASK = "[MASK]"
CONTENT_FREE = "N/A"


@dataclass
class Prompt:
    template: str  # e.g. "{text} It was [MASK]."
    verbalizer: dict[str, list[str]]  # label -> words

    @classmethod
    def load(cls, source: dict[str, Any] | str | os.PathLike) -> Prompt:
        """From {"template": ..., "verbalizer": {label: word or [words]}}, as a dict or a JSON file."""
        data = read_json_object(Path(source)) if isinstance(source, (str, os.PathLike)) else source
        if not isinstance(data, dict) or not isinstance(data.get("template"), str) or not isinstance(data.get("verbalizer"), dict):
            raise BertkitError('a prompt is {"template": "... {text} ... [MASK] ...", "verbalizer": {"label": ["word"]}}')
        verbalizer = {str(k): [v] if isinstance(v, str) else list(v) for k, v in data["verbalizer"].items()}
        return cls(data["template"], verbalizer)


class PromptClassifier:
    def __init__(self, model: BertForMaskedLM, tokenizer: BertTokenizer, prompt: Prompt, calibrate: bool = False,
                 batch_size: int = 32) -> None:
        if prompt.template.count(MASK) != 1:
            raise BertkitError(f"the template must hold exactly one {MASK}; got {prompt.template!r}")
        if "{text}" not in prompt.template:
            raise BertkitError(f"the template must hold {{text}}; got {prompt.template!r}")
        if len(prompt.verbalizer) < 2:
            raise BertkitError("the verbalizer must name at least two labels")
        self.model, self.tokenizer, self.prompt, self.batch_size = model.eval(), tokenizer, prompt, batch_size
        self.labels = list(prompt.verbalizer)
        self.words: list[tuple[str, list[int]]] = []  # (label, word pieces), every word of every label
        for label, words in prompt.verbalizer.items():
            if not words:
                raise BertkitError(f"label {label!r} has no verbalizer word")
            for word in words:
                pieces = tokenizer.encode(word).input_ids[1:-1]
                if not pieces or tokenizer.unk_token_id in pieces:
                    raise BertkitError(f"label {label!r}: the word {word!r} is not in the vocabulary (it tokenizes to [UNK])")
                self.words.append((label, pieces))
        self.calibration = self._label_log_probs([CONTENT_FREE])[0] if calibrate else None

    def _inputs(self, text: str, masks: int) -> dict[str, list[int]]:
        left, right = self.prompt.template.replace("{text}", text).split(MASK)
        # [CLS] left [MASK]*n right [SEP]: the two sides are encoded apart, so the masks stand as whole words.
        ids = self.tokenizer.encode(left).input_ids[:-1] + [self.tokenizer.mask_token_id] * masks
        ids += self.tokenizer.encode(right).input_ids[1:]
        return {"input_ids": ids, "token_type_ids": [0] * len(ids)}

    def word_log_probs(self, texts: list[str]) -> torch.Tensor:
        """(texts, words): each verbalizer word's mean log-probability over its masks."""
        result = torch.empty(len(texts), len(self.words))
        for masks in sorted({len(pieces) for _, pieces in self.words}):
            columns = [j for j, (_, pieces) in enumerate(self.words) if len(pieces) == masks]
            pieces = torch.tensor([self.words[j][1] for j in columns])  # (words, masks)
            features = [self._inputs(text, masks) for text in texts]
            for indices in inference_batches([len(f["input_ids"]) for f in features], self.batch_size):
                batch = collate([features[i] for i in indices], self.tokenizer.pad_token_id)
                with torch.inference_mode():
                    logits = self.model(**batch).logits  # (batch, seq, vocab)
                positions = batch["input_ids"] == self.tokenizer.mask_token_id
                log_probs = logits[positions].float().log_softmax(-1).view(len(indices), masks, -1)  # (batch, masks, vocab)
                gathered = log_probs[:, torch.arange(masks)[:, None], pieces.T]  # (batch, masks, words)
                result[torch.tensor(indices)[:, None], torch.tensor(columns)] = gathered.mean(1)
        return result

    def _label_log_probs(self, texts: list[str]) -> torch.Tensor:
        words = self.word_log_probs(texts)
        best = torch.stack([words[:, [j for j, (l, _) in enumerate(self.words) if l == label]].amax(1) for label in self.labels], 1)
        return best.log_softmax(-1)  # (texts, labels)

    def predict(self, texts: list[str]) -> list[dict]:
        """One {"label", "score", "scores"} per text, the same JSON as a fine-tuned classifier's."""
        log_probs = self._label_log_probs(texts)
        if self.calibration is not None:
            log_probs = (log_probs - self.calibration).log_softmax(-1)
        results = []
        for row in log_probs.exp().tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"label": self.labels[best], "score": row[best], "scores": dict(zip(self.labels, row))})
        return results
