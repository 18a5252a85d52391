"""Index bookkeeping for the unpadded fast path: pure functions of the attention mask, no parameters.

The encoder removes padding once after the embeddings and runs every linear layer on real tokens only.
Attention alone needs a (sequences, seq) layout, since the CPU attention kernels have no variable-length
form, so around it the tokens are laid into length groups and gathered back.

Masks must be right-padded: each row is some ones followed by zeros, as every tokenizer here pads and as
BERT expects ([CLS] at position 0 is what the pooler reads). Other masks are refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bertkit.errors import BertkitError


def check_right_padded(attention_mask: torch.Tensor) -> torch.Tensor:
    """attention_mask (batch, seq), 1 for real tokens -> lengths (batch,) int32; raises unless right-padded."""
    lengths = attention_mask.sum(dim=1, dtype=torch.int32)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions[None, :] < lengths[:, None]):
        raise BertkitError(
            "attention_mask must be right-padded (each row: ones, then zeros); got one with padding on the left or holes"
        )
    return lengths


@dataclass
class LengthGroup:
    """Sequences of similar length, laid out (size, seq) for one padded attention call."""

    mask: torch.Tensor | None  # (size, 1, 1, seq) key mask for SDPA; None when no slot is padding
    size: int
    seq: int


@dataclass
class UnpadInfo:
    """Where the real tokens of a right-padded (batch, seq) batch sit, to pack them and scatter them back.

    `groups`: the sequences sorted by length and cut where a sequence is much shorter than its group's
    longest. Attention cost grows with the square of the padded length, so a short text batched with a
    long one then costs little more than on its own.
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
        """attention_mask (batch, seq), right-padded, 1 for real tokens."""
        lengths = check_right_padded(attention_mask)
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

    def to_groups(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(tokens, features) -> per group, (size, seq, features) and its key mask (size, 1, 1, seq) or None.

        One gather fills every group's slots: a single copy, whatever the number of groups."""
        slots = x.index_select(0, self.gather).split([g.size * g.seq for g in self.groups])
        return [(s.view(g.size, g.seq, -1), g.mask) for g, s in zip(self.groups, slots)]

    def from_groups(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Per group (size, seq, features), in `groups` order -> (tokens, features); padding slots are dropped."""
        flat = [o.flatten(0, 1) for o in outputs]
        slots = flat[0] if len(flat) == 1 else torch.cat(flat)  # cat would copy even a single piece
        return slots.index_select(0, self.slot_of_token)


def last_layer_rows(output_positions: torch.Tensor, attention_mask: torch.Tensor, packed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """output_positions (batch, seq) bool, the positions whose final vectors the caller reads ->
    wanted (n,): their flat positions in batch*seq (padding left out), and rows (n,): their rows in the layers'
    input, which is the flat position, or the rank among real tokens when `packed`."""
    wanted = torch.nonzero((output_positions & attention_mask.bool()).flatten(), as_tuple=True)[0]
    rows = (torch.cumsum(attention_mask.flatten(), 0) - 1).index_select(0, wanted) if packed else wanted
    return wanted, rows


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(batch, seq, features) or (tokens, features) -> (rows, features)"""
    return x.reshape(-1, x.shape[-1]).index_select(0, rows)


def scatter_rows(x: torch.Tensor, wanted: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
    """(n, features) at flat positions `wanted` -> (batch, seq, features) with zeros elsewhere."""
    return x.new_zeros(batch * seq, x.shape[-1]).index_copy(0, wanted, x).view(batch, seq, -1)
