"""bertkit.tokenizer against transformers' BertTokenizerFast (the oracle) on a real vocabulary and real text."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizerFast

from bertkit.data.cjk import is_cjk
from bertkit.errors import BertkitError
from bertkit.tokenizer import SPECIAL_TOKENS, BertTokenizer, Encoding, train_tokenizer

EDGE_CASES = [
    "Café naïve résumé Ångström",
    "e\u0301le\u0300ve CAFÉ",  # combining accents
    "Wait... what?!?! (((yes))) --- *** ,,, ''' \"quoted\" [x] {y}",
    "I ❤️ 🤗 BERT 😀",
    "BERT模型在2018年发布, très bien!",
    "ｆｕｌｌｗｉｄｔｈ １９９８年 ，。！",
    "a" * 101 + " " + "b" * 100 + " short",  # over max_input_chars_per_word=100 -> [UNK]; exactly 100 is split
    "",
    " \t\n \u3000 ",
    "zero\u200bwidth\u200djoiner \x00\x07 control \ufeff bom \x1f unit",
    "[CLS] literal [MASK] tokens [cls] [SEP]",
    "don't can't it's U.S.A. e-mail 3.14 $5,000",
]

def assert_matches_oracle(
    ours: BertTokenizer,
    oracle: BertTokenizerFast,
    texts: list[str],
    pairs: list[str] | None = None,
    **truncation: object,
) -> list[Encoding]:
    """Ids, type ids and offsets of a batch must equal transformers'; returns our encodings."""
    oracle_kwargs: dict[str, object] = {"truncation": False}
    if truncation.get("truncation", "longest_first") != "do_not_truncate":
        oracle_kwargs = {"truncation": truncation.get("truncation", "longest_first")}
        oracle_kwargs["max_length"] = truncation.get("max_length")
    theirs = oracle(texts, pairs, return_offsets_mapping=True, **oracle_kwargs)
    encodings = ours.encode_batch(texts, pairs, **truncation)
    assert len(encodings) == len(texts)
    for i, encoding in enumerate(encodings):
        context = (texts[i][:80], None if pairs is None else pairs[i][:80])
        assert encoding.input_ids == theirs["input_ids"][i], context
        assert encoding.token_type_ids == theirs["token_type_ids"][i], context
        assert encoding.offsets == [tuple(offset) for offset in theirs["offset_mapping"][i]], context
        assert len(encoding.tokens) == len(encoding.sequence_ids) == len(encoding.word_ids) == len(encoding.input_ids)
    return encodings


@pytest.fixture(scope="module")
def vocab_only_dir(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MiniLM vocab.txt alone, so both sides must build the tokenizer from BERT's rules."""
    path = tmp_path_factory.mktemp("vocab_only")
    shutil.copy(minilm_dir / "vocab.txt", path / "vocab.txt")
    return path


@pytest.fixture(scope="module")
def hf_minilm(minilm_dir: Path) -> BertTokenizerFast:
    return BertTokenizerFast.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> BertTokenizer:
    return BertTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module", params=["tokenizer.json", "vocab.txt dir", "vocab.txt file"])
def loaded_pair(request: pytest.FixtureRequest, minilm_dir: Path, vocab_only_dir: Path):
    """(ours, oracle) for each way of loading the same real vocabulary."""
    if request.param == "tokenizer.json":
        return BertTokenizer.from_pretrained(minilm_dir), BertTokenizerFast.from_pretrained(str(minilm_dir))
    if request.param == "vocab.txt dir":
        return BertTokenizer.from_pretrained(vocab_only_dir), BertTokenizerFast.from_pretrained(str(vocab_only_dir))
    vocab_file = vocab_only_dir / "vocab.txt"
    # transformers 5 ignores BertTokenizerFast(vocab_file=...) (5-token vocab); vocab=<path> is what loads the file.
    return BertTokenizer.from_pretrained(vocab_file), BertTokenizerFast(vocab=str(vocab_file))


# 1. single sequences on the real vocabulary


def test_real_english_matches_oracle(loaded_pair, english_texts: list[str]) -> None:
    ours, oracle = loaded_pair
    assert ours.get_vocab() == oracle.get_vocab()
    assert_matches_oracle(ours, oracle, english_texts, truncation="do_not_truncate")


def test_real_chinese_matches_oracle(loaded_pair, chinese_texts: list[str]) -> None:
    ours, oracle = loaded_pair
    encodings = assert_matches_oracle(ours, oracle, chinese_texts, truncation="do_not_truncate")
    ids = {i for encoding in encodings for i in encoding.input_ids}
    assert ours.unk_token_id in ids  # the English vocab lacks many CJK characters
    assert len(ids) > 200  # ...but knows many, one token each


def test_edge_cases_match_oracle(loaded_pair) -> None:
    ours, oracle = loaded_pair
    encodings = assert_matches_oracle(ours, oracle, EDGE_CASES, truncation="do_not_truncate")
    by_text = dict(zip(EDGE_CASES, encodings))
    assert by_text[""].tokens == by_text[" \t\n \u3000 "].tokens == ["[CLS]", "[SEP]"]
    long_word = by_text[EDGE_CASES[6]]
    assert long_word.tokens[1] == "[UNK]" and long_word.tokens[2] != "[UNK]"
    assert by_text["Café naïve résumé Ångström"].tokens[1:-1] == ["cafe", "naive", "resume", "ang", "##strom"]
    literal = by_text["[CLS] literal [MASK] tokens [cls] [SEP]"].input_ids
    assert literal.count(ours.cls_token_id) == 2 and ours.mask_token_id in literal


def test_special_ids_and_decode_match_oracle(minilm: BertTokenizer, hf_minilm, english_texts: list[str]) -> None:
    assert minilm.vocab_size == len(hf_minilm) == 30522
    assert (minilm.pad_token_id, minilm.unk_token_id, minilm.cls_token_id, minilm.sep_token_id) == (0, 100, 101, 102)
    assert minilm.mask_token_id == hf_minilm.mask_token_id == 103
    assert minilm.do_lower_case is True and minilm.model_max_length == 512
    for text in english_texts[:50] + EDGE_CASES:
        ids = hf_minilm(text)["input_ids"]
        assert minilm.convert_ids_to_tokens(ids) == hf_minilm.convert_ids_to_tokens(ids)
        assert minilm.decode(ids) == hf_minilm.decode(ids, skip_special_tokens=True)
        assert minilm.decode(ids, skip_special_tokens=False) == hf_minilm.decode(ids)


# 2. pairs and truncation


@pytest.mark.parametrize("truncation", ["longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("max_length", [12, 64, 200])
def test_pairs_and_truncation_match_oracle(
    minilm: BertTokenizer,
    hf_minilm: BertTokenizerFast,
    english_texts: list[str],
    chinese_texts: list[str],
    truncation: str,
    max_length: int,
) -> None:
    reviews, news = english_texts[100:140], english_texts[:40]
    firsts = reviews[:20] + news[:20] + chinese_texts[:20]
    seconds = news[20:40] + reviews[20:40] + english_texts[140:160]
    truncated = failed = 0
    for first, second in zip(firsts, seconds):
        try:
            theirs = hf_minilm(first, second, truncation=truncation, max_length=max_length, return_offsets_mapping=True)
        except Exception as error:  # the oracle cannot truncate the chosen side enough
            assert "Truncation error" in str(error)
            with pytest.raises(BertkitError, match="cannot truncate"):
                minilm.encode(first, second, max_length=max_length, truncation=truncation)
            failed += 1
            continue
        ours = minilm.encode(first, second, max_length=max_length, truncation=truncation)
        assert ours.input_ids == theirs["input_ids"], (first[:50], second[:50])
        assert ours.token_type_ids == theirs["token_type_ids"]
        assert ours.offsets == [tuple(offset) for offset in theirs["offset_mapping"]]
        assert ours.sequence_ids.count(None) == 3 and set(ours.sequence_ids) == {None, 0, 1}
        truncated += len(ours.input_ids) == max_length
    assert truncated > 0
    if truncation != "longest_first" and max_length == 12:
        assert failed > 0  # error parity was exercised too


@pytest.mark.parametrize("truncation", ["longest_first", "only_first"])
def test_single_truncation_matches_oracle(minilm: BertTokenizer, hf_minilm, english_texts: list[str], truncation: str):
    encodings = assert_matches_oracle(minilm, hf_minilm, english_texts, max_length=32, truncation=truncation)
    assert max(len(e.input_ids) for e in encodings) == 32
    assert all(e.input_ids[-1] == minilm.sep_token_id for e in encodings)


def test_default_truncation_is_model_max_length(minilm: BertTokenizer, hf_minilm, english_texts: list[str]) -> None:
    long_text = " ".join(english_texts[:10])
    assert minilm.encode(long_text).input_ids == hf_minilm(long_text, truncation=True)["input_ids"]
    assert len(minilm.encode(long_text).input_ids) == 512
    assert len(minilm.encode(long_text, truncation="do_not_truncate", max_length=8).input_ids) > 512
    pair = minilm.encode(long_text, long_text)
    assert pair.input_ids == hf_minilm(long_text, long_text, truncation=True)["input_ids"]


def test_batch_pairs_match_oracle(minilm: BertTokenizer, hf_minilm, english_texts, chinese_texts) -> None:
    assert_matches_oracle(minilm, hf_minilm, chinese_texts[:100], english_texts[:100], max_length=128)


# 3. offsets point into the original text


def test_offsets_map_back_to_original_text(minilm: BertTokenizer, english_texts: list[str]) -> None:
    checked = 0
    for text, pair in zip(english_texts[:150], english_texts[150:]):
        encoding = minilm.encode(text, pair, truncation="do_not_truncate")
        segments = {0: text, 1: pair}
        for token, (start, end), sequence in zip(encoding.tokens, encoding.offsets, encoding.sequence_ids):
            if sequence is None:
                assert (start, end) == (0, 0)
                continue
            piece = segments[sequence][start:end]
            if token != "[UNK]" and piece.isascii() and piece.isalnum():
                assert piece.lower() == token.removeprefix("##")
                checked += 1
    assert checked > 5000


def test_word_ids_group_subwords(minilm: BertTokenizer) -> None:
    encoding = minilm.encode("Tokenization unbelievably works", "second segment")
    assert encoding.word_ids[0] is None and encoding.word_ids[-1] is None
    words = [w for w, s in zip(encoding.word_ids, encoding.sequence_ids) if s == 0]
    assert words == sorted(words) and words[0] == 0 and words[-1] == 2 and len(words) > 3  # subwords share a word id
    assert [w for w, s in zip(encoding.word_ids, encoding.sequence_ids) if s == 1] == [0, 1]


# 4. cased vocabulary and tokenizer_config.json settings

CASED_VOCAB = SPECIAL_TOKENS + (
    "Hello hello World world The the BERT Bert bert Café café CAFÉ cafe caf ##é ##ing ##ed run Run "
    "model Model 模 型 年 ! , . ' - ( ) ?".split()
    + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    + [str(d) for d in range(10)]
    + [f"##{d}" for d in range(10)]
)
CASED_TEXTS = [
    "Hello World!", "hello world", "HELLO WORLD", "The BERT model, the Bert model.", "Café café CAFÉ cafe",
    "Running runs RUN", "BERT模型在2018年发布, très bien!", "naïve Ångström", "",
]  # fmt: skip


def write_vocab_dir(path: Path, config: dict | None) -> Path:
    path.mkdir()
    (path / "vocab.txt").write_text("".join(f"{token}\n" for token in CASED_VOCAB), encoding="utf-8")
    if config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def test_cased_vocab_matches_oracle(tmp_path: Path, english_texts: list[str]) -> None:
    texts = CASED_TEXTS + EDGE_CASES + english_texts[100:150]
    ours = BertTokenizer.from_vocab(CASED_VOCAB, do_lower_case=False)
    vocab_dir = write_vocab_dir(tmp_path / "cased", {"do_lower_case": False})
    oracle = BertTokenizerFast(vocab=str(vocab_dir / "vocab.txt"), do_lower_case=False)
    assert oracle.backend_tokenizer.normalizer.lowercase is False  # the oracle really is cased
    assert_matches_oracle(ours, oracle, texts, truncation="do_not_truncate")
    reloaded = BertTokenizer.from_pretrained(vocab_dir)
    assert reloaded.do_lower_case is False
    assert_matches_oracle(reloaded, BertTokenizerFast.from_pretrained(str(vocab_dir)), texts, max_length=16)
    hello, lower = ours.encode("Hello").input_ids[1], ours.encode("hello").input_ids[1]
    assert hello != lower and ours.unk_token_id not in (hello, lower)


@pytest.mark.parametrize(
    "config",
    [
        None,
        {"do_lower_case": True},
        {"do_lower_case": False, "strip_accents": True},
        {"do_lower_case": True, "strip_accents": False},
        {"do_lower_case": True, "tokenize_chinese_chars": False},
        {"do_lower_case": False, "model_max_length": 8},
    ],
)
def test_tokenizer_config_matches_oracle(tmp_path: Path, config: dict | None) -> None:
    vocab_dir = write_vocab_dir(tmp_path / "vocab", config)
    ours = BertTokenizer.from_pretrained(vocab_dir)
    oracle = BertTokenizerFast.from_pretrained(str(vocab_dir))
    assert ours.do_lower_case is (config or {}).get("do_lower_case", True)
    assert_matches_oracle(ours, oracle, CASED_TEXTS + EDGE_CASES, truncation="do_not_truncate")
    if config and "model_max_length" in config:
        assert ours.model_max_length == 8
        assert_matches_oracle(ours, oracle, CASED_TEXTS, truncation="longest_first")


# 5. training, saving, reloading


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_train_save_reload(
    tmp_path: Path, chinese_texts: list[str], english_texts: list[str], do_lower_case: bool
) -> None:
    lines = chinese_texts[:150] + english_texts[:50] + english_texts[100:200]
    corpus = tmp_path / "corpus.txt"
    # One document per 10 lines, separated by blank lines as in our corpus format.
    corpus.write_text("".join(f"{line}\n" + ("\n" if i % 10 == 9 else "") for i, line in enumerate(lines)), "utf-8")
    tokenizer = train_tokenizer([corpus], vocab_size=2000, do_lower_case=do_lower_case, show_progress=False)

    vocab = tokenizer.get_vocab()
    assert [vocab[token] for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.vocab_size == len(vocab) == 2000
    assert {char for line in lines for char in line if is_cjk(char)} <= vocab.keys()
    assert any(t.isascii() and t.isupper() for t in vocab.keys() - set(SPECIAL_TOKENS)) is not do_lower_case
    assert tokenizer.do_lower_case is do_lower_case

    out = tmp_path / "saved"
    tokenizer.save_pretrained(out)
    assert {p.name for p in out.iterdir()} == {
        "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"
    }  # fmt: skip
    assert (out / "vocab.txt").read_text("utf-8").splitlines()[:5] == SPECIAL_TOKENS
    oracle = BertTokenizerFast.from_pretrained(str(out))
    assert oracle.backend_tokenizer.normalizer.lowercase is do_lower_case
    texts = lines + EDGE_CASES + chinese_texts[150:200]
    encodings = assert_matches_oracle(tokenizer, oracle, texts, truncation="do_not_truncate")
    assert sum(e.input_ids.count(tokenizer.unk_token_id) for e in encodings[: len(lines)]) == 0
    assert_matches_oracle(tokenizer, oracle, texts[:50], texts[50:100], max_length=40)

    expected = [e.input_ids for e in encodings]
    for reloaded in (BertTokenizer.from_pretrained(out), BertTokenizer.from_pretrained(out / "vocab.txt")):
        if reloaded.do_lower_case is do_lower_case:  # a bare vocab.txt is uncased by default
            assert [e.input_ids for e in reloaded.encode_batch(texts, truncation="do_not_truncate")] == expected
    (out / "tokenizer.json").unlink()
    from_vocab_txt = BertTokenizer.from_pretrained(out)
    assert from_vocab_txt.get_vocab() == vocab
    assert [e.input_ids for e in from_vocab_txt.encode_batch(texts, truncation="do_not_truncate")] == expected


def test_save_pretrained_round_trips_minilm(minilm: BertTokenizer, minilm_dir: Path, tmp_path: Path, english_texts):
    minilm.save_pretrained(tmp_path)
    assert (tmp_path / "vocab.txt").read_bytes() == (minilm_dir / "vocab.txt").read_bytes()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text("utf-8"))
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    assert config["model_max_length"] == 512 and config["mask_token"] == "[MASK]"
    saved = json.loads((tmp_path / "tokenizer.json").read_text("utf-8"))
    assert saved["truncation"] is None and saved["padding"] is None
    texts = english_texts[:100] + EDGE_CASES
    assert_matches_oracle(minilm, BertTokenizerFast.from_pretrained(str(tmp_path)), texts, max_length=128)


# 6. bad input


@contextmanager
def raises_one_line(match: str) -> Iterator[pytest.ExceptionInfo[BertkitError]]:
    """pytest.raises(BertkitError) that also demands a one-line message (the CLI prints it as is)."""
    with pytest.raises(BertkitError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


def test_load_errors(tmp_path: Path) -> None:
    with raises_one_line("not found"):
        BertTokenizer.from_pretrained(tmp_path / "missing")
    with raises_one_line("no tokenizer.json or vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", encoding="utf-8")
    with raises_one_line(r"lacks the special token\(s\) \[MASK\]"):
        BertTokenizer.from_pretrained(tmp_path)
    with raises_one_line(r"\[CLS\], \[SEP\]"):
        BertTokenizer.from_vocab(["[PAD]", "[UNK]", "[MASK]", "hello"])
    with raises_one_line("duplicate tokens"):
        BertTokenizer.from_vocab(SPECIAL_TOKENS + ["a", "a"])
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with raises_one_line("tokenizer_config.json"):
        BertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"unk_token": "<unk>"}', encoding="utf-8")
    with raises_one_line("unk_token"):
        BertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "tokenizer.json").write_text("{}", encoding="utf-8")
    with raises_one_line("cannot read .*tokenizer.json"):
        BertTokenizer.from_pretrained(tmp_path)


def test_training_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("some text\n", encoding="utf-8")
    with raises_one_line("missing.txt: no such file"):
        train_tokenizer([good, tmp_path / "missing.txt"], vocab_size=100, show_progress=False)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("fine line\n\ncaf\u00e9 au lait\n".encode("latin-1"))
    with raises_one_line(r"latin1.txt:3: not valid UTF-8"):
        train_tokenizer([good, latin1], vocab_size=100, show_progress=False)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with raises_one_line("corpus is empty"):
        train_tokenizer([blank, empty], vocab_size=100, show_progress=False)
    with raises_one_line("no corpus files"):
        train_tokenizer([], vocab_size=100, show_progress=False)
    with raises_one_line("vocab_size=3"):
        train_tokenizer([good], vocab_size=3, show_progress=False)


def test_encode_errors(minilm: BertTokenizer) -> None:
    with raises_one_line("truncation must be one of"):
        minilm.encode("hello", truncation="longest")
    with raises_one_line("needs text pairs"):
        minilm.encode("hello", truncation="only_second", max_length=8)
    with raises_one_line("max_length=3 leaves no room"):
        minilm.encode("hello", "world", max_length=3)  # transformers silently skips truncation here
    with raises_one_line("cannot truncate"):
        minilm.encode("hello", "a much longer second text", max_length=6, truncation="only_first")
    with raises_one_line("2 texts but 1 text_pairs"):
        minilm.encode_batch(["a", "b"], ["c"])
    with raises_one_line("not a single string"):
        minilm("a single string")  # type: ignore[arg-type]
    with raises_one_line("outside the vocabulary"):
        minilm.convert_ids_to_tokens([101, 30522])


# 7. padding


def test_pad(minilm: BertTokenizer) -> None:
    encodings = minilm.encode_batch(["short", "a somewhat longer sentence here", ""], ["pair", "x", "y"])
    lengths = [len(e.input_ids) for e in encodings]
    batch = minilm.pad(encodings)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    for tensor in batch.values():
        assert tensor.dtype == torch.int64 and tensor.shape == (3, max(lengths))
    for row, (encoding, length) in enumerate(zip(encodings, lengths)):
        assert batch["input_ids"][row, :length].tolist() == encoding.input_ids
        assert batch["token_type_ids"][row, :length].tolist() == encoding.token_type_ids
        assert batch["input_ids"][row, length:].eq(minilm.pad_token_id).all()
        assert batch["token_type_ids"][row, length:].eq(0).all()
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (max(lengths) - length)
    wide = minilm.pad(encodings, pad_to=20)
    assert all(tensor.shape == (3, 20) for tensor in wide.values())
    assert wide["attention_mask"].sum(dim=1).tolist() == lengths
    with raises_one_line("pad_to=2 is shorter"):
        minilm.pad(encodings, pad_to=2)
    assert minilm.pad([])["input_ids"].shape == (0, 0)


def test_call_matches_oracle_tensors(minilm: BertTokenizer, hf_minilm, english_texts, chinese_texts) -> None:
    texts, pairs = english_texts[90:130], chinese_texts[:40]
    ours = minilm(texts, pairs, max_length=96)
    theirs = hf_minilm(texts, pairs, padding=True, truncation=True, max_length=96, return_tensors="pt")
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert ours[name].dtype == torch.int64
        assert torch.equal(ours[name], theirs[name]), name
