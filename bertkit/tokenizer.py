"""BERT's WordPiece tokenizer, composed from Hugging Face `tokenizers` pieces.

The Rust pieces (BertNormalizer, BertPreTokenizer, WordPiece) already implement BERT's rules exactly, so this
module only wires them together, loads and saves the Hugging Face file layout, and turns bad input into
`BertkitError`s. Ids match `transformers.BertTokenizerFast` built from the same files.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from bertkit.data.io import check_corpus_files, stream_corpus_lines
from bertkit.errors import BertkitError
from bertkit.options import Options, option

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = SPECIAL_TOKENS
# Hugging Face's names for the special tokens in tokenizer_config.json / special_tokens_map.json.
_SPECIAL_TOKEN_KEYS = dict(zip(["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"], SPECIAL_TOKENS))
_TRUNCATIONS = ("longest_first", "only_first", "only_second", "do_not_truncate")
_DEFAULT_MAX_LENGTH = 512
# transformers writes model_max_length=int(1e30) to mean "unknown"; anything this large is treated as unset.
_UNSET_MAX_LENGTH = int(1e20)


@dataclass
class Encoding:
    """One encoded sequence (or pair), unpadded; offsets index the original text of the token's segment."""

    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int]]
    sequence_ids: list[int | None]
    word_ids: list[int | None]
    tokens: list[str]


def _bert_pipeline(
    vocab: dict[str, int], do_lower_case: bool, strip_accents: bool | None = None, tokenize_chinese_chars: bool = True
) -> Tokenizer:
    """The tokenizer BERT's original vocab.txt implies: basic tokenizer rules, then greedy WordPiece."""
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=tokenize_chinese_chars,
        strip_accents=strip_accents,
        lowercase=do_lower_case,
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


class BertTokenizer:
    """WordPiece tokenizer with BERT's [CLS] A [SEP] B [SEP] layout and batch encoding to padded tensors."""

    def __init__(self, tokenizer: Tokenizer, do_lower_case: bool, model_max_length: int = 512):
        """Take over `tokenizer` (a WordPiece model with a BertNormalizer) and install BERT's special-token handling."""
        if not isinstance(tokenizer.model, models.WordPiece):
            raise BertkitError(f"BertTokenizer needs a WordPiece model, got {type(tokenizer.model).__name__}")
        if not isinstance(tokenizer.normalizer, normalizers.BertNormalizer):
            raise BertkitError(f"BertTokenizer needs a BertNormalizer, got {type(tokenizer.normalizer).__name__}")
        if tokenizer.normalizer.lowercase != do_lower_case:
            raise BertkitError(
                f"do_lower_case={do_lower_case} contradicts the normalizer (lowercase={tokenizer.normalizer.lowercase})"
            )
        missing = [token for token in SPECIAL_TOKENS if tokenizer.model.token_to_id(token) is None]
        if missing:
            raise BertkitError(f"vocabulary lacks the special token(s) {', '.join(missing)}")
        # Special tokens written in the text (e.g. a literal "[MASK]") must map to their ids, as in transformers.
        tokenizer.add_special_tokens(SPECIAL_TOKENS)
        self._ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS}:0 $A:0 {SEP}:0",
            pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
            special_tokens=[(CLS, self._ids[CLS]), (SEP, self._ids[SEP])],
        )
        tokenizer.decoder = decoders.WordPiece(prefix=tokenizer.model.continuing_subword_prefix)
        # tokenizer.json files often carry fixed padding/truncation; ours is chosen per call instead.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self.do_lower_case = do_lower_case
        self.model_max_length = model_max_length
        # Truncation is backend state set per call; the lock keeps concurrent callers from seeing each other's.
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> BertTokenizer:
        """Load a Hugging Face tokenizer directory (tokenizer.json preferred, else vocab.txt) or a bare vocab.txt.

        As in transformers, tokenizer_config.json's do_lower_case / strip_accents / tokenize_chinese_chars decide the
        normalizer; settings it lacks come from tokenizer.json's BertNormalizer, else BERT's defaults (uncased).
        A bare vocab.txt file gets the defaults.
        """
        path = Path(path)
        if path.is_file():
            config: dict[str, Any] = {}
            json_file, vocab_file = None, path
        elif path.is_dir():
            config = read_json_object(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
            json_file, vocab_file = path / "tokenizer.json", path / "vocab.txt"
        else:
            raise BertkitError(f"tokenizer path not found: {path}")
        for key, expected in _SPECIAL_TOKEN_KEYS.items():
            value = config.get(key)
            value = value.get("content") if isinstance(value, dict) else value
            if value is not None and value != expected:
                raise BertkitError(f"{path}: {key} is {value!r}; bertkit supports only BERT's {expected}")

        if json_file is not None and json_file.is_file():
            try:
                tokenizer = Tokenizer.from_file(str(json_file))
            except Exception as error:  # the Rust side raises a bare Exception for any parse problem
                raise BertkitError(f"cannot read {json_file}: {error}") from None
        elif vocab_file.is_file():
            try:
                vocab = models.WordPiece.read_file(str(vocab_file))  # the same reader transformers uses
            except Exception as error:
                raise BertkitError(f"cannot read {vocab_file}: {error}") from None
            tokenizer = _bert_pipeline(vocab, do_lower_case=True)
        else:
            raise BertkitError(f"no tokenizer.json or vocab.txt in {path}")

        base = tokenizer.normalizer
        if not isinstance(base, normalizers.BertNormalizer):
            base = normalizers.BertNormalizer()
        do_lower_case = bool(config.get("do_lower_case", base.lowercase))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=bool(config.get("tokenize_chinese_chars", base.handle_chinese_chars)),
            strip_accents=config.get("strip_accents", base.strip_accents),
            lowercase=do_lower_case,
        )
        model_max_length = int(config.get("model_max_length", _DEFAULT_MAX_LENGTH))
        if model_max_length >= _UNSET_MAX_LENGTH:
            model_max_length = _DEFAULT_MAX_LENGTH
        return cls(tokenizer, do_lower_case=do_lower_case, model_max_length=model_max_length)

    @classmethod
    def from_vocab(cls, vocab: list[str], do_lower_case: bool = True) -> BertTokenizer:
        """Build from an in-memory vocabulary (token i gets id i), as if it were a vocab.txt."""
        ids = {token: i for i, token in enumerate(vocab)}
        if len(ids) != len(vocab):
            duplicates = sorted(token for token, count in Counter(vocab).items() if count > 1)
            raise BertkitError(f"vocabulary has duplicate tokens: {', '.join(map(repr, duplicates[:5]))}")
        return cls(_bert_pipeline(ids, do_lower_case), do_lower_case=do_lower_case)

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Write the Hugging Face layout, loadable by transformers' BertTokenizerFast and by from_pretrained."""
        out_dir = Path(out_dir)
        vocab = self.get_vocab()
        tokens = sorted(vocab, key=vocab.__getitem__)
        if [vocab[token] for token in tokens] != list(range(len(tokens))):
            raise BertkitError("cannot write vocab.txt: token ids are not contiguous (duplicates in the source vocab?)")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BertkitError(f"cannot create tokenizer directory {out_dir}: {error.strerror}") from None
        normalizer = self._tokenizer.normalizer
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": normalizer.strip_accents,
            "tokenize_chinese_chars": normalizer.handle_chinese_chars,
            "model_max_length": self.model_max_length,
            **_SPECIAL_TOKEN_KEYS,
        }
        (out_dir / "vocab.txt").write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
        self._tokenizer.save(str(out_dir / "tokenizer.json"))
        for name, content in [("tokenizer_config.json", config), ("special_tokens_map.json", _SPECIAL_TOKEN_KEYS)]:
            (out_dir / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")

    @property
    def vocab_size(self) -> int:
        """Number of token ids, i.e. the rows the embedding matrix needs."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_token_id(self) -> int:
        return self._ids[PAD]

    @property
    def unk_token_id(self) -> int:
        return self._ids[UNK]

    @property
    def cls_token_id(self) -> int:
        return self._ids[CLS]

    @property
    def sep_token_id(self) -> int:
        return self._ids[SEP]

    @property
    def mask_token_id(self) -> int:
        return self._ids[MASK]

    def get_vocab(self) -> dict[str, int]:
        """Token → id for the whole vocabulary."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def encode(
        self, text: str, text_pair: str | None = None, max_length: int | None = None, truncation: str = "longest_first"
    ) -> Encoding:
        """Encode one text (or pair); max_length counts [CLS]/[SEP] and defaults to model_max_length."""
        pairs = None if text_pair is None else [text_pair]
        return self.encode_batch([text], pairs, max_length=max_length, truncation=truncation)[0]

    def encode_batch(
        self,
        texts: list[str],
        text_pairs: list[str] | None = None,
        max_length: int | None = None,
        truncation: str = "longest_first",
    ) -> list[Encoding]:
        """Encode many texts in parallel in Rust; same truncation semantics as transformers."""
        if isinstance(texts, str) or isinstance(text_pairs, str):
            raise BertkitError("texts and text_pairs must be lists of strings, not a single string")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise BertkitError(f"got {len(texts)} texts but {len(text_pairs)} text_pairs")
        inputs = list(texts) if text_pairs is None else list(zip(texts, text_pairs))
        with self._lock:
            self._set_truncation(max_length, truncation, is_pair=text_pairs is not None)
            try:
                encoded = self._tokenizer.encode_batch(inputs)
            except Exception as error:  # the Rust side raises a bare Exception; only truncation is the user's fault
                if "Truncation error" not in str(error):
                    raise
                raise BertkitError(f"cannot truncate to max_length={max_length} with {truncation}: {error}") from None
            finally:
                self._tokenizer.no_truncation()
        return [Encoding(e.ids, e.type_ids, e.offsets, e.sequence_ids, e.word_ids, e.tokens) for e in encoded]

    def _set_truncation(self, max_length: int | None, truncation: str, is_pair: bool) -> None:
        """Configure the backend for one call, refusing settings transformers would silently ignore."""
        if truncation not in _TRUNCATIONS:
            raise BertkitError(f"truncation must be one of {', '.join(_TRUNCATIONS)}; got {truncation!r}")
        if truncation == "do_not_truncate":
            return
        if truncation == "only_second" and not is_pair:
            raise BertkitError("truncation='only_second' needs text pairs")
        limit = self.model_max_length if max_length is None else max_length
        n_special = self._tokenizer.num_special_tokens_to_add(is_pair)
        if limit <= n_special:  # the backend would skip truncation entirely here
            raise BertkitError(f"max_length={limit} leaves no room for text next to {n_special} special tokens")
        self._tokenizer.enable_truncation(limit, strategy=truncation)

    def pad(self, encodings: list[Encoding], pad_to: int | None = None) -> dict[str, torch.Tensor]:
        """Right-pad to the longest encoding (or pad_to) as int64 tensors input_ids, token_type_ids, attention_mask."""
        longest = max((len(e.input_ids) for e in encodings), default=0)
        length = longest if pad_to is None else pad_to
        if length < longest:
            raise BertkitError(f"pad_to={pad_to} is shorter than the longest encoding ({longest} tokens)")
        shape = (len(encodings), length)

        def padded(rows: list[list[int]], value: int) -> torch.Tensor:
            return torch.tensor([row + [value] * (length - len(row)) for row in rows], dtype=torch.long).reshape(shape)

        return {
            "input_ids": padded([e.input_ids for e in encodings], self.pad_token_id),
            "token_type_ids": padded([e.token_type_ids for e in encodings], 0),
            "attention_mask": padded([[1] * len(e.input_ids) for e in encodings], 0),
        }

    def __call__(
        self,
        texts: list[str],
        text_pairs: list[str] | None = None,
        max_length: int | None = None,
        truncation: str = "longest_first",
    ) -> dict[str, torch.Tensor]:
        """Encode a batch straight into model inputs."""
        return self.pad(self.encode_batch(texts, text_pairs, max_length=max_length, truncation=truncation))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        """Map ids back to vocabulary tokens (with their ## prefixes)."""
        tokens = [self._tokenizer.id_to_token(i) for i in ids]
        if None in tokens:
            bad = ids[tokens.index(None)]
            raise BertkitError(f"token id {bad} is outside the vocabulary (size {self.vocab_size})")
        return tokens

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Join WordPiece tokens back into text (lower-cased and accent-stripped if the tokenizer is uncased)."""
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)



def read_json_object(path: Path) -> dict[str, Any]:
    """Read a JSON config, naming the file when it is broken."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BertkitError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise BertkitError(f"{path} must hold a JSON object")
    return data


def train_tokenizer(
    files: list[str | os.PathLike],
    vocab_size: int,
    do_lower_case: bool = True,
    min_frequency: int = 2,
    show_progress: bool = True,
) -> BertTokenizer:
    """Learn a WordPiece vocabulary under BERT's normalizer and pre-tokenizer; specials get ids 0-4 in listed order.

    Every character seen in the corpus stays in the vocabulary (so each CJK character is a token). Blank lines,
    our document breaks, carry no text and need no special handling.
    """
    if vocab_size < len(SPECIAL_TOKENS):
        raise BertkitError(f"vocab_size={vocab_size} is smaller than the {len(SPECIAL_TOKENS)} special tokens")
    paths = check_corpus_files(files)
    for _ in stream_corpus_lines(paths):  # every line decodes, and some text exists, before training starts
        pass
    tokenizer = _bert_pipeline({}, do_lower_case)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=show_progress,
        continuing_subword_prefix="##",
    )
    tokenizer.train([str(path) for path in paths], trainer)
    return BertTokenizer(tokenizer, do_lower_case=do_lower_case)


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")


@dataclass
class TokenizerTrainOptions(Options):
    """`bertkit tokenizer train`: each field a flag."""

    corpus: list[str] = option(help="UTF-8 text files", metavar="FILE")
    out: str = option(help="directory for vocab.txt, tokenizer.json and tokenizer_config.json")
    vocab_size: int = option(30522, "tokens in the vocabulary, special tokens included", min=len(SPECIAL_TOKENS))
    cased: bool = option(False, "keep case and accents (default: lower-case, strip accents)")
    overwrite: bool = option(False, "replace a tokenizer already in --out")


def train_tokenizer_to(options: TokenizerTrainOptions) -> BertTokenizer:
    """Train a vocabulary on `options.corpus` and save it to `options.out`, which must not hold one already."""
    from bertkit.checkpoint import refuse_to_replace_model  # checkpoint imports this module

    out = Path(options.out)
    refuse_to_replace_model(out, options.overwrite, None, TOKENIZER_FILES, "a tokenizer")
    tokenizer = train_tokenizer(options.corpus, vocab_size=options.vocab_size, do_lower_case=not options.cased)
    tokenizer.save_pretrained(out)
    return tokenizer


UNKNOWN_WARN_SHARE = 0.05  # more [UNK] than this among the training tokens: the vocabulary does not fit the text


def warn_if_unknown(input_ids: Iterable[list[int]], tokenizer: BertTokenizer) -> float:
    """The share of [UNK] among the tokens (special tokens aside); over 5%, warn once, in one line on stderr.

    The model cannot learn from text it sees as [UNK]; an English vocabulary turns most Chinese characters into it.
    """
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    unknown = total = 0
    for ids in input_ids:
        for token in ids:
            if token not in special:
                total += 1
                unknown += token == tokenizer.unk_token_id
    share = unknown / total if total else 0.0
    if share > UNKNOWN_WARN_SHARE:
        logging.getLogger("bertkit").warning(
            f"warning: {share:.0%} of the training tokens are [UNK]: the model's vocabulary does not fit this text. "
            "For Chinese, use a Chinese vocabulary: a Chinese BERT as --model (model= in Python), e.g. "
            "bert-base-chinese, or one pre-trained on your text with `bertkit pretrain`"
        )
    return share
