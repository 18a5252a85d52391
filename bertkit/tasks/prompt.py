"""Prompt fine-tuning (PET style): classification as the masked-LM task BERT was pre-trained on.

Each training text is put in the template and the MLM head is trained, with its own cross-entropy, to
answer the label's word (its first word; one mask per word piece) at the mask. The result is a
BertForMaskedLM directory whose config.json records the template and verbalizer, so `predict`,
`evaluate` and `serve` score it as `bertkit.prompt_classifier` does, with a classifier's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bertkit.batching import IGNORE_INDEX
from bertkit.data import classify
from bertkit.data.io import DEFAULT_ENCODING
from bertkit.errors import BertkitError
from bertkit.options import option
from bertkit.prompt import MLM_ARCHITECTURES, Prompt, PromptClassifier
from bertkit.tasks.classify import ClassifyOptions, ClassifyTask


@dataclass
class PromptOptions(ClassifyOptions):
    multi_label: bool = option(False)  # one label per text: a verbalizer word answers one mask
    template: str | None = option(None, 'the prompt, with {text} (and {pair}) and one [MASK], e.g. "{text} It was [MASK]."')
    verbalizer: str | dict[str, Any] | None = option(
        None, 'label words: a JSON file {"label": "word" or ["words"]} (a dict in Python)', metavar="FILE")
    calibrate: bool = option(False, "when predicting, divide the scores by those of the content-free input N/A")


class PromptTask(ClassifyTask):
    name = "prompt"
    help = "prompt fine-tuning (PET): train the masked-LM head's answer at the [MASK] of a template"
    architecture = "BertForMaskedLM"
    Options = PromptOptions
    outputs = {"logits": True}

    def __init__(self, settings: dict[str, Any] | None = None, encoding: str = DEFAULT_ENCODING) -> None:
        super().__init__(settings, encoding)
        o = self.options
        if o.template is None or o.verbalizer is None:
            raise BertkitError("a prompt model needs a template and a verbalizer (--template, --verbalizer); "
                               "for a masked LM without one, use `bertkit predict --prompt FILE`")
        self.prompt = Prompt.make(o.template, o.verbalizer)
        o.verbalizer = self.prompt.verbalizer  # config.json keeps the words themselves, not a file name
        if self.prompt.pairs != bool(o.text_pair_column):
            raise BertkitError("a template with {pair} goes with --text-pair-column, and --text-pair-column with {pair}")

    def label_list(self, examples: list[classify.ClassifyExample]) -> list[str]:
        unknown = sorted(set(super().label_list(examples)) - set(self.prompt.verbalizer))
        if unknown:
            raise BertkitError(f"label {unknown[0]!r} has no verbalizer word")
        return list(self.prompt.verbalizer)

    def config_for(self, config, labels: list[str] | None):
        architecture = (config.architectures or ["BertModel"])[0]
        if architecture not in MLM_ARCHITECTURES:
            raise BertkitError(f"prompt fine-tuning starts from a masked LM ({' or '.join(MLM_ARCHITECTURES)}); "
                               f"the model is a {architecture}, without a pre-trained MLM head")
        return super().config_for(config, labels)

    def features(self, examples: list[classify.ClassifyExample], tokenizer, config) -> list:
        answer = {}  # label -> the pieces of its first word
        for label, pieces in self.prompt.word_pieces(tokenizer):
            answer.setdefault(label, pieces)
        features = []
        for example in examples:
            pieces = answer[example.label]
            feature = self.prompt.encode(tokenizer, example.text, example.pair, len(pieces), self.options.max_seq_len)
            labels = [IGNORE_INDEX] * len(feature["input_ids"])
            masks = [i for i, token in enumerate(feature["input_ids"]) if token == tokenizer.mask_token_id]
            for position, piece in zip(masks, pieces):
                labels[position] = piece
            features.append({**feature, "labels": labels})
        return features

    def training_loss(self, model, batch):
        # Only the masks carry a label: the vocabulary projection of every other position would be thrown away.
        return model(**batch, masked_only=True).loss, {}

    def predict(self, model, tokenizer, examples: list[classify.ClassifyExample], batch_size: int) -> list[dict]:
        scorer = PromptClassifier(model, tokenizer, self.prompt, self.options.calibrate, batch_size, self.options.max_seq_len)
        return scorer.predict([(e.text, e.pair) if self.prompt.pairs else e.text for e in examples])
