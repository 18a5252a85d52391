"""Pre-training data, as Google's create_pretraining_data.py builds it, but with masks drawn afresh for every batch.

The corpus is plain UTF-8 text, one sentence per line, a blank line between documents (the end of a file also ends
a document). It is tokenized once into flat arrays on disk (`Shards`), so a corpus larger than memory streams through
and a second run starts at once. `create_instances` cuts the token stream into [CLS] A [SEP] B [SEP] pairs for
next-sentence prediction, or packs full sentences without it (RoBERTa's FULL-SENTENCES). Masking is not stored with
the instances: `pretraining_collate` masks each batch anew ("dynamic masking"), so every epoch sees different masks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import jieba
import numpy as np
import torch
from tqdm import tqdm

from bertkit.batching import IGNORE_INDEX, collate
from bertkit.data.cjk import is_cjk
from bertkit.data.io import check_corpus_files, stream_corpus_lines
from bertkit.errors import BertkitError
from bertkit.fileio import atomic_path, atomic_write_text
from bertkit.tokenizer import SPECIAL_TOKENS, BertTokenizer, Encoding

# Bump when the shard layout changes, so old directories are rebuilt rather than misread.
_FORMAT = 1
_MANIFEST = "manifest.json"
# Array name -> file name; the dtype of "tokens" depends on the vocabulary size, the others are fixed.
_FILES = {
    "tokens": "tokens.bin",
    "word_starts": "word_starts.bin",
    "sentence_starts": "sentence_starts.bin",
    "document_starts": "document_starts.bin",
}
_FIXED_DTYPES = {"word_starts": np.uint8, "sentence_starts": np.int64, "document_starts": np.int64}
_LINES_PER_BATCH = 8192  # lines per encode_batch call: big enough for the Rust side to parallelise
_DETECT_LINES = 1000
_CHINESE_SHARE = 0.3
# Default for mask_tokens' random replacements: the ids of the special tokens in vocabularies that list them first
# (train_tokenizer's and from_vocab(SPECIAL_TOKENS + ...)). Google's vocab.txt files put them elsewhere
# ([CLS] is 101); pretraining_collate always passes the tokenizer's real ids.
_LEADING_SPECIAL_IDS = tuple(range(len(SPECIAL_TOKENS)))


def read_documents(paths: Sequence[str | os.PathLike]) -> Iterator[list[str]]:
    """Documents of the corpus as lists of sentences (stripped, non-empty), streamed one at a time.

    The files are checked for existence now; decoding errors and an empty corpus are raised while iterating.
    """
    return _documents(stream_corpus_lines(check_corpus_files(paths)))


def _documents(lines: Iterable[str | None]) -> Iterator[list[str]]:
    """Group a line stream with None separators into documents."""
    document: list[str] = []
    for line in lines:
        if line is not None:
            document.append(line)
        elif document:
            yield document
            document = []


def _looks_chinese(files: list[Path]) -> bool:
    """Whether more than 30% of the non-space characters of the first 1000 lines are CJK ideographs."""
    lines = itertools.islice((line for line in stream_corpus_lines(files) if line is not None), _DETECT_LINES)
    text = "".join("".join(line.split()) for line in lines)
    return sum(map(is_cjk, text)) > _CHINESE_SHARE * len(text)


def _fingerprint(files: list[Path], tokenizer: BertTokenizer, chinese_words: bool) -> str:
    """A hash of everything the shards depend on: the corpus files' identity, the tokenizer and the word rule.

    Files are identified by absolute path, size and modification time rather than content, so checking a large
    corpus for reuse costs no reading.
    """
    vocab = tokenizer.get_vocab()
    state = {
        "format": _FORMAT,
        "files": [[str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns] for path in files],
        "vocab": hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest(),
        "do_lower_case": tokenizer.do_lower_case,
        "chinese_words": chinese_words,
    }
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()


def _word_start_flags(text: str, encoding: Encoding, chinese_words: bool) -> list[int]:
    """1 for each token of `text` (specials excluded) that begins a word, for whole-word masking.

    English words are WordPiece's: a "##" piece continues the previous token. Chinese text is one token per
    character, so words come from jieba instead: a token starts a word when it starts at a jieba word boundary
    (jieba's words concatenate back to the text exactly, so their cumulative lengths are the boundaries).
    """
    tokens, offsets = encoding.tokens[1:-1], encoding.offsets[1:-1]
    if chinese_words:
        boundaries = set(itertools.accumulate((len(word) for word in jieba.lcut(text)), initial=0))
        return [int(not token.startswith("##") and start in boundaries) for token, (start, _) in zip(tokens, offsets)]
    return [int(not token.startswith("##")) for token in tokens]


class _ShardWriter:
    """Appends tokenized sentences to the open shard files and counts what the manifest records."""

    def __init__(
        self, streams: dict[str, BinaryIO], tokenizer: BertTokenizer, chinese_words: bool, token_dtype: np.dtype
    ):
        self.streams = streams
        self.tokenizer = tokenizer
        self.chinese_words = chinese_words
        self.token_dtype = token_dtype
        self.num_tokens = 0
        self.num_sentences = 0
        self.num_documents = 0
        self.in_document = False

    def write(self, lines: list[str | None]) -> None:
        """Tokenize a batch of lines (None = document break) and append them; sentences with no tokens are dropped."""
        texts = [line for line in lines if line is not None]
        encodings = iter(self.tokenizer.encode_batch(texts, truncation="do_not_truncate") if texts else [])
        ids: list[int] = []
        flags: list[int] = []
        sentence_starts: list[int] = []
        document_starts: list[int] = []
        for line in lines:
            if line is None:
                self.in_document = False
                continue
            encoding = next(encodings)
            pieces = encoding.input_ids[1:-1]  # without [CLS] and [SEP]
            if not pieces:
                continue
            if not self.in_document:
                document_starts.append(self.num_sentences)
                self.num_documents += 1
                self.in_document = True
            sentence_starts.append(self.num_tokens)
            ids += pieces
            flags += _word_start_flags(line, encoding, self.chinese_words)
            self.num_tokens += len(pieces)
            self.num_sentences += 1
        self._append("tokens", ids)
        self._append("word_starts", flags)
        self._append("sentence_starts", sentence_starts)
        self._append("document_starts", document_starts)

    def finish(self) -> None:
        """Close the offset arrays with their end sentinels."""
        if self.num_tokens == 0:
            raise BertkitError("corpus is empty: no line of it yields any token")
        self._append("sentence_starts", [self.num_tokens])
        self._append("document_starts", [self.num_sentences])

    def _append(self, name: str, values: list[int]) -> None:
        dtype = self.token_dtype if name == "tokens" else _FIXED_DTYPES[name]
        np.asarray(values, dtype=dtype).tofile(self.streams[name])


@dataclass
class Shards:
    """Token ids of a whole corpus on disk, memory-mapped read-only.

    `tokens` is one flat array of token ids (uint16 when the vocabulary has fewer than 65536 tokens, else uint32),
    without [CLS]/[SEP]. Sentence i is tokens[sentence_starts[i]:sentence_starts[i + 1]] and document d is sentences
    document_starts[d] to document_starts[d + 1]: both offset arrays (int64) end with a sentinel, so they hold one
    entry more than there are sentences / documents. `word_starts` (uint8, aligned to `tokens`) is 1 where a new
    word starts, for whole-word masking. The [CLS]/[SEP] ids of the tokenizer that built the shards come along,
    so instances can be made without it.
    """

    directory: Path
    tokens: np.ndarray
    sentence_starts: np.ndarray
    document_starts: np.ndarray
    word_starts: np.ndarray
    cls_token_id: int
    sep_token_id: int
    fingerprint: str

    @classmethod
    def build(
        cls,
        paths: Sequence[str | os.PathLike],
        tokenizer: BertTokenizer,
        directory: str | os.PathLike,
        chinese_words: bool | None = None,
        show_progress: bool = True,
    ) -> Shards:
        """Tokenize the corpus once into `directory` (replacing any shards there) and open the result.

        chinese_words picks the word rule for whole-word masking: jieba words (True), WordPiece "##" pieces (False),
        or None to decide from the text (True when over 30% of the first 1000 lines' characters are CJK).
        """
        files = check_corpus_files(paths)
        chinese = _looks_chinese(files) if chinese_words is None else chinese_words
        return cls._build(files, tokenizer, Path(directory), chinese, show_progress)

    @classmethod
    def open_or_build(
        cls,
        paths: Sequence[str | os.PathLike],
        tokenizer: BertTokenizer,
        directory: str | os.PathLike,
        chinese_words: bool | None = None,
        show_progress: bool = True,
    ) -> Shards:
        """Reuse the shards in `directory` if they were built from these files (unchanged) and this tokenizer."""
        files = check_corpus_files(paths)
        chinese = _looks_chinese(files) if chinese_words is None else chinese_words
        try:
            shards = cls.open(directory)
        except BertkitError:  # missing, incomplete or from another format: build afresh
            return cls._build(files, tokenizer, Path(directory), chinese, show_progress)
        if shards.fingerprint == _fingerprint(files, tokenizer, chinese):
            return shards
        return cls._build(files, tokenizer, Path(directory), chinese, show_progress)

    @classmethod
    def open(cls, directory: str | os.PathLike) -> Shards:
        """Memory-map existing shards read-only, checking each file against the manifest."""
        directory = Path(directory)
        manifest_path = directory / _MANIFEST
        if not manifest_path.is_file():
            raise BertkitError(f"{directory}: no pre-training shards here ({_MANIFEST} is missing)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BertkitError(f"{manifest_path}: cannot read ({exc}); delete {directory} to rebuild") from None
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise BertkitError(f"{manifest_path}: written by another bertkit version; delete {directory} to rebuild")
        try:
            counts = {
                "tokens": int(manifest["num_tokens"]),
                "word_starts": int(manifest["num_tokens"]),
                "sentence_starts": int(manifest["num_sentences"]) + 1,
                "document_starts": int(manifest["num_documents"]) + 1,
            }
            token_dtype = np.dtype(manifest["token_dtype"])
            cls_token_id, sep_token_id = int(manifest["cls_token_id"]), int(manifest["sep_token_id"])
            fingerprint = str(manifest["fingerprint"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BertkitError(f"{manifest_path}: damaged ({exc!r}); delete {directory} to rebuild") from None
        arrays = {}
        for name, file_name in _FILES.items():
            dtype = token_dtype if name == "tokens" else np.dtype(_FIXED_DTYPES[name])
            path = directory / file_name
            expected = counts[name] * dtype.itemsize
            size = path.stat().st_size if path.is_file() else 0
            if size != expected:
                raise BertkitError(
                    f"{path}: {size} bytes, the manifest expects {expected}; delete {directory} to rebuild"
                )
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=(counts[name],))
        return cls(directory, **arrays, cls_token_id=cls_token_id, sep_token_id=sep_token_id, fingerprint=fingerprint)

    @classmethod
    def _build(
        cls, files: list[Path], tokenizer: BertTokenizer, directory: Path, chinese_words: bool, show_progress: bool
    ) -> Shards:
        """Write every array under a temporary name, rename them into place, and write the manifest last.

        The old manifest goes first, so an interrupted build leaves a directory that `open` refuses rather than
        one that mixes old and new files. Temporary names are unique (bertkit.fileio), so two processes building the
        same directory (ranks that did not wait for each other) cannot write into the same file.
        """
        fingerprint = _fingerprint(files, tokenizer, chinese_words)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / _MANIFEST).unlink(missing_ok=True)
        except OSError as exc:
            raise BertkitError(f"{directory}: cannot write pre-training shards there ({exc.strerror})") from None
        if chinese_words:
            jieba.setLogLevel(logging.WARNING)  # jieba otherwise logs its dictionary loading on every run
        token_dtype = np.dtype(np.uint16 if tokenizer.vocab_size < 1 << 16 else np.uint32)
        with ExitStack() as renames:  # every shard is renamed into place once all are written
            temporary = {name: renames.enter_context(atomic_path(directory / file)) for name, file in _FILES.items()}
            with ExitStack() as stack:
                streams = {name: stack.enter_context(path.open("wb")) for name, path in temporary.items()}
                progress = stack.enter_context(
                    tqdm(
                        total=sum(path.stat().st_size for path in files),
                        unit="B",
                        unit_scale=True,
                        desc="tokenizing corpus",
                        disable=not show_progress,
                    )
                )
                writer = _ShardWriter(streams, tokenizer, chinese_words, token_dtype)
                batch: list[str | None] = []
                for line in stream_corpus_lines(files, progress):
                    batch.append(line)
                    if len(batch) >= _LINES_PER_BATCH:
                        writer.write(batch)
                        batch = []
                writer.write(batch)
                writer.finish()
        manifest = {
            "format": _FORMAT,
            "fingerprint": fingerprint,
            "files": [str(path.resolve()) for path in files],
            "chinese_words": chinese_words,
            "token_dtype": token_dtype.name,
            "cls_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "num_tokens": writer.num_tokens,
            "num_sentences": writer.num_sentences,
            "num_documents": writer.num_documents,
        }
        atomic_write_text(directory / _MANIFEST, json.dumps(manifest, indent=2) + "\n")
        return cls.open(directory)

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    def document(self, d: int) -> list[np.ndarray]:
        """The sentences of document d as token-id arrays (views into the memory map)."""
        if not 0 <= d < self.num_documents:
            raise IndexError(f"document {d} is out of range (the corpus has {self.num_documents})")
        first, last = int(self.document_starts[d]), int(self.document_starts[d + 1])
        starts = self.sentence_starts[first : last + 1].tolist()
        return [self.tokens[start:end] for start, end in zip(starts, starts[1:])]


@dataclass
class Instance:
    """One pre-training sequence before masking; masks are drawn per batch by `pretraining_collate`."""

    tokens: list[int]  # [CLS] A [SEP] B [SEP], or [CLS] A [SEP] without NSP
    token_type_ids: list[int]
    word_starts: list[bool]  # aligned to tokens; False at [CLS]/[SEP]
    next_sentence_label: int  # 0: B follows A in its document, 1: B is random (transformers' convention); -100: no NSP


def create_instances(
    shards: Shards,
    max_seq_len: int,
    rng: random.Random,
    nsp: bool = True,
    short_seq_prob: float = 0.1,
    documents: range | None = None,
) -> list[Instance]:
    """Cut the documents in `documents` (default: all) into training sequences of at most max_seq_len tokens.

    With nsp, exactly the pairing of Google's create_instances_from_document (see `_nsp_instances`); random next
    segments are drawn only from `documents`, so a held-out range stays unseen by training. Without nsp, full
    sentences are packed in corpus order (see `_packed_instances`). Instances come in corpus order, unshuffled.
    """
    documents = range(shards.num_documents) if documents is None else documents
    if len(documents) and not (0 <= documents[0] < shards.num_documents and 0 <= documents[-1] < shards.num_documents):
        raise BertkitError(f"documents {documents} fall outside the corpus's {shards.num_documents} documents")
    if not nsp:
        if max_seq_len < 3:
            raise BertkitError(f"max_seq_len={max_seq_len} leaves no room for text next to [CLS] and [SEP]")
        return _packed_instances(shards, max_seq_len - 2, documents)
    if max_seq_len < 5:
        raise BertkitError(f"max_seq_len={max_seq_len} is too short for NSP pairs ([CLS] A [SEP] B [SEP] needs 5)")
    if len(documents) < 2:
        where = "the corpus has" if len(documents) == shards.num_documents else f"documents {documents} hold"
        raise BertkitError(
            f"NSP needs at least 2 documents to draw random next segments from, but {where} {len(documents)}; "
            "separate documents with blank lines, or use --no-nsp"
        )
    return _nsp_instances(shards, max_seq_len - 3, rng, short_seq_prob, documents)


def _nsp_instances(
    shards: Shards, max_num_tokens: int, rng: random.Random, short_seq_prob: float, documents: range
) -> list[Instance]:
    """Google's NSP pairing, drawing from `rng` in the same order as the original.

    Per document (one target length per document, as in the original): gather sentences until the target is
    reached; A = the first a_end of them (a_end random); B = the rest, or with probability 0.5 (always when the
    chunk is a single sentence) a run of sentences from another document, putting the unused sentences back for the
    next chunk. One deliberate difference: the other document is drawn uniformly among the others, where the
    original tried 10 times and could end up with the same document. Segments are contiguous in the token array,
    so they are kept as [start, end) ranges until the instance is written.
    """
    sentence_starts, document_starts = shards.sentence_starts, shards.document_starts
    instances = []
    for position, document in enumerate(documents):
        first, last = int(document_starts[document]), int(document_starts[document + 1])
        starts = sentence_starts[first : last + 1].tolist()  # starts[k] = start of the document's k-th sentence
        target_length = max_num_tokens
        if rng.random() < short_seq_prob:
            target_length = rng.randint(2, max_num_tokens)
        chunk_first, chunk_length, i = 0, 0, 0
        while i < last - first:
            chunk_length += starts[i + 1] - starts[i]
            if i == last - first - 1 or chunk_length >= target_length:
                num_sentences = i + 1 - chunk_first
                a_end = rng.randint(1, num_sentences - 1) if num_sentences >= 2 else 1
                segment_a = [starts[chunk_first], starts[chunk_first + a_end]]
                if num_sentences == 1 or rng.random() < 0.5:
                    label = 1
                    other = rng.randrange(len(documents) - 1)
                    other = documents[other + 1 if other >= position else other]
                    segment_b = _random_segment(shards, other, target_length - (segment_a[1] - segment_a[0]), rng)
                    i = chunk_first + a_end - 1  # the sentences after A go back for the next chunk
                else:
                    label = 0
                    segment_b = [starts[chunk_first + a_end], starts[i + 1]]
                _truncate_pair(segment_a, segment_b, max_num_tokens, rng)
                instances.append(_pair_instance(shards, segment_a, segment_b, label))
                chunk_first, chunk_length = i + 1, 0
            i += 1
    return instances


def _random_segment(shards: Shards, document: int, target_length: int, rng: random.Random) -> list[int]:
    """[start, end) of whole sentences from a random sentence of `document` on, until target_length is reached."""
    first, last = int(shards.document_starts[document]), int(shards.document_starts[document + 1])
    starts = shards.sentence_starts[first : last + 1].tolist()
    begin = rng.randint(0, last - first - 1)
    end = begin
    while end < last - first:
        end += 1
        if starts[end] - starts[begin] >= target_length:
            break
    return [starts[begin], starts[end]]


def _truncate_pair(segment_a: list[int], segment_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Trim the longer segment one token at a time, from its front or back at random, until the pair fits."""
    while (segment_a[1] - segment_a[0]) + (segment_b[1] - segment_b[0]) > max_num_tokens:
        longer = segment_a if segment_a[1] - segment_a[0] > segment_b[1] - segment_b[0] else segment_b
        if rng.random() < 0.5:
            longer[0] += 1
        else:
            longer[1] -= 1


def _pair_instance(shards: Shards, segment_a: list[int], segment_b: list[int], label: int) -> Instance:
    """[CLS] A [SEP] B [SEP] with segment ids 0 for [CLS] A [SEP] and 1 for B [SEP]."""
    cls, sep = shards.cls_token_id, shards.sep_token_id
    a = shards.tokens[segment_a[0] : segment_a[1]].tolist()
    b = shards.tokens[segment_b[0] : segment_b[1]].tolist()
    a_starts = shards.word_starts[segment_a[0] : segment_a[1]].astype(bool).tolist()
    b_starts = shards.word_starts[segment_b[0] : segment_b[1]].astype(bool).tolist()
    return Instance(
        tokens=[cls, *a, sep, *b, sep],
        token_type_ids=[0] * (len(a) + 2) + [1] * (len(b) + 1),
        word_starts=[False, *a_starts, False, *b_starts, False],
        next_sentence_label=label,
    )


def _packed_instances(shards: Shards, budget: int, documents: range) -> list[Instance]:
    """RoBERTa's FULL-SENTENCES: contiguous whole sentences, across document ends, up to `budget` tokens each.

    A sentence longer than the budget is cut into budget-sized pieces; its last piece starts the next sequence.
    """
    sentence_starts, document_starts = shards.sentence_starts, shards.document_starts
    instances = []
    ranges: list[tuple[int, int]] = []
    size = 0
    for document in documents:
        first, last = int(document_starts[document]), int(document_starts[document + 1])
        starts = sentence_starts[first : last + 1].tolist()
        for start, end in zip(starts, starts[1:]):
            if ranges and size + end - start > budget:
                instances.append(_packed_instance(shards, ranges))
                ranges, size = [], 0
            while end - start > budget:
                instances.append(_packed_instance(shards, [(start, start + budget)]))
                start += budget
            ranges.append((start, end))
            size += end - start
    if ranges:
        instances.append(_packed_instance(shards, ranges))
    return instances


def _packed_instance(shards: Shards, ranges: list[tuple[int, int]]) -> Instance:
    """[CLS] the token ranges, concatenated [SEP], all segment 0, no NSP label."""
    tokens = [token for start, end in ranges for token in shards.tokens[start:end].tolist()]
    starts = [flag for start, end in ranges for flag in shards.word_starts[start:end].astype(bool).tolist()]
    return Instance(
        tokens=[shards.cls_token_id, *tokens, shards.sep_token_id],
        token_type_ids=[0] * (len(tokens) + 2),
        word_starts=[False, *starts, False],
        next_sentence_label=IGNORE_INDEX,
    )


def mask_tokens(
    tokens: torch.Tensor,
    special_mask: torch.Tensor,
    word_starts: torch.Tensor | None,
    vocab_size: int,
    mask_token_id: int,
    generator: torch.Generator,
    mlm_probability: float = 0.15,
    whole_word: bool = False,
    special_ids: Sequence[int] = _LEADING_SPECIAL_IDS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask one padded batch (batch, seq) for MLM; returns (input_ids, labels), labels -100 where not chosen.

    How many: as in Google's original, each sequence gets exactly max(1, round(mlm_probability * n)) predictions,
    n = its maskable tokens (positions not in `special_mask`, which must cover [CLS], [SEP] and padding). A fixed
    count rather than a coin per token (transformers' collator) guarantees every sequence something to predict, so
    a small batch never ends up with no MLM target at all. Which: positions in uniformly random order.

    whole_word: the units are words instead of tokens (a word = a word-start token and the non-start tokens after
    it; a token right after a special one also starts a word). Words are taken in random order while they fit in
    the count, skipping any that would overshoot, as the original whole-word masking does; every piece of a taken
    word is predicted.

    Of the chosen units 80% become [MASK], 10% a random token and 10% stay as they are, decided once per unit (all
    pieces of a word get the same treatment; a "random" word gets an independent random id per piece). Random ids
    are drawn uniformly from the vocabulary minus `special_ids` and [MASK], so a replacement is never a special
    token; the default special_ids, 0-4, fit vocabularies that list the five specials first (ours).
    """
    if not 0 < mlm_probability < 1:
        raise BertkitError(f"mlm_probability must be between 0 and 1, got {mlm_probability}")
    if whole_word and word_starts is None:
        raise ValueError("whole_word masking needs word_starts")
    batch, length = tokens.shape
    maskable = ~special_mask.bool()
    after_special = torch.ones_like(maskable)
    after_special[:, 1:] = ~maskable[:, :-1]
    unit_starts = maskable & (word_starts.bool() | after_special) if whole_word else maskable
    # Unit index of every position within its row (positions before the first unit are not maskable anyway).
    unit_of = (unit_starts.long().cumsum(1) - 1).clamp(min=0)
    unit_sizes = torch.zeros(batch, length, dtype=torch.long).scatter_add_(1, unit_of, maskable.long())

    num_maskable = maskable.sum(1)
    budget = torch.round(num_maskable.double() * mlm_probability).long().clamp(min=1) * (num_maskable > 0)
    keys = torch.rand(batch, length, generator=generator).masked_fill(unit_sizes == 0, 2.0)
    order = keys.argsort(dim=1)  # units in random order, empty slots last
    sizes_in_order = unit_sizes.gather(1, order)
    taken = torch.zeros(batch, length, dtype=torch.bool)
    total = torch.zeros(batch, dtype=torch.long)
    for rank in range(length):
        if bool((total >= budget).all()):
            break
        size = sizes_in_order[:, rank]
        fits = (size > 0) & (total + size <= budget)
        taken[:, rank] = fits
        total += size * fits
    chosen_units = torch.zeros_like(taken).scatter_(1, order, taken)
    chosen = chosen_units.gather(1, unit_of) & maskable

    action = torch.rand(batch, length, generator=generator).gather(1, unit_of)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    excluded = sorted({*special_ids, mask_token_id})
    random_ids = torch.randint(vocab_size - len(excluded), (batch, length), generator=generator)
    for special_id in excluded:  # shift past each excluded id in turn: uniform over the allowed ids
        random_ids += (random_ids >= special_id).long()

    input_ids = tokens.clone()
    input_ids[to_mask] = mask_token_id
    input_ids[to_random] = random_ids[to_random]
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return input_ids, labels


def pretraining_collate(
    instances: list[Instance],
    tokenizer: BertTokenizer,
    generator: torch.Generator,
    whole_word: bool,
    mlm_probability: float = 0.15,
) -> dict[str, torch.Tensor]:
    """Pad a list of instances and mask them afresh: input_ids, attention_mask, token_type_ids, labels and
    next_sentence_label (left out when no instance has one, i.e. without NSP)."""
    batch = collate(
        [
            {"input_ids": i.tokens, "token_type_ids": i.token_type_ids, "next_sentence_label": i.next_sentence_label}
            for i in instances
        ],
        tokenizer.pad_token_id,
    )
    input_ids = batch["input_ids"]
    structural = [tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id]
    # [UNK] stays maskable, as in the original; the structural specials are left alone, also when a sentence
    # spells one out literally (a "[SEP]" in the text).
    special_mask = (batch["attention_mask"] == 0) | torch.isin(input_ids, torch.tensor(structural))
    word_starts = None
    if whole_word:
        word_starts = torch.zeros_like(input_ids, dtype=torch.bool)
        for row, instance in enumerate(instances):
            word_starts[row, : len(instance.word_starts)] = torch.tensor(instance.word_starts)
    batch["input_ids"], batch["labels"] = mask_tokens(
        input_ids,
        special_mask,
        word_starts,
        tokenizer.vocab_size,
        tokenizer.mask_token_id,
        generator,
        mlm_probability,
        whole_word,
        special_ids=[*structural, tokenizer.unk_token_id],
    )
    if bool((batch["next_sentence_label"] == IGNORE_INDEX).all()):
        del batch["next_sentence_label"]
    return batch
