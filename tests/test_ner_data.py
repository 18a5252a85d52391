"""NER data: label alignment against transformers, long-sentence windows, entity decoding, words, file reading."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizerFast

from bertkit.data.ner import (
    NerExample,
    decode_entities,
    encode_ner,
    join_words,
    label_list,
    read_ner,
    split_words,
    word_logits,
)
from bertkit.errors import BertkitError
from bertkit.metrics import get_entities
from bertkit.tokenizer import SPECIAL_TOKENS, BertTokenizer

# People's Daily (1998) style, character level: "Xinhua News Agency, Beijing: People's Daily reporter ...".
PEOPLES_DAILY = [
    ("新", "B-ORG"), ("华", "I-ORG"), ("社", "I-ORG"), ("北", "B-LOC"), ("京", "I-LOC"), ("电", "O"),
    ("人", "B-ORG"), ("民", "I-ORG"), ("日", "I-ORG"), ("报", "I-ORG"), ("记", "O"), ("者", "O"),
    ("江", "B-PER"), ("泽", "I-PER"), ("民", "I-PER"), ("在", "O"), ("上", "B-LOC"), ("海", "I-LOC"), ("。", "O"),
]  # fmt: skip
ENGLISH = [
    ("Johanson", "B-PER"), ("Schwarzenegger", "I-PER"), ("visited", "O"), ("the", "O"), ("U.S.", "B-LOC"),
    ("and", "O"), ("Reykjavik", "B-LOC"), ("with", "O"), ("Hewlett-Packard", "B-ORG"), ("unbelievable", "O"),
    (".", "O"),
]  # fmt: skip
LABELS = ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]
LABEL2ID = {label: i for i, label in enumerate(LABELS)}


@pytest.fixture(scope="module")
def english_tokenizer(minilm_dir: Path) -> BertTokenizer:
    return BertTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def chinese_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A character-level Chinese vocab; 泽 is left out on purpose so one word becomes [UNK]."""
    chars = sorted({char for char, _ in PEOPLES_DAILY} - {"泽"})
    path = tmp_path_factory.mktemp("chinese_vocab")
    BertTokenizer.from_vocab(SPECIAL_TOKENS + chars).save_pretrained(path)
    return path


def transformers_features(hf: BertTokenizerFast, words: list[str], tags: list[str]) -> tuple[list[int], list[int]]:
    """transformers' token-classification recipe: label the first token of each word, -100 elsewhere."""
    encoding = hf(words, is_split_into_words=True)
    labels, previous = [], None
    for word in encoding.word_ids():
        labels.append(-100 if word is None or word == previous else LABEL2ID[tags[word]])
        previous = word
    return encoding["input_ids"], labels


@pytest.mark.parametrize(
    "vocab, sentence",
    [("minilm", ENGLISH), ("minilm", PEOPLES_DAILY), ("chinese", PEOPLES_DAILY)],
    ids=["english", "chinese-in-english-vocab", "chinese-char-vocab"],
)
def test_labels_align_like_transformers(vocab: str, sentence: list[tuple[str, str]], request: pytest.FixtureRequest):
    path = request.getfixturevalue("minilm_dir" if vocab == "minilm" else "chinese_vocab_dir")
    words, tags = [w for w, _ in sentence], [t for _, t in sentence]
    hf = BertTokenizerFast.from_pretrained(str(path))
    expected_ids, expected_labels = transformers_features(hf, words, tags)

    tokenizer = BertTokenizer.from_pretrained(path)
    [window] = encode_ner(words, tokenizer, max_length=128, stride=16, label2id=LABEL2ID, tags=tags)

    assert window.input_ids == expected_ids
    assert window.labels == expected_labels
    # English words split into several pieces; each Chinese character is one piece (or [UNK]).
    assert (len(expected_ids) > len(words) + 2) == (sentence is ENGLISH)
    assert window.token_type_ids == [0] * len(expected_ids)
    assert window.owned == [word is not None for word in window.word_ids]
    assert window.word_ids == hf(words, is_split_into_words=True).word_ids()


def test_word_without_pieces_gets_unk_and_a_label(english_tokenizer: BertTokenizer):
    words, tags = ["John", "\u200b", "Smith"], ["B-PER", "O", "B-PER"]
    [window] = encode_ner(words, english_tokenizer, max_length=16, stride=2, label2id=LABEL2ID, tags=tags)
    assert window.input_ids[2] == english_tokenizer.unk_token_id
    assert window.word_ids == [None, 0, 1, 2, None]
    assert window.labels == [-100, LABEL2ID["B-PER"], LABEL2ID["O"], LABEL2ID["B-PER"], -100]


def test_word_longer_than_a_window_keeps_its_first_pieces(english_tokenizer: BertTokenizer):
    long_word = "-".join(str(i) for i in range(1, 21))  # 39 pieces
    words, tags = ["in", long_word, "Paris"], ["O", "B-LOC", "B-LOC"]
    windows = encode_ner(words, english_tokenizer, max_length=16, stride=4, label2id=LABEL2ID, tags=tags)
    assert all(len(w.input_ids) <= 16 for w in windows)
    [holder] = [w for w in windows if 1 in w.word_ids]
    first = holder.word_ids.index(1)
    assert holder.word_ids.count(1) == 14 and holder.labels[first] == LABEL2ID["B-LOC"] and holder.owned[first]
    assert holder.input_ids[first : first + 3] == english_tokenizer.encode(long_word).input_ids[1:4]


def gold_tags(count: int, seed: int = 0) -> list[str]:
    """A plausible BIO sequence: mostly O, entities of 1-3 words."""
    rng, tags = random.Random(seed), []
    while len(tags) < count:
        if rng.random() < 0.7:
            tags.append("O")
        else:
            kind = rng.choice(["PER", "LOC", "ORG"])
            tags += [f"B-{kind}"] + [f"I-{kind}"] * rng.randrange(3)
    return tags[:count]


def context(window, word: int) -> int:
    """Pieces of context on the shorter side of `word` in `window`."""
    positions = [p for p, w in enumerate(window.word_ids) if w == word]
    return min(positions[0] - 1, len(window.input_ids) - 2 - positions[-1])


def test_long_sentence_windows_own_every_word_once_and_round_trip(
    english_tokenizer: BertTokenizer, english_texts: list[str]
):
    words = " ".join(english_texts).split()[:300]
    tags = gold_tags(len(words))
    max_length, stride = 32, 8
    windows = encode_ner(words, english_tokenizer, max_length, stride, label2id=LABEL2ID, tags=tags)
    [whole] = encode_ner(words, english_tokenizer, max_length=4096, stride=8)
    pieces_per_word = [whole.word_ids.count(w) for w in range(len(words))]

    assert len(windows) > 10
    owners: dict[int, list[int]] = {w: [] for w in range(len(words))}
    for k, window in enumerate(windows):
        assert len(window.input_ids) <= max_length
        assert window.input_ids[0] == english_tokenizer.cls_token_id
        assert window.input_ids[-1] == english_tokenizer.sep_token_id
        present = sorted({w for w in window.word_ids if w is not None})
        assert present == list(range(present[0], present[-1] + 1))
        previous = None
        for position, (word, owned, label) in enumerate(zip(window.word_ids, window.owned, window.labels)):
            if word is None:
                assert not owned and label == -100
                continue
            first_piece = word != previous
            assert label == (LABEL2ID[tags[word]] if owned and first_piece else -100)
            if first_piece:
                assert window.word_ids.count(word) == pieces_per_word[word]  # a word's pieces are never split
                if owned:
                    owners[word].append(k)
            previous = word
    assert all(len(ks) == 1 for ks in owners.values())
    for window, following in zip(windows, windows[1:]):
        shared = [w for w in following.word_ids if w is not None and w in window.word_ids]
        assert len(shared) >= stride and following.word_ids[-2] > window.word_ids[-2]
    for word, [k] in owners.items():  # the owner gives the word at least as much context as any other window
        assert all(context(windows[k], word) >= context(w, word) for w in windows if word in w.word_ids)

    # Logits that are one-hot on the gold label at owned first pieces and on a wrong label everywhere else, padded.
    logits = []
    for window in windows:
        rows = torch.zeros(max_length, len(LABELS))
        for position, (word, label) in enumerate(zip(window.word_ids, window.labels)):
            if word is not None:
                gold = LABEL2ID[tags[word]]
                rows[position, gold if label != -100 else (gold + 1) % len(LABELS)] = 20.0
        logits.append(rows)
    probabilities, best = word_logits(windows, logits, len(words)).softmax(-1).max(-1)
    label_ids, scores = best.tolist(), probabilities.tolist()
    predicted = [LABELS[i] for i in label_ids]
    assert predicted == tags
    assert all(score > 0.999 for score in scores)

    text, spans = join_words(words)
    entities = decode_entities(text, spans, predicted, scores)
    expected = [(kind, spans[a][0], spans[b][1], " ".join(words[a : b + 1])) for kind, a, b in get_entities(tags)]
    assert [(e["type"], e["start"], e["end"], e["text"]) for e in entities] == expected
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)


@pytest.mark.parametrize(
    "text, tags, expected",
    [
        ("John Smith lives in New York.", ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"],
         [("PER", "John Smith"), ("LOC", "New York")]),
        ("John Smith lives in Paris.", ["B-PER", "E-PER", "O", "O", "S-LOC", "O"],
         [("PER", "John Smith"), ("LOC", "Paris")]),
        ("我在北京大学工作", ["O", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O"], [("ORG", "北京大学")]),
        ("我在北京大学工作", ["S-PER", "O", "B-ORG", "I-ORG", "I-ORG", "E-ORG", "O", "O"],
         [("PER", "我"), ("ORG", "北京大学")]),
        ("他在Google上海工作。", ["S-PER", "O", "S-ORG", "B-LOC", "E-LOC", "O", "O", "O"],
         [("PER", "他"), ("ORG", "Google"), ("LOC", "上海")]),
    ],
    ids=["english-bio", "english-bioes", "chinese-bio", "chinese-bioes", "mixed-bioes"],
)
def test_decode_entities_gives_character_offsets(text: str, tags: list[str], expected: list[tuple[str, str]]):
    words, spans = split_words(text)
    scores = [0.5 + 0.05 * i for i in range(len(words))]
    entities = decode_entities(text, spans, tags, scores)
    assert [(e["type"], e["text"]) for e in entities] == expected
    for entity, (_, first, last) in zip(entities, get_entities(tags)):
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert entity["score"] == pytest.approx(sum(scores[first : last + 1]) / (last - first + 1))
    if text.startswith("John"):
        assert (entities[0]["start"], entities[0]["end"]) == (0, 10)


@pytest.mark.parametrize(
    "text, words",
    [
        ("  John Smith\tlives in New York.\n", ["John", "Smith", "lives", "in", "New", "York", "."]),
        ("The U.S. bought Hewlett-Packard's 1,000 (e-mail) shares!", ["The", "U.S.", "bought", "Hewlett-Packard", "'",
                                                                     "s", "1,000", "(", "e-mail", ")", "shares", "!"]),
        ("在北京", ["在", "北", "京"]),
        ("我在Google工作，很好。", ["我", "在", "Google", "工", "作", "，", "很", "好", "。"]),
        ("", []),
    ],
    ids=["english", "english-punctuation", "chinese", "mixed", "empty"],
)
def test_split_words_spans_index_the_text(text: str, words: list[str]):
    got, spans = split_words(text)
    assert got == words
    assert [text[a:b] for a, b in spans] == words


@pytest.mark.parametrize(
    "words, text",
    [
        (["John", "Smith", "lives", "in", "New", "York", "."], "John Smith lives in New York ."),
        ([char for char, _ in PEOPLES_DAILY], "新华社北京电人民日报记者江泽民在上海。"),
        (["我", "在", "Google", "工", "作"], "我在 Google 工作"),
        (["北京", "大学", "，", "很", "好"], "北京大学，很好"),
    ],
    ids=["english", "chinese-chars", "mixed", "chinese-words"],
)
def test_join_words(words: list[str], text: str):
    joined, spans = join_words(words)
    assert joined == text
    assert [joined[a:b] for a, b in spans] == words
    if words[0] != "北京":  # word-level Chinese is not recoverable from text; the others are
        assert split_words(joined)[0] == words


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_read_conll(tmp_path: Path):
    path = write(
        tmp_path / "train.conll",
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter\tB-PER\nBlackburn\tI-PER\n"
        "\n-DOCSTART-\tO\n北\tB-LOC\n京\tE-LOC\n",
    )
    examples = read_ner(path)
    assert examples == [
        NerExample(["EU", "rejects"], ["B-ORG", "O"], 3),
        NerExample(["Peter", "Blackburn"], ["B-PER", "I-PER"], 7),
        NerExample(["北", "京"], ["B-LOC", "E-LOC"], 11),
    ]
    assert label_list(examples) == ["O", "B-LOC", "B-ORG", "B-PER", "E-LOC", "I-PER"]
    untagged = write(tmp_path / "predict.txt", "Peter\nBlackburn\n\nEU\n")
    assert read_ner(untagged, require_tags=False) == [
        NerExample(["Peter", "Blackburn"], None, 1),
        NerExample(["EU"], None, 4),
    ]
    assert read_ner(path, require_tags=False) == examples


def test_read_jsonl(tmp_path: Path):
    path = write(
        tmp_path / "train.jsonl",
        '{"tokens": ["我", "在", "北", "京"], "tags": ["O", "O", "B-LOC", "I-LOC"]}\n\n'
        '{"tokens": ["Paris"], "tags": ["S-LOC"], "id": 7}\n',
    )
    examples = read_ner(path)
    assert examples == [
        NerExample(["我", "在", "北", "京"], ["O", "O", "B-LOC", "I-LOC"], 1),
        NerExample(["Paris"], ["S-LOC"], 3),
    ]
    assert label_list(examples + [NerExample(["x"], None, 9)]) == ["O", "B-LOC", "I-LOC", "S-LOC"]
    untagged = write(tmp_path / "predict.jsonl", '{"tokens": ["Paris"]}\n')
    assert read_ner(untagged, require_tags=False) == [NerExample(["Paris"], None, 1)]


@pytest.mark.parametrize(
    "name, content, line, problem",
    [
        ("lengths.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b", "c"], "tags": ["O", "O"]}\n', 2,
         "3 tokens but 2 tags"),
        ("notags.jsonl", '{"tokens": ["a"]}\n', 1, '"tags"'),
        ("notokens.jsonl", '{"words": ["a"], "tags": ["O"]}\n', 1, '"tokens"'),
        ("badtag.jsonl", '{"tokens": ["a", "b"], "tags": ["O", "PER"]}\n', 1, "'PER'"),
        ("broken.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n\n{"tokens": [\n', 3, "JSON"),
        ("missing.conll", "John\tB-PER\nSmith\n", 2, "no tag"),
        ("scheme.conll", "John\tO\n\nParis\tX-PER\n", 3, "'X-PER'"),
        ("binary.conll", b"John\tB-PER\n\xff\xfe\tO\n", 2, "UTF-8"),
        ("empty.conll", b"", None, "empty"),
        ("docstart.conll", "-DOCSTART- O\n\n", None, "no sentences"),
    ],
)
def test_read_ner_errors_name_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, line: int | None, problem: str
):
    path = write(tmp_path / name, content)
    with pytest.raises(BertkitError) as caught:
        read_ner(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert problem in message


def test_encode_ner_rejects_bad_settings(english_tokenizer: BertTokenizer):
    with pytest.raises(BertkitError, match="stride"):
        encode_ner(["a"], english_tokenizer, max_length=10, stride=8)
    with pytest.raises(BertkitError, match="max_length"):
        encode_ner(["a"], english_tokenizer, max_length=2, stride=0)
    with pytest.raises(BertkitError, match="'B-MISC'"):
        encode_ner(["a"], english_tokenizer, max_length=10, stride=2, label2id=LABEL2ID, tags=["B-MISC"])
