"""The CJK ideograph blocks BERT's basic tokenizer treats as Chinese characters (its `_is_chinese_char`).

The tokenizer makes each such character a word of its own; NER splits raw text the same way and pre-training
uses them to tell a Chinese corpus.
"""

from __future__ import annotations

CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def in_ranges(char: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in ranges)


def is_cjk(char: str) -> bool:
    return in_ranges(char, CJK_RANGES)
