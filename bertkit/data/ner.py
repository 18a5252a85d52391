"""Named-entity data: CoNLL / JSONL files -> word-level examples -> windowed features -> character-offset entities.

Labels live on words, the model sees word pieces: each word is labelled on its first piece only (-100 elsewhere),
and a prediction is read back from that same piece. Long sentences are cut into overlapping windows at word
boundaries; each word is owned by one window, so it is trained on, and predicted from, exactly once.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bertkit.batching import IGNORE_INDEX
from bertkit.data.cjk import CJK_RANGES, in_ranges, is_cjk
from bertkit.data.io import DEFAULT_ENCODING, iter_jsonl, iter_lines
from bertkit.data.windows import max_context_owners, overlapping_windows
from bertkit.errors import BertkitError
from bertkit.metrics import get_entities
from bertkit.tokenizer import BertTokenizer

_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_TAG = re.compile(r"O|[BIES]-.+")
_TAG_HELP = "not a BIO or BIOES tag (O, B-TYPE, I-TYPE, E-TYPE or S-TYPE)"
# Characters that glue two word characters into one word, as CoNLL tokens do: "Hewlett-Packard", "AT&T", "1,000".
_WORD_JOINERS = frozenset("-.,&/")
# "U.S" about to take its final dot: letters separated by dots, as in "U.S.", "e.g.".
_ABBREVIATION = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
# Written without spaces around them, next to CJK characters: CJK punctuation ("，。") and full-width forms.
_UNSPACED_RANGES = CJK_RANGES + ((0x3000, 0x303F), (0xFF00, 0xFFEF))


@dataclass
class NerExample:
    words: list[str]
    tags: list[str] | None  # None when the input has no tags (prediction)
    line: int  # 1-based line where the sentence starts, for error messages
    id: str | int | None = field(default=None, compare=False)  # a JSON line's "id"; predictions carry it


@dataclass
class NerWindow:
    """One model input: [CLS] pieces of consecutive words [SEP]."""

    input_ids: list[int]
    token_type_ids: list[int]
    labels: list[int]  # label id on the first piece of each word this window owns, else -100
    word_ids: list[int | None]  # sentence word index per token; None for [CLS]/[SEP]
    owned: list[bool]  # per token: this window is where the token's word is trained on and predicted from


def iter_ner(path: str | os.PathLike, require_tags: bool = True, encoding: str = DEFAULT_ENCODING) -> Iterator[NerExample]:
    """Sentences of CoNLL (`token<TAB>tag`, blank line between sentences) or JSONL (`{"tokens": [...], "tags": [...]}`),
    streamed one at a time.

    The format follows the extension (.jsonl/.json/.ndjson are JSON lines). Every tag is checked, so a file in
    another scheme or with a shifted column fails at its line instead of training a nonsense model.
    With require_tags=False, a sentence's tags are read when it has them and are None otherwise.
    """
    path = Path(path)
    if path.suffix.lower() in _JSON_SUFFIXES:
        examples = (_jsonl_example(path, line, record, require_tags) for line, record in iter_jsonl(path, encoding))
    else:
        examples = _iter_conll(path, require_tags, encoding)
    empty = True
    for example in examples:
        empty = False
        yield example
    if empty:
        raise BertkitError(f"{path}: no sentences, only -DOCSTART- lines")


def read_ner(path: str | os.PathLike, require_tags: bool = True, encoding: str = DEFAULT_ENCODING) -> list[NerExample]:
    return list(iter_ner(path, require_tags, encoding))


def _check_tag(tag: str, where: str) -> None:
    if not _TAG.fullmatch(tag):
        raise BertkitError(f"{where}: tag {tag!r} is {_TAG_HELP}")


def _jsonl_example(path: Path, line: int, record: dict, require_tags: bool) -> NerExample:
    """Check one JSON line and make it an example."""
    where = f"{path}:{line}"
    tokens, tags = record.get("tokens"), record.get("tags")
    if tokens is None:
        raise BertkitError(f'{where}: no "tokens" field; expected {{"tokens": [...], "tags": [...]}}')
    if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
        raise BertkitError(f'{where}: "tokens" must be a list of strings')
    if not tokens:
        raise BertkitError(f'{where}: "tokens" is empty')
    blank = next((i for i, token in enumerate(tokens) if not token.strip()), None)
    if blank is not None:
        raise BertkitError(f"{where}: token {blank + 1} is blank")
    if tags is None:
        if require_tags:
            raise BertkitError(f'{where}: no "tags" field; expected {{"tokens": [...], "tags": [...]}}')
        return NerExample(tokens, None, line, record.get("id"))
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise BertkitError(f'{where}: "tags" must be a list of strings')
    if len(tags) != len(tokens):
        raise BertkitError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
    for i, tag in enumerate(tags):
        _check_tag(tag, f"{where}: token {i + 1}")
    return NerExample(tokens, tags, line, record.get("id"))


def _iter_conll(path: Path, require_tags: bool, encoding: str) -> Iterator[NerExample]:
    """Sentences of `token ... tag` lines: tab-separated, else whitespace-separated; first column token, last tag."""
    sentence: list[tuple[int, list[str]]] = []
    has_text = False
    for number, text in iter_lines(path, encoding=encoding):
        has_text = has_text or bool(text.strip())
        columns = [c.strip() for c in text.split("\t") if c.strip()] if "\t" in text else text.split()
        if columns and columns[0] != "-DOCSTART-":
            sentence.append((number, columns))
        elif sentence:
            yield _conll_sentence(path, sentence, require_tags)
            sentence = []
    if sentence:
        yield _conll_sentence(path, sentence, require_tags)
    if not has_text:
        raise BertkitError(f"{path}: the file is empty")


def _conll_sentence(path: Path, sentence: list[tuple[int, list[str]]], require_tags: bool) -> NerExample:
    has_tags = require_tags or any(len(columns) > 1 for _, columns in sentence)
    for number, columns in sentence:
        if has_tags and len(columns) < 2:
            raise BertkitError(f"{path}:{number}: {columns[0]!r} has no tag; expected `token<TAB>tag`")
        if has_tags:
            _check_tag(columns[-1], f"{path}:{number}")
    words = [columns[0] for _, columns in sentence]
    tags = [columns[-1] for _, columns in sentence] if has_tags else None
    return NerExample(words, tags, sentence[0][0])


def label_list(examples: list[NerExample]) -> list[str]:
    """The id2label order for a new model: "O" first (always present), then every other tag seen, sorted."""
    tags = {tag for example in examples for tag in example.tags or ()}
    return ["O"] + sorted(tags - {"O"})


def _is_word_char(char: str) -> bool:
    """Letters, digits, combining marks (Indic vowel signs) and format characters (zero-width joiners), not CJK."""
    category = unicodedata.category(char)
    return (category[0] in "LNM" or category == "Cf") and not is_cjk(char)


def join_words(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The text a reader expects for pre-split words, and each word's character span in it.

    Words are separated by one space, except where both sides are CJK (characters or CJK punctuation), so a
    character-level Chinese sentence reads as ordinary Chinese.
    """
    parts: list[str] = []
    spans = []
    position = 0
    for i, word in enumerate(words):
        previous = words[i - 1] if i else ""
        unspaced = bool(previous and word) and all(
            in_ranges(char, _UNSPACED_RANGES) for char in (previous[-1], word[0])
        )
        if i and not unspaced:
            parts.append(" ")
            position += 1
        parts.append(word)
        spans.append((position, position + len(word)))
        position += len(word)
    return "".join(parts), spans


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Raw text -> words and their character spans, tokenized the way NER training files usually are.

    A word is a run of letters/digits (kept whole across "-", ".", ",", "&", "/" between them, and an
    abbreviation's final dot: "Hewlett-Packard", "U.S."); every other punctuation mark or symbol is a word of
    its own, as in CoNLL ("York ."), so an entity's span does not swallow the sentence's full stop; each CJK
    character is a word of its own, as in character-level Chinese NER data.
    """
    spans: list[tuple[int, int]] = []
    start: int | None = None  # where the word being built began
    for i, char in enumerate(text):
        if start is not None:
            glued = char in _WORD_JOINERS and i + 1 < len(text) and _is_word_char(text[i + 1])
            abbreviation_dot = char == "." and _ABBREVIATION.fullmatch(text, start, i) is not None
            if _is_word_char(char) or glued or abbreviation_dot:
                continue
            spans.append((start, i))
            start = None
        if _is_word_char(char):
            start = i
        elif not char.isspace():
            spans.append((i, i + 1))
    if start is not None:
        spans.append((start, len(text)))
    return [text[a:b] for a, b in spans], spans


def encode_ner(
    words: list[str],
    tokenizer: BertTokenizer,
    max_length: int,
    stride: int,
    label2id: dict[str, int] | None = None,
    tags: list[str] | None = None,
) -> list[NerWindow]:
    """Tokenize a sentence's words into one window, or overlapping windows when it is longer than max_length.

    Each word is tokenized on its own, as transformers does for `is_split_into_words=True`; a word with no pieces
    (a lone zero-width character) becomes [UNK] so it still gets a prediction, and a word longer than a whole
    window keeps its first pieces. Windows never split a word; only the owning window labels a word.
    """
    budget = max_length - 2
    if budget < 1:
        raise BertkitError(f"max_length={max_length} leaves no room for words next to [CLS] and [SEP]")
    if not 0 <= stride < budget:
        raise BertkitError(f"stride={stride} must be at least 0 and less than max_length - 2 = {budget}")
    label_ids: list[int] | None = None
    if tags is not None:
        if label2id is None:
            raise BertkitError("tags were given without label2id to map them to ids")
        if len(tags) != len(words):
            raise BertkitError(f"{len(words)} words but {len(tags)} tags")
        unknown = sorted(set(tags) - set(label2id))
        if unknown:
            raise BertkitError(f"tag(s) {', '.join(map(repr, unknown))} not among the model's labels {list(label2id)}")
        label_ids = [label2id[tag] for tag in tags]

    encodings = tokenizer.encode_batch(words) if words else []
    pieces = [e.input_ids[1:-1][:budget] or [tokenizer.unk_token_id] for e in encodings]
    lengths = [len(p) for p in pieces]
    ranges = overlapping_windows(lengths, budget, stride)
    owners = max_context_owners(lengths, ranges)

    windows = []
    for k, (first, end) in enumerate(ranges):
        input_ids, labels, word_ids, owned = [tokenizer.cls_token_id], [IGNORE_INDEX], [None], [False]
        for w in range(first, end):
            mine = owners[w] == k
            for j, piece in enumerate(pieces[w]):
                input_ids.append(piece)
                labels.append(label_ids[w] if label_ids is not None and mine and j == 0 else IGNORE_INDEX)
                word_ids.append(w)
                owned.append(mine)
        input_ids.append(tokenizer.sep_token_id)
        labels.append(IGNORE_INDEX)
        word_ids.append(None)
        owned.append(False)
        windows.append(NerWindow(input_ids, [0] * len(input_ids), labels, word_ids, owned))
    return windows


def word_logits(windows: list[NerWindow], window_logits: list[torch.Tensor], num_words: int) -> torch.Tensor:
    """(words, labels): each word's scores, from its first piece in its owning window.

    Each logits tensor is (tokens, labels) for its window; trailing padding rows are ignored.
    """
    rows: list[torch.Tensor | None] = [None] * num_words
    for window, logits in zip(windows, window_logits, strict=True):
        previous = None
        for position, (word, owned) in enumerate(zip(window.word_ids, window.owned)):
            if owned and word != previous:
                rows[word] = logits[position]
            previous = word
    if None in rows:
        raise ValueError(f"no window owns word {rows.index(None)} of {num_words}; windows and sentence differ")
    return torch.stack(rows).float()


def decode_entities(
    text: str, spans: list[tuple[int, int]], word_tags: list[str], word_scores: list[float]
) -> list[dict]:
    """BIO/BIOES word tags -> entities with character offsets into `text` (end exclusive).

    Chunking is bertkit.metrics.get_entities, the one evaluation uses, so what is predicted is what is scored.
    An entity's score is the mean probability of its words.
    """
    entities = []
    for entity_type, first, last in get_entities(word_tags):
        start, end = spans[first][0], spans[last][1]
        score = sum(word_scores[first : last + 1]) / (last - first + 1)
        entities.append({"type": entity_type, "start": start, "end": end, "text": text[start:end], "score": score})
    return entities
