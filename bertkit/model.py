"""The BERT encoder: embeddings, self-attention layers and pooler.

Numerically the same network as Hugging Face's `BertModel` (post-LayerNorm, erf GELU), so published
checkpoints load and give the same numbers. Parameter names are our own and shorter; `checkpoint.py`
maps them to and from the Hugging Face names key by key. Query, key and value are one fused linear
layer, which is one matmul instead of three.

The padded path is the reference. The fast path (`unpad=True`) removes padding once after the
embeddings, runs every linear layer on real tokens only, and lays tokens out by length only around
the attention product; `padding.py` does that bookkeeping, and tests check the two paths agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.ops import ACTIVATIONS, Dropout, attention
from bertkit.padding import UnpadInfo, last_layer_rows, scatter_rows, take_rows


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (batch, seq, hidden)
    pooler_output: torch.Tensor | None  # (batch, hidden); None when the model has no pooler
    # With output_hidden_states: the embeddings' output and each layer's, (batch, seq, hidden) each, as in HF.
    hidden_states: tuple[torch.Tensor, ...] | None = None


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
        return self.dropout(self.norm(x))  # (batch, seq, hidden)


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

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """qkv (batch, seq, 3*hidden), mask (batch, 1, 1, seq) True where a key is real -> (batch, seq, hidden)."""
        batch, seq, _ = qkv.shape
        # (batch, seq, 3, heads, head_dim) -> 3 x (batch, heads, seq, head_dim)
        q, k, v = qkv.view(batch, seq, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        context = attention(q, k, v, mask, self.attn_dropout if self.training else 0.0)
        return context.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, unpadded: UnpadInfo | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (batch, seq, hidden), or (tokens, hidden) when `unpadded` -> the same shape, or (rows, hidden) when
        `rows` index the only rows of x whose outputs are wanted: every token is still a key and a value."""
        qkv = self.qkv(x)
        if unpadded is None:
            context = self.attend(qkv, mask)
        else:  # attention alone needs a (sequences, seq) layout: one call per length group
            context = unpadded.from_groups([self.attend(g, m) for g, m in unpadded.to_groups(qkv)])
        if rows is not None:  # the last layer: only the rows the caller reads go on through projection and FFN
            x, context = take_rows(x, rows), take_rows(context, rows)
        return self.norm(x + self.dropout(self.out(context)))


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
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        """input_ids (batch, seq); attention_mask 1 for real tokens, 0 for padding (right-padded).

        `unpad` packs the real tokens for the linear layers when there is padding to remove. It changes
        only speed, never the result (beyond float rounding); padded positions come back as zeros.

        `output_positions` (batch, seq) bool marks the positions whose final vectors the caller reads: [CLS]
        for a classifier, the masked positions (and [CLS] for NSP) in pre-training. The last layer's output
        projection and feed-forward block run on them alone (Mosaic BERT's subset after attention); the other
        rows of last_hidden_state are zeros.

        `output_hidden_states` also returns every layer's output (padded back), for embeddings from lower layers.
        """
        if output_hidden_states and output_positions is not None:
            raise BertkitError("output_hidden_states needs every position; it cannot go with output_positions")
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
        if unpadded is not None:  # the fast path: (batch, seq, hidden) -> (tokens, hidden)
            x = unpadded.unpad(x)
        wanted = rows = None
        if output_positions is not None:
            wanted, rows = last_layer_rows(output_positions, attention_mask, packed=unpadded is not None)
        states = [x] if output_hidden_states else None
        for index, layer in enumerate(self.layers):
            x = layer(x, mask, unpadded, rows if index == len(self.layers) - 1 else None)
            if states is not None:
                states.append(x)
        if wanted is not None:
            x = scatter_rows(x, wanted, *input_ids.shape)
        elif unpadded is not None:
            x = unpadded.pad(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        hidden_states = None
        if states is not None:
            hidden_states = tuple(unpadded.pad(h) if unpadded is not None else h for h in states[:-1]) + (x,)
        return EncoderOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states)


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
