"""Sliding windows over long sequences, and BERT's "max context" rule for who owns each position.

A sequence longer than the model's input is cut into overlapping windows; each position (a token, or a word of
several pieces) is then read from one window only: the one where it has the most context on both sides, as BERT's
run_squad.py decides it. NER windows whole words, QA context tokens; long-document classification can reuse both.
Windows are [first, end) ranges of positions.
"""

from __future__ import annotations


def stride_windows(n_positions: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Windows of `size` positions, each starting `stride` after the one before (BERT's doc_stride).

    Every window but the last is full; a stride larger than a window is cut to it, so no position is left out.
    An empty sequence still gets one (empty) window.
    """
    windows = []
    start = 0
    while True:
        end = min(n_positions, start + size)
        windows.append((start, end))
        if end >= n_positions:
            return windows
        start += min(end - start, stride)


def overlapping_windows(lengths: list[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Windows of whole positions of the given lengths (words of several pieces), at most `budget` pieces each,
    consecutive ones sharing at least `overlap` pieces.

    The overlap is whole positions, so it can be slightly more than `overlap` pieces (less only when the last
    position of a window would not fit next to the next new one). Each window reaches at least one new position.
    """
    windows = []
    start = 0
    while True:
        end, used = start, 0
        while end < len(lengths) and used + lengths[end] <= budget:
            used += lengths[end]
            end += 1
        windows.append((start, end))
        if end == len(lengths):
            return windows
        next_start, shared = end, 0
        while next_start - 1 > start and shared < overlap:
            next_start -= 1
            shared += lengths[next_start]
        while sum(lengths[next_start : end + 1]) > budget:
            next_start += 1
        start = next_start


def max_context_owners(lengths: list[int], windows: list[tuple[int, int]]) -> list[int]:
    """For each position, the index of the window where it has the most context (BERT's _check_is_max_context).

    Score = min(pieces to its left, pieces to its right in the window) + 0.01 * the window's pieces; the first
    window wins ties. `lengths` are the pieces of each position (all 1 for tokens).
    """
    cumulative = [0]
    for length in lengths:
        cumulative.append(cumulative[-1] + length)
    best: list[tuple[float, int]] = [(-1.0, -1)] * len(lengths)
    for k, (first, end) in enumerate(windows):
        size = cumulative[end] - cumulative[first]
        for position in range(first, end):
            left, right = cumulative[position] - cumulative[first], cumulative[end] - cumulative[position + 1]
            score = min(left, right) + 0.01 * size
            if score > best[position][0]:
                best[position] = (score, k)
    return [k for _, k in best]


def window_inputs(input_ids: list[int], windows: list[tuple[int, int]]) -> list[list[int]]:
    """`[CLS] document [SEP]` as one input per window, `[CLS] piece [SEP]`; the windows are [first, end) ranges
    over the document's tokens (between [CLS] and [SEP])."""
    cls, body, sep = input_ids[0], input_ids[1:-1], input_ids[-1]
    return [[cls, *body[first:end], sep] for first, end in windows]
