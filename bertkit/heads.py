"""Task heads on top of the encoder, one class per Hugging Face `BertFor*` architecture.

Each returns logits, and a loss when labels are given (positions labelled -100 are ignored), with the
same loss definitions as Hugging Face so that numbers can be compared one to one. Each also takes the
keyword arguments Hugging Face callers pass (`inputs_embeds=None`, `return_dict=True`, ...) where the
meaning is the same, so that wrappers such as peft's work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.batching import IGNORE_INDEX
from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.model import BertModel, init_weights
from bertkit.ops import ACTIVATIONS, Dropout


# Keyword arguments that Hugging Face callers (peft's task wrappers, say) pass to any BertFor*, with the
# values whose meaning bertkit shares. Any other value is refused: ignoring it would be silently wrong.
_HF_KEYWORDS: dict[str, tuple[object, ...]] = {
    "inputs_embeds": (None,),
    "position_ids": (None,),
    "head_mask": (None,),
    "output_attentions": (None, False),
    "output_hidden_states": (None, False),
    "return_dict": (None, True),
}


def _check_hf_keywords(model: nn.Module, keywords: dict[str, object]) -> None:
    for name, value in keywords.items():
        head = type(model).__name__
        if name not in _HF_KEYWORDS:
            raise BertkitError(f"{head}.forward() got an unexpected keyword argument {name!r}")
        if not any(value is allowed for allowed in _HF_KEYWORDS[name]):
            choices = " or ".join(map(repr, _HF_KEYWORDS[name]))
            raise BertkitError(f"{head}.forward(): {name} is not supported; pass {choices} or leave it out")


def _first_token(input_ids: torch.Tensor) -> torch.Tensor:
    """`output_positions` for heads that read the pooled [CLS] vector alone."""
    positions = torch.zeros_like(input_ids, dtype=torch.bool)
    positions[:, 0] = True
    return positions


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """(batch, seq, hidden) token vectors -> (batch, hidden), reading real tokens only (transformers #22137)."""
    if pooling == "cls":
        return hidden[:, 0]
    real = attention_mask.bool()[..., None]  # (batch, seq, 1)
    if pooling == "max":
        return hidden.masked_fill(~real, torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)


def pool_windows(values: torch.Tensor, document: torch.Tensor, how: str) -> torch.Tensor:
    """(windows, X) rows and each one's document index (windows,) -> (documents, X): the mean, max or sum of each
    document's rows (`classify --long windows --window-pool mean|max`). Documents are numbered 0..D-1."""
    documents = int(document.max()) + 1
    out = values.new_zeros(documents, values.shape[1])
    if how == "max":
        return out.scatter_reduce(0, document[:, None].expand_as(values), values, reduce="amax", include_self=False)
    total = out.index_add(0, document, values)
    if how == "sum":
        return total
    return total / torch.bincount(document, minlength=documents).clamp(min=1).to(values.dtype)[:, None]


class WindowAttention(nn.Module):
    """A learned attention over the [CLS] vectors of a document's windows (`--window-pool attention`): one score per
    window, softmax within each document, the weighted sum is the document's vector. Its weights are saved beside
    the head under their own names (transformers leaves them out when it loads the classifier)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)

    def forward(self, vectors: torch.Tensor, document: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vectors (windows, hidden), document (windows,) -> (document vectors (D, hidden), weights (windows,))."""
        scores = self.score(vectors).float()  # (windows, 1)
        exp = (scores - pool_windows(scores, document, "max")[document]).exp()  # each document's best scores 0
        weights = exp / pool_windows(exp, document, "sum")[document]  # softmax within each document
        return pool_windows(vectors * weights.to(vectors.dtype), document, "sum"), weights.squeeze(-1)


@dataclass
class Output:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    pooled: torch.Tensor | None = None  # (batch, hidden): what the classifier read, for the attention over windows


@dataclass
class PreTrainingOutput:
    mlm_logits: torch.Tensor  # (batch, seq, vocab), or (masked tokens, vocab) when scoring masked positions only
    nsp_logits: torch.Tensor | None  # (batch, 2); None without the NSP head
    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None


@dataclass
class QAOutput:
    start_logits: torch.Tensor  # (batch, seq)
    end_logits: torch.Tensor  # (batch, seq)
    loss: torch.Tensor | None = None


class MLMHead(nn.Module):
    """Dense + activation + LayerNorm, then a decoder tied to the word embeddings, plus a bias."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        # The decoder weight is passed in rather than stored, so the tie can never come undone.
        return F.linear(self.norm(self.act(self.dense(hidden))), word_embeddings, self.bias)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX)


class _HeadModel(nn.Module):
    """Shared set-up: the encoder under `bert`, HF-style initialisation of the fresh head layers."""

    add_pooler = True

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=self.add_pooler)

    def _init_head(self) -> None:
        for name, module in self.named_children():
            if name != "bert":
                module.apply(lambda m: init_weights(m, self.config.initializer_range))


class BertForMaskedLM(_HeadModel):
    """The masked-LM head alone: every (or every masked) token's vector -> vocabulary logits."""

    add_pooler = False

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.mlm = MLMHead(config)
        self._init_head()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        masked_only: bool = False,
        **hf_keywords: object,
    ) -> Output:
        """`positions` (batch, seq) bool scores those positions only, and `masked_only` (needs `labels`) the
        labelled ones: logits are then (selected, vocab), in row-major order. A prompt reads one or two
        positions of a sequence, and the vocabulary projection of every other one is most of the work."""
        _check_hf_keywords(self, hf_keywords)
        if masked_only:
            assert labels is not None, "masked_only needs labels"
            positions = labels != IGNORE_INDEX
        hidden = self.bert(input_ids, attention_mask, token_type_ids, output_positions=positions).last_hidden_state
        if positions is not None:
            hidden = hidden[positions]
            labels = labels[positions] if labels is not None else None
        logits = self.mlm(hidden, self.bert.embeddings.word.weight)
        return Output(logits, _cross_entropy(logits, labels) if labels is not None else None)


class BertForPreTraining(_HeadModel):
    """MLM + NSP, loss = MLM loss + NSP loss, as in the original BERT."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.mlm = MLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self._init_head()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        masked_only: bool = False,
        **hf_keywords: object,
    ) -> PreTrainingOutput:
        """`masked_only` (needs `labels`) scores only the positions with a label: with 15% masking this
        skips about 85% of the vocabulary projection, the largest matmul of a small BERT."""
        _check_hf_keywords(self, hf_keywords)
        selected = None
        if masked_only:
            assert labels is not None, "masked_only needs labels"
            selected = labels != IGNORE_INDEX
        # The last layer computes the scored positions and [CLS] (for NSP) only.
        wanted = selected | _first_token(input_ids) if selected is not None else None
        out = self.bert(input_ids, attention_mask, token_type_ids, output_positions=wanted)
        hidden = out.last_hidden_state
        if selected is not None:
            hidden, labels = hidden[selected], labels[selected]
        mlm_logits = self.mlm(hidden, self.bert.embeddings.word.weight)
        # Trained on MLM alone (labels but no NSP labels), the NSP head is left out of the graph.
        nsp_logits = self.nsp(out.pooler_output) if next_sentence_label is not None or labels is None else None
        mlm_loss = _cross_entropy(mlm_logits, labels) if labels is not None else None
        nsp_loss = _cross_entropy(nsp_logits, next_sentence_label) if next_sentence_label is not None else None
        parts = [x for x in (mlm_loss, nsp_loss) if x is not None]
        loss = sum(parts[1:], parts[0]) if parts else None
        return PreTrainingOutput(mlm_logits, nsp_logits, loss, mlm_loss, nsp_loss)


class BertForNextSentencePrediction(_HeadModel):
    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self._init_head()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **hf_keywords: object,
    ) -> Output:
        _check_hf_keywords(self, hf_keywords)
        out = self.bert(input_ids, attention_mask, token_type_ids, output_positions=_first_token(input_ids))
        logits = self.nsp(out.pooler_output)
        return Output(logits, _cross_entropy(logits, labels) if labels is not None else None)


class BertForSequenceClassification(_HeadModel):
    """Pooled [CLS] -> dropout -> linear. Single- or multi-label classification, or regression.

    With `classifier_pooling: "mean"` in config.json (SetFit and sentence-encoder zero-shot models) the
    linear layer reads the mean of the real tokens' vectors instead, L2-normalised when
    `classifier_normalize` is true: a sentence embedding, so a logistic regression fitted on embeddings
    is this layer. transformers ignores these two fields and reads [CLS], so it scores such models otherwise.

    `config.problem_type` picks the loss, as in Hugging Face; when unset it is inferred from the labels:
    one output is regression (MSE), integer labels are single-label (softmax cross-entropy), float label
    vectors are multi-label (sigmoid, binary cross-entropy).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        settings = config.extra.get("bertkit") or {}
        self.window_pool = settings.get("window_pool", "mean") if settings.get("long") == "windows" else None
        if self.window_pool == "attention":
            self.window_attention = WindowAttention(config.hidden_size)
        self._init_head()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        window_document: torch.Tensor | None = None,
        **hf_keywords: object,
    ) -> Output:
        """`window_document` (rows,): the rows are windows of documents, this one's index each (`--long windows`);
        the logits (and the loss against one label per document) are then the documents', pooled from their
        windows by `config`'s window_pool."""
        _check_hf_keywords(self, hf_keywords)
        pooled = self._pooled(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(pooled))
        if window_document is not None:
            logits = self.pool_documents(logits, pooled, window_document)[0]
        loss = self.loss(logits, labels) if labels is not None else None
        # The attention pool reads each window's [CLS] vector; other models keep their outputs (and ONNX graphs).
        return Output(logits, loss, pooled if self.window_pool == "attention" else None)

    def pool_documents(self, logits: torch.Tensor, pooled: torch.Tensor,
                       document: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Windows' logits and [CLS] vectors -> (each document's logits, the attention weight of each window, or
        None for mean and max). One window alone gives its own logits."""
        if self.window_pool is None:
            raise BertkitError("this model reads each text whole (it was not fine-tuned with --long windows)")
        if self.window_pool == "attention":
            vectors, weights = self.window_attention(pooled, document)
            return self.classifier(self.dropout(vectors)), weights
        return pool_windows(logits, document, self.window_pool), None

    def _pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None) -> torch.Tensor:
        if self.config.extra.get("classifier_pooling", "cls") == "mean":
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            pooled = pool(self.bert(input_ids, mask, token_type_ids).last_hidden_state, mask)
            if self.config.extra.get("classifier_normalize", False):
                pooled = F.normalize(pooled, dim=-1)
            return pooled
        return self.bert(input_ids, attention_mask, token_type_ids, output_positions=_first_token(input_ids)).pooler_output

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem = self.config.problem_type or self._infer_problem_type(labels)
        if problem == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(logits.shape[0]))
        if problem == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return _cross_entropy(logits, labels)

    def _infer_problem_type(self, labels: torch.Tensor) -> str:
        if self.config.num_labels == 1:
            return "regression"
        if labels.dtype in (torch.long, torch.int):
            return "single_label_classification"
        return "multi_label_classification"


class BertForTokenClassification(_HeadModel):
    """Every token's vector -> dropout -> linear: tagging such as NER."""

    add_pooler = False

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self._init_head()
        settings = config.extra.get("bertkit") or {}
        if settings.get("crf"):  # `finetune ner --crf`: a CRF over the tag scores, saved beside the head
            from bertkit.crf import CRF

            labels = [config.id2label[i] for i in range(config.num_labels)]
            self.crf = CRF(labels, settings.get("crf_lr"))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **hf_keywords: object,
    ) -> Output:
        _check_hf_keywords(self, hf_keywords)
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.classifier(self.dropout(hidden))
        if labels is None:
            return Output(logits, None)
        crf = getattr(self, "crf", None)
        return Output(logits, crf.loss(logits, labels) if crf is not None else _cross_entropy(logits, labels))


class BertForQuestionAnswering(_HeadModel):
    """Every token's vector -> 2 logits: where the answer span starts and where it ends."""

    add_pooler = False

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self._init_head()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        **hf_keywords: object,
    ) -> QAOutput:
        _check_hf_keywords(self, hf_keywords)
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.qa_outputs(hidden)
        if attention_mask is not None:
            # Padding can never hold an answer. Unlike transformers, which scores padded positions too,
            # they are masked out, so the loss does not depend on how much padding a batch has.
            logits = logits.masked_fill(~attention_mask.bool()[..., None], torch.finfo(logits.dtype).min)
        start_logits, end_logits = logits.unbind(dim=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            # As Hugging Face: positions outside the sequence are clamped to seq_len and then ignored.
            seq = start_logits.shape[1]
            starts, ends = start_positions.clamp(0, seq), end_positions.clamp(0, seq)
            loss = (
                F.cross_entropy(start_logits.float(), starts, ignore_index=seq)
                + F.cross_entropy(end_logits.float(), ends, ignore_index=seq)
            ) / 2
        return QAOutput(start_logits, end_logits, loss)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "BertModel": BertModel,
    "BertForPreTraining": BertForPreTraining,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForNextSentencePrediction": BertForNextSentencePrediction,
    "BertForSequenceClassification": BertForSequenceClassification,
    "BertForTokenClassification": BertForTokenClassification,
    "BertForQuestionAnswering": BertForQuestionAnswering,
}
