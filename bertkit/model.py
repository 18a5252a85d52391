"""The BERT encoder: config, embeddings, self-attention layers and pooler.

Numerically the same network as Hugging Face's `BertModel` (post-LayerNorm, erf GELU), so published
checkpoints load and give the same numbers. Parameter names are our own and shorter; `checkpoint.py`
maps them to and from the Hugging Face names key by key. Query, key and value are one fused linear
layer, which is one matmul instead of three.

Two equivalent execution paths exist. The padded path is the reference. The unpadded path removes
padding once after the embeddings, runs every linear layer on real tokens only, and pads again only
around the attention product; tests check the two against each other.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),  # exact, erf-based: what BERT was trained with
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class _MaskedScale(torch.autograd.Function):
    """x * keep * scale, saving the 1-byte keep mask for the backward rather than a float copy."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * (keep.view(torch.uint8).to(x.dtype) * scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad * (keep.view(torch.uint8).to(grad.dtype) * ctx.scale), None, None


def _random_words(count: int) -> torch.Tensor:
    """`count` random 64-bit words, seeded by one draw from torch's generator so that `torch.manual_seed`
    still fixes every mask. numpy's SFC64 makes them 2.4x as fast as torch's CPU generator (mt19937)."""
    seed = int(torch.randint(0, 2**63 - 1, (1,)))
    return torch.from_numpy(np.random.SFC64(seed).random_raw(count).view(np.int64))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as `F.dropout`, in half its time on CPU (2 M elements, forward and backward: 11.8 vs 22 ms).

    torch's CPU generator draws one random number per element, serially, and in BERT training that
    made dropout (three masks a layer, one of them over every attention weight) a sixth of the step.
    Here one 64-bit draw gives four 16-bit lanes, each compared with p * 65536: the same Bernoulli mask
    (p exact to 1/65536; the scale uses the exact keep rate). CUDA keeps torch's own fused kernel.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    threshold = round(p * 65536)
    if threshold >= 65536:  # p = 1 (or within 1/65536 of it): everything is dropped
        return x * 0.0
    lanes = _random_words((x.numel() + 3) // 4).view(torch.int16)
    keep = (lanes[: x.numel()] >= threshold - 32768).view(x.shape)
    return _MaskedScale.apply(x, keep, 65536 / (65536 - threshold))


class Dropout(nn.Module):
    """`nn.Dropout` through the cheaper `dropout` above; no parameters, so checkpoints are unaffected."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


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


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (batch, seq, hidden)
    pooler_output: torch.Tensor | None  # (batch, hidden); None when the model has no pooler


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.token_type(token_type_ids) + self.position(positions)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection, then output projection, residual, LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn_dropout = config.attention_probs_dropout_prob
        self.dropout = Dropout(config.hidden_dropout_prob)

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor | None, queries: torch.Tensor | None = None) -> torch.Tensor:
        """qkv (batch, seq, 3*hidden), mask (batch, 1, 1, seq) True where a key is real -> (batch, seq, hidden).

        `queries` (batch, n) picks the positions whose outputs are wanted; the output is then (batch, n, hidden)."""
        batch, seq, _ = qkv.shape
        # (batch, seq, 3, heads, head_dim) -> 3 x (batch, heads, seq, head_dim)
        q, k, v = qkv.view(batch, seq, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if queries is not None:
            q = q.gather(2, queries[:, None, :, None].expand(-1, self.num_heads, -1, self.head_dim))
        if self.training and self.attn_dropout > 0 and qkv.device.type == "cpu":
            # SDPA's CPU kernels cannot drop attention weights; its fallback does the same math as here,
            # but with torch's slow per-element dropout masks.
            scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)
            if mask is not None:  # adding a 0/-inf bias is cheaper than masked_fill_ over the broadcast mask
                bias = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(~mask, float("-inf"))
                scores.add_(bias)
            weights = dropout(scores.softmax(-1), self.attn_dropout, training=True)
            context = weights @ v
        else:
            dropout_p = self.attn_dropout if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return context.transpose(1, 2).reshape(batch, q.shape[2], self.num_heads * self.head_dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, unpadded: UnpadInfo | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`rows`: indices into x's token rows (flattened) whose outputs are wanted; the output is then (rows, hidden).
        Every token still serves as a key and value, but only the wanted rows are queries, and the projection after
        attention runs on them alone."""
        qkv = self.qkv(x)
        if unpadded is None:  # x is (batch, seq, hidden): one attention call
            groups, slot_of_token = [(qkv, mask)], None
        else:  # x is (tokens, hidden): attention alone needs a (sequences, seq) layout, group by group
            # One gather into every group's slots and one gather back: a copy each way, whatever the number of groups.
            slots = qkv.index_select(0, unpadded.gather).split([g.size * g.seq for g in unpadded.groups])
            groups = [(s.view(g.size, g.seq, -1), g.mask) for g, s in zip(unpadded.groups, slots)]
            slot_of_token = unpadded.slot_of_token
        # The wanted queries' layout is sized from the data, which torch.export cannot trace: exported graphs
        # compute every query and keep the wanted rows (as does a batch that wants none).
        if not torch.compiler.is_exporting() and rows is not None and rows.numel() > 0:
            wanted = rows if slot_of_token is None else slot_of_token.index_select(0, rows)
            queries, order = wanted_queries(wanted, [g.shape[:2] for g, _ in groups])
            pieces = [self.attend(g, m, q[0]).flatten(0, 1)[q[1]] for (g, m), q in zip(groups, queries) if q is not None]
            context = _concat(pieces).index_select(0, order)
            x = x.reshape(-1, x.shape[-1]).index_select(0, rows)
        else:
            context = _concat([self.attend(g, m).flatten(0, 1) for g, m in groups])
            context = context.view_as(x) if slot_of_token is None else context.index_select(0, slot_of_token)
            if rows is not None:
                x, context = (t.reshape(-1, t.shape[-1]).index_select(0, rows) for t in (x, context))
        return self.norm(x + self.dropout(self.out(context)))


def _concat(pieces: list[torch.Tensor]) -> torch.Tensor:
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)  # cat would copy even a single piece


def wanted_queries(
    slots: torch.Tensor, shapes: list[tuple[int, int]]
) -> tuple[list[tuple[torch.Tensor, torch.Tensor] | None], torch.Tensor]:
    """Lay out the query positions whose attention outputs are wanted, for attention groups of these (size, seq)
    shapes; `slots` index the groups' positions laid one after another. Per group: each sequence's wanted
    positions, padded to the group's most ((size, most) positions in the sequence, and a flat mask of the real
    ones), or None when the group has none. And `order`: where each wanted slot's output lands among the real
    queries' outputs, concatenated group after group."""
    sorted_slots, by_slot = torch.sort(slots)
    per_group: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    start = 0
    for size, seq in shapes:
        bounds = torch.tensor([start, start + size * seq], device=slots.device)
        low, high = torch.searchsorted(sorted_slots, bounds).tolist()
        start += size * seq
        if low == high:
            per_group.append(None)
            continue
        local = sorted_slots[low:high] - bounds[0]
        sequence, position = local // seq, local % seq
        counts = torch.bincount(sequence, minlength=size)
        rank = torch.arange(high - low, device=slots.device) - (torch.cumsum(counts, 0) - counts)[sequence]
        most = int(counts.max())
        index = torch.zeros(size, most, dtype=torch.long, device=slots.device).index_put_((sequence, rank), position)
        real = torch.zeros(size, most, dtype=torch.bool, device=slots.device).index_put_((sequence, rank), torch.tensor(True))
        per_group.append((index, real.flatten()))
    order = torch.empty_like(by_slot)
    order[by_slot] = torch.arange(len(by_slot), device=slots.device)
    return per_group, order


class FeedForward(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.down(self.act(self.up(x)))))


class Layer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.ffn = FeedForward(config)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, unpadded: UnpadInfo | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.ffn(self.attention(x, mask, unpadded, rows))


class Pooler(nn.Module):
    """The [CLS] vector through a dense layer and tanh: the input of NSP and sentence classification."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


@dataclass
class LengthGroup:
    """Sequences of similar length, laid out (size, seq) for one padded attention call."""

    mask: torch.Tensor | None  # (size, 1, 1, seq) key mask for SDPA; None when no slot is padding
    size: int
    seq: int


@dataclass
class UnpadInfo:
    """Where the real tokens of a padded (batch, seq) batch sit, to pack them and scatter them back.

    Attention cannot run on packed tokens with the CPU kernels, so it runs on `groups`: sequences
    sorted by length and cut where a sequence is much shorter than its group's longest. Attention
    cost grows with the square of the padded length, so a short text batched with a long one then
    costs little more than on its own.
    """

    indices: torch.Tensor  # (tokens,) flat positions of real tokens in batch*seq
    cu_seqlens: torch.Tensor  # (batch+1,) int32 cumulative lengths, the varlen-attention convention
    batch: int
    seq: int
    groups: list[LengthGroup]
    gather: torch.Tensor  # (slots,) packed-token index of each slot of the groups, one after another (0 in padding)
    slot_of_token: torch.Tensor  # (tokens,) the slot each packed token fills

    # A sequence joins the current group while it is at least this fraction of the group's longest.
    GROUP_RATIO: ClassVar[float] = 0.75

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> UnpadInfo:
        lengths = attention_mask.sum(dim=1, dtype=torch.int32)
        cu_seqlens = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
        indices = torch.nonzero(attention_mask.flatten(), as_tuple=True)[0]
        sizes = lengths.tolist()
        order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
        members: list[list[int]] = []
        for i in order:
            if not members or sizes[i] < cls.GROUP_RATIO * sizes[members[-1][0]]:
                members.append([])
            members[-1].append(i)
        groups, gathers, valids = [], [], []
        for rows in members:
            rows_t = torch.tensor(rows, device=lengths.device)
            seq = sizes[rows[0]]  # the longest: rows are sorted by length
            positions = torch.arange(seq, device=lengths.device)
            valid = positions[None, :] < lengths[rows_t, None]  # (size, seq)
            gathers.append(torch.where(valid, cu_seqlens[rows_t, None] + positions[None, :], 0).flatten())
            valids.append(valid.flatten())
            groups.append(LengthGroup(mask=None if bool(valid.all()) else valid[:, None, None, :], size=len(rows), seq=seq))
        gather, valid = torch.cat(gathers), torch.cat(valids)
        slot_of_token = torch.empty_like(indices)
        slot_of_token[gather[valid]] = torch.nonzero(valid, as_tuple=True)[0]
        return cls(indices, cu_seqlens, *attention_mask.shape, groups, gather, slot_of_token)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, ...) -> (tokens, ...)"""
        return x.flatten(0, 1).index_select(0, self.indices)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, ...) -> (batch, seq, ...) with zeros where padding was."""
        out = x.new_zeros(self.batch * self.seq, *x.shape[1:])
        return out.index_copy(0, self.indices, x).view(self.batch, self.seq, *x.shape[1:])


class BertModel(nn.Module):
    """The encoder: embeddings, N post-LayerNorm Transformer layers, and an optional pooler."""

    def __init__(self, config: BertConfig, add_pooler: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config) if add_pooler else None
        self.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        unpad: bool = True,
        output_positions: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """input_ids (batch, seq); attention_mask 1 for real tokens, 0 for padding.

        `unpad` packs the real tokens for the linear layers when there is padding to remove. It changes
        only speed, never the result (beyond float rounding); padded positions come back as zeros.

        `output_positions` (batch, seq) bool marks the positions whose final vectors the caller reads: [CLS]
        for a classifier, the masked positions (and [CLS] for NSP) in pre-training. In the last layer only
        those are attention queries, and the output projection and feed-forward block run on them alone;
        their rows of last_hidden_state are zeros. Earlier layers are untouched, as every position is a key
        and value of the last layer's attention.
        """
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise BertkitError(
                f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings {self.config.max_position_embeddings}"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool()[:, None, None, :]  # (batch, 1, 1, seq): broadcast over heads and queries
        x = self.embeddings(input_ids, token_type_ids)
        unpadded = UnpadInfo.from_mask(attention_mask) if unpad and not bool(attention_mask.all()) else None
        if unpadded is not None:
            x = unpadded.unpad(x)
        wanted = rows = None
        if output_positions is not None:
            wanted = torch.nonzero((output_positions & attention_mask.bool()).flatten(), as_tuple=True)[0]
            # Row of each wanted position in x: its flat position, or its rank among real tokens when packed.
            rows = wanted if unpadded is None else (torch.cumsum(attention_mask.flatten(), 0) - 1).index_select(0, wanted)
        for index, layer in enumerate(self.layers):
            x = layer(x, mask, unpadded, rows if index == len(self.layers) - 1 else None)
        if wanted is not None:
            batch, seq = input_ids.shape
            x = x.new_zeros(batch * seq, x.shape[-1]).index_copy(0, wanted, x).view(batch, seq, -1)
        elif unpadded is not None:
            x = unpadded.pad(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        return EncoderOutput(last_hidden_state=x, pooler_output=pooled)


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, std) weights, zero biases, LayerNorm at identity."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

