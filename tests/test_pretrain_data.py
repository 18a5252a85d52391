"""Pre-training data: corpus reading, shards on disk, NSP pairs and packing, dynamic (whole-word) masking."""

from __future__ import annotations

import json
import math
import random
import re
import unicodedata
from pathlib import Path

import jieba
import numpy as np
import pytest
import torch

from bertkit.data import pretrain
from bertkit.data.cjk import is_cjk
from bertkit.data.pretrain import Shards, create_instances, mask_tokens, pretraining_collate, read_documents
from bertkit.errors import BertkitError
from bertkit.tokenizer import SPECIAL_TOKENS, BertTokenizer

PAD, UNK, CLS, SEP, MASK = range(5)
ENGLISH_PIECES = "the a on mat sat . cat dog play jump walk un ##s ##ing ##ed ##believ ##able".split()
ENGLISH_WORDS = "the a on mat sat . cats dogs playing jumped walks unbelievable".split()


def sigma_bound(n: int, p: float) -> float:
    """4 binomial standard deviations of a proportion estimated from n draws."""
    return 4 * math.sqrt(p * (1 - p) / n)


def write_corpus(path: Path, documents: list[list[str]]) -> Path:
    path.write_text("\n\n".join("\n".join(document) for document in documents) + "\n", encoding="utf-8")
    return path


def english_documents(seed: int, count: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [
        [" ".join(rng.choices(ENGLISH_WORDS, k=rng.randint(3, 9))) for _ in range(rng.randint(1, 6))]
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def english_tokenizer() -> BertTokenizer:
    return BertTokenizer.from_vocab(SPECIAL_TOKENS + ENGLISH_PIECES)


@pytest.fixture(scope="module")
def english_shards(tmp_path_factory: pytest.TempPathFactory, english_tokenizer: BertTokenizer) -> Shards:
    directory = tmp_path_factory.mktemp("english")
    corpus = write_corpus(directory / "corpus.txt", english_documents(seed=0, count=40))
    return Shards.build([corpus], english_tokenizer, directory / "shards", show_progress=False)


# ---------------------------------------------------------------- reading the corpus


def test_read_documents_splits_on_blank_lines_and_file_ends(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    first.write_bytes("\ufeffOne.\r\n  Two.  \r\n\r\n\r\n\nThree.\n".encode())
    second = tmp_path / "b.txt"
    second.write_text("Four.\nFive.", encoding="utf-8")
    assert list(read_documents([first, second])) == [["One.", "Two."], ["Three."], ["Four.", "Five."]]


def test_bad_corpus_files_fail_with_one_line_naming_file_and_line(
    tmp_path: Path, english_tokenizer: BertTokenizer
) -> None:
    good = write_corpus(tmp_path / "good.txt", [["the cat sat ."]])
    broken = tmp_path / "broken.txt"
    broken.write_bytes(b"the cat\nsat on\nthe \xff mat\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    missing = tmp_path / "missing.txt"
    cases = [
        ([good, broken], f"{broken}:3: not valid UTF-8"),
        ([empty], "corpus is empty"),
        ([good, missing], f"{missing}: no such file"),  # found before anything is read
    ]
    for paths, message in cases:
        for attempt in (lambda: list(read_documents(paths)),
                        lambda: Shards.build(paths, english_tokenizer, tmp_path / "shards", show_progress=False)):
            with pytest.raises(BertkitError, match="^" + re.escape(message)) as error:
                attempt()
            assert "\n" not in str(error.value)


# ---------------------------------------------------------------- shards on disk


def test_shards_round_trip_every_sentence(english_shards: Shards, english_tokenizer: BertTokenizer) -> None:
    documents = english_documents(seed=0, count=40)
    reopened = Shards.open(english_shards.directory)
    assert reopened.tokens.dtype == np.uint16 and not reopened.tokens.flags.writeable
    assert reopened.num_documents == len(documents)
    for d, document in enumerate(documents):
        sentences = reopened.document(d)
        assert len(sentences) == len(document)
        for sentence, text in zip(sentences, document):
            assert sentence.tolist() == english_tokenizer.encode(text).input_ids[1:-1]
    pieces = english_tokenizer.convert_ids_to_tokens(reopened.tokens.tolist())
    assert reopened.word_starts.tolist() == [int(not piece.startswith("##")) for piece in pieces]


def test_large_vocabularies_store_uint32_ids(tmp_path: Path) -> None:
    tokenizer = BertTokenizer.from_vocab(SPECIAL_TOKENS + [f"w{i}" for i in range(1 << 16)])
    corpus = write_corpus(tmp_path / "corpus.txt", [["w0 w65535 w70"], ["w65530"]])
    shards = Shards.build([corpus], tokenizer, tmp_path / "shards", show_progress=False)
    assert shards.tokens.dtype == np.uint32
    assert [s.tolist() for s in shards.document(0)] == [[5, 65540, 75]]


def test_open_or_build_reuses_until_the_corpus_changes(
    tmp_path: Path, english_tokenizer: BertTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", [["the cat sat ."], ["a dog jumped ."]])
    directory = tmp_path / "shards"
    first = Shards.open_or_build([corpus], english_tokenizer, directory, show_progress=False)
    token_file = directory / "tokens.bin"
    built_at = token_file.stat().st_mtime_ns

    def no_tokenizing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus was tokenized again")

    with monkeypatch.context() as patch:
        patch.setattr(english_tokenizer, "encode_batch", no_tokenizing)
        again = Shards.open_or_build([corpus], english_tokenizer, directory, show_progress=False)
    assert token_file.stat().st_mtime_ns == built_at
    assert again.tokens.tolist() == first.tokens.tolist()

    write_corpus(corpus, [["the cat sat on the mat ."], ["a dog jumped ."], ["walks"]])
    rebuilt = Shards.open_or_build([corpus], english_tokenizer, directory, show_progress=False)
    assert rebuilt.num_documents == 3
    assert rebuilt.document(0)[0].tolist() == english_tokenizer.encode("the cat sat on the mat .").input_ids[1:-1]


def test_an_interrupted_build_leaves_nothing_that_opens(
    tmp_path: Path, english_tokenizer: BertTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", english_documents(seed=1, count=10))
    directory = tmp_path / "shards"
    Shards.build([corpus], english_tokenizer, directory, show_progress=False)
    real_encode_batch = english_tokenizer.encode_batch
    calls = []

    def fail_on_second_batch(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_encode_batch(*args, **kwargs)

    monkeypatch.setattr(pretrain, "_LINES_PER_BATCH", 4)
    monkeypatch.setattr(english_tokenizer, "encode_batch", fail_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        Shards.build([corpus], english_tokenizer, directory, show_progress=False)
    assert not [path for path in directory.iterdir() if path.name.endswith(".tmp")]
    with pytest.raises(BertkitError, match="manifest.json is missing"):
        Shards.open(directory)


# ---------------------------------------------------------------- Chinese words


def pure_chinese(line: str) -> bool:
    """Only CJK ideographs and punctuation: then BERT's tokenizer gives exactly one token per character."""
    return all(is_cjk(char) or unicodedata.category(char).startswith("P") for char in line)


@pytest.fixture(scope="module")
def chinese_lines(chinese_texts: list[str]) -> list[str]:
    lines = ["我在北京大学工作。"] + [line for line in chinese_texts if pure_chinese(line) and len(line) <= 60]
    assert len(lines) > 50
    return lines


@pytest.fixture(scope="module")
def chinese_shards(
    tmp_path_factory: pytest.TempPathFactory, chinese_lines: list[str], minilm_dir: Path
) -> tuple[Shards, BertTokenizer]:
    directory = tmp_path_factory.mktemp("chinese")
    corpus = write_corpus(directory / "corpus.txt", [chinese_lines[i : i + 5] for i in range(0, len(chinese_lines), 5)])
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    return Shards.build([corpus], tokenizer, directory / "shards", show_progress=False), tokenizer


def jieba_word_ids(lines: list[str]) -> list[int]:
    """For every character of every line in turn, the index of the jieba word it belongs to."""
    words = [word for line in lines for word in jieba.lcut(line)]
    return [index for index, word in enumerate(words) for _ in word]


def test_chinese_word_starts_follow_jieba(
    chinese_shards: tuple[Shards, BertTokenizer], chinese_lines: list[str]
) -> None:
    shards, _ = chinese_shards
    assert jieba.lcut("我在北京大学工作。")[2] == "北京大学"
    assert shards.document(0)[0].size == len("我在北京大学工作。")
    assert shards.word_starts[:9].tolist() == [1, 1, 1, 0, 0, 0, 1, 0, 1]
    assert len(shards.tokens) == sum(map(len, chinese_lines))  # one token per character
    word_ids = np.array(jieba_word_ids(chinese_lines))
    assert shards.word_starts.tolist() == [1] + (word_ids[1:] != word_ids[:-1]).astype(int).tolist()


def test_chinese_is_detected_from_the_text(
    chinese_shards: tuple[Shards, BertTokenizer], english_shards: Shards
) -> None:
    def chinese_words(shards: Shards) -> bool:
        return json.loads((shards.directory / "manifest.json").read_text(encoding="utf-8"))["chinese_words"]

    assert chinese_words(chinese_shards[0]) and not chinese_words(english_shards)


def test_chinese_whole_word_masking_never_splits_a_jieba_word(
    chinese_shards: tuple[Shards, BertTokenizer], chinese_lines: list[str]
) -> None:
    shards, tokenizer = chinese_shards
    instances = create_instances(shards, max_seq_len=128, rng=random.Random(0), nsp=False)
    # Packing keeps the corpus order, so each instance's body is the next stretch of the character stream.
    word_ids = jieba_word_ids(chinese_lines)
    offsets = np.cumsum([0] + [len(instance.tokens) - 2 for instance in instances]).tolist()
    assert offsets[-1] == len(word_ids)
    generator = torch.Generator().manual_seed(0)
    beijing_university = list(range(2, 6))  # 北京大学 in the first sentence
    # Words are taken while they fit in the row's round(15%), so a 4-character word needs a row of 27+ tokens.
    assert len(instances[0].tokens) > 40
    beijing_seen = 0
    for _ in range(100):
        batch = pretraining_collate(instances[:8], tokenizer, generator, whole_word=True)
        for row, instance in enumerate(instances[:8]):
            chosen = (batch["labels"][row, 1 : len(instance.tokens) - 1] != -100).tolist()
            masked = (batch["input_ids"][row, 1 : len(instance.tokens) - 1] == tokenizer.mask_token_id).tolist()
            words: dict[int, set[tuple[bool, bool]]] = {}
            for position, flags in enumerate(zip(chosen, masked)):
                words.setdefault(word_ids[offsets[row] + position], set()).add(flags)
            assert all(len(states) == 1 for states in words.values())  # same choice and treatment across a word
            if row == 0 and chosen[2]:
                beijing_seen += 1
                assert all(chosen[i] for i in beijing_university)
    assert beijing_seen > 0


# ---------------------------------------------------------------- NSP pairs and packing


@pytest.fixture(scope="module")
def nsp_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Shards, dict[int, tuple[int, int]], list[int]]:
    """30 documents of 1 to 12 sentences; every token names its sentence: "d3s7" four times is sentence 7 of
    document 3. Returns the shards, token id -> (document, sentence), and each document's sentence count."""
    rng = random.Random(0)
    counts = [1, 1, 2] + [rng.randint(1, 12) for _ in range(27)]
    names = [[f"d{d}s{s}" for s in range(count)] for d, count in enumerate(counts)]
    vocab = SPECIAL_TOKENS + [name for document in names for name in document]
    tokenizer = BertTokenizer.from_vocab(vocab)
    directory = tmp_path_factory.mktemp("nsp")
    corpus = write_corpus(directory / "corpus.txt", [[" ".join([name] * 4) for name in document] for document in names])
    shards = Shards.build([corpus], tokenizer, directory / "shards", show_progress=False)
    sentence_of = {tokenizer.get_vocab()[f"d{d}s{s}"]: (d, s) for d, count in enumerate(counts) for s in range(count)}
    return shards, sentence_of, counts


def split_pair(tokens: list[int]) -> tuple[list[int], list[int]]:
    assert tokens[0] == CLS and tokens[-1] == SEP and tokens.count(SEP) == 2
    middle = tokens.index(SEP)
    return tokens[1:middle], tokens[middle + 1 : -1]


def sentences_of(segment: list[int], sentence_of: dict[int, tuple[int, int]]) -> list[tuple[int, int]]:
    """The (document, sentence) run a segment covers; it must be consecutive sentences of one document."""
    run = list(dict.fromkeys(sentence_of[token] for token in segment))
    assert run and all(d == run[0][0] for d, _ in run)
    assert [s for _, s in run] == list(range(run[0][1], run[0][1] + len(run)))
    return run


@pytest.mark.parametrize("max_seq_len, short_seq_prob", [(32, 0.0), (12, 0.3)])
def test_nsp_pairs_follow_the_original_algorithm(
    nsp_corpus: tuple[Shards, dict[int, tuple[int, int]], list[int]], max_seq_len: int, short_seq_prob: float
) -> None:
    shards, sentence_of, counts = nsp_corpus
    coin_flips = []
    for seed in range(20):
        instances = create_instances(shards, max_seq_len, random.Random(seed), short_seq_prob=short_seq_prob)
        for instance in instances:
            assert len(instance.tokens) <= max_seq_len
            a, b = split_pair(instance.tokens)
            assert instance.token_type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)
            assert instance.word_starts == [False] + [True] * len(a) + [False] + [True] * len(b) + [False]
            run_a, run_b = sentences_of(a, sentence_of), sentences_of(b, sentence_of)
            (document, last_a), (other_document, first_b) = run_a[-1], run_b[0]
            if instance.next_sentence_label == 0:
                assert (other_document, first_b) == (document, last_a + 1)
            else:
                assert instance.next_sentence_label == 1 and other_document != document
            # A chunk of one sentence always gets a random B; elsewhere the choice is a fair coin.
            if last_a == counts[document] - 1:
                assert instance.next_sentence_label == 1
            else:
                coin_flips.append(instance.next_sentence_label)
    if short_seq_prob == 0:  # with short targets a long sentence alone can fill a chunk, forcing a random B
        assert abs(np.mean(coin_flips) - 0.5) < sigma_bound(len(coin_flips), 0.5)
    assert len(coin_flips) > 300


def google_instances(
    documents: list[list[list[int]]], max_seq_len: int, rng: random.Random, short_seq_prob: float
) -> list[tuple[list[int], int]]:
    """create_instances_from_document of Google's create_pretraining_data.py, ported line by line (masking left
    out), except that the other document is drawn as bertkit does: uniformly among the others, in one draw."""
    instances = []
    max_num_tokens = max_seq_len - 3
    for document_index, document in enumerate(documents):
        target_seq_length = max_num_tokens
        if rng.random() < short_seq_prob:
            target_seq_length = rng.randint(2, max_num_tokens)
        current_chunk: list[list[int]] = []
        current_length = 0
        i = 0
        while i < len(document):
            current_chunk.append(document[i])
            current_length += len(document[i])
            if i == len(document) - 1 or current_length >= target_seq_length:
                a_end = rng.randint(1, len(current_chunk) - 1) if len(current_chunk) >= 2 else 1
                tokens_a = [token for segment in current_chunk[:a_end] for token in segment]
                tokens_b: list[int] = []
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    random_document_index = rng.randrange(len(documents) - 1)
                    random_document_index += random_document_index >= document_index
                    random_document = documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    i -= len(current_chunk) - a_end
                else:
                    is_random_next = False
                    tokens_b = [token for segment in current_chunk[a_end:] for token in segment]
                while len(tokens_a) + len(tokens_b) > max_num_tokens:
                    trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                    if rng.random() < 0.5:
                        del trunc_tokens[0]
                    else:
                        trunc_tokens.pop()
                instances.append(([CLS, *tokens_a, SEP, *tokens_b, SEP], int(is_random_next)))
                current_chunk, current_length = [], 0
            i += 1
    return instances


@pytest.mark.parametrize("max_seq_len, short_seq_prob", [(24, 0.1), (9, 0.5), (64, 0.0)])
def test_nsp_instances_match_googles_algorithm_draw_for_draw(
    english_shards: Shards, max_seq_len: int, short_seq_prob: float
) -> None:
    documents = [
        [sentence.tolist() for sentence in english_shards.document(d)] for d in range(english_shards.num_documents)
    ]
    for seed in range(3):
        ours = create_instances(english_shards, max_seq_len, random.Random(seed), short_seq_prob=short_seq_prob)
        expected = google_instances(documents, max_seq_len, random.Random(seed), short_seq_prob)
        assert [(instance.tokens, instance.next_sentence_label) for instance in ours] == expected


def test_nsp_uses_single_sentence_documents_and_respects_the_range(
    nsp_corpus: tuple[Shards, dict[int, tuple[int, int]], list[int]],
) -> None:
    shards, sentence_of, _ = nsp_corpus
    instances = create_instances(shards, 32, random.Random(0))
    assert {sentence_of[split_pair(i.tokens)[0][0]][0] for i in instances} == set(range(shards.num_documents))
    held_out = range(10, 20)
    for instance in create_instances(shards, 32, random.Random(0), documents=held_out):
        assert {sentence_of[token][0] for token in instance.tokens if token > MASK} <= set(held_out)


def test_packing_concatenates_full_sentences_in_corpus_order(
    nsp_corpus: tuple[Shards, dict[int, tuple[int, int]], list[int]],
) -> None:
    shards, _, _ = nsp_corpus
    documents = range(3, 20)
    instances = create_instances(shards, 22, random.Random(0), nsp=False, documents=documents)
    first, last = int(shards.document_starts[3]), int(shards.document_starts[20])
    sentence_starts = shards.sentence_starts[first : last + 1].tolist()
    stream = shards.tokens[sentence_starts[0] : sentence_starts[-1]].tolist()
    bodies = []
    for instance in instances:
        assert instance.tokens[0] == CLS and instance.tokens[-1] == SEP and len(instance.tokens) <= 22
        assert instance.token_type_ids == [0] * len(instance.tokens) and instance.next_sentence_label == -100
        bodies.append(instance.tokens[1:-1])
    assert [token for body in bodies for token in body] == stream
    boundaries = np.cumsum([sentence_starts[0]] + [len(body) for body in bodies])
    assert set(boundaries.tolist()) <= set(sentence_starts)  # nothing cut inside a sentence
    # Greedy: the next sentence would not have fitted.
    for body, end in zip(bodies, boundaries[1:-1].tolist()):
        next_length = sentence_starts[sentence_starts.index(end) + 1] - end
        assert len(body) + next_length > 20


def test_packing_cuts_a_sentence_longer_than_the_budget(tmp_path: Path, english_tokenizer: BertTokenizer) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", [["the cat", " ".join(["dog"] * 25), "a mat"]])
    shards = Shards.build([corpus], english_tokenizer, tmp_path / "shards", show_progress=False)
    instances = create_instances(shards, 12, random.Random(0), nsp=False)
    assert [len(instance.tokens) - 2 for instance in instances] == [2, 10, 10, 7]
    assert [token for instance in instances for token in instance.tokens[1:-1]] == shards.tokens.tolist()


def test_nsp_on_a_corpus_without_document_breaks_says_use_no_nsp(
    tmp_path: Path, english_tokenizer: BertTokenizer
) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", [["the cat sat .", "a dog jumped .", "the mat ."]])
    shards = Shards.build([corpus], english_tokenizer, tmp_path / "shards", show_progress=False)
    with pytest.raises(BertkitError, match="at least 2 documents.*--no-nsp") as error:
        create_instances(shards, 32, random.Random(0))
    assert "\n" not in str(error.value)
    assert len(create_instances(shards, 32, random.Random(0), nsp=False)) == 1


# ---------------------------------------------------------------- masking


def random_batch(rows: int, length: int, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] ids [SEP] [PAD]... rows of random lengths, and their special-position mask."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, vocab_size, (rows, length), generator=generator)
    lengths = torch.randint(4, length + 1, (rows,), generator=generator)
    positions = torch.arange(length)
    tokens[:, 0] = CLS
    tokens[positions >= lengths[:, None]] = PAD
    tokens[positions == lengths[:, None] - 1] = SEP
    return tokens, torch.isin(tokens, torch.tensor([CLS, SEP, PAD]))


def test_masking_statistics() -> None:
    vocab_size = 30000
    tokens, special = random_batch(rows=16, length=48, vocab_size=vocab_size, seed=0)
    budget = torch.tensor([max(1, round(0.15 * n)) for n in (~special).sum(1).tolist()])  # Python rounds half to even
    generator = torch.Generator().manual_seed(1)
    counts = {"mask": 0, "random": 0, "same": 0}
    for _ in range(200):
        input_ids, labels = mask_tokens(tokens, special, None, vocab_size, MASK, generator)
        chosen = labels != -100
        assert torch.equal(chosen.sum(1), budget)  # exactly round(15%) of each row's maskable tokens
        assert not (chosen & special).any()
        assert torch.equal(labels[chosen], tokens[chosen])
        assert torch.equal(input_ids[~chosen], tokens[~chosen])
        replaced = input_ids[chosen]
        counts["mask"] += int((replaced == MASK).sum())
        counts["same"] += int((replaced == tokens[chosen]).sum())
        counts["random"] += int(((replaced != MASK) & (replaced != tokens[chosen])).sum())
        assert (replaced[replaced != MASK] >= 5).all()
    total = sum(counts.values())
    for kind, expected in [("mask", 0.8), ("random", 0.1), ("same", 0.1)]:
        assert abs(counts[kind] / total - expected) < sigma_bound(total, expected), counts


def test_positions_are_chosen_uniformly() -> None:
    tokens = torch.tensor([[CLS] + [7] * 10 + [SEP]])
    special = torch.isin(tokens, torch.tensor([CLS, SEP]))
    generator = torch.Generator().manual_seed(0)
    hits = sum((mask_tokens(tokens, special, None, 100, MASK, generator)[1] != -100).long() for _ in range(3000))
    maskable = hits[0, 1:-1].double() / 3000  # 10 maskable tokens, 2 chosen each time
    assert (maskable - 0.2).abs().max() < sigma_bound(3000, 0.2)


def test_random_replacements_skip_specials_wherever_they_are() -> None:
    """Google's vocab.txt puts [PAD] at 0 and [UNK] [CLS] [SEP] [MASK] at 100-103."""
    vocab_size, specials = 110, [0, 100, 101, 102, 103]
    tokens, special = random_batch(rows=64, length=40, vocab_size=vocab_size, seed=2)
    tokens[tokens >= 100] = 50
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat([
        mask_tokens(tokens, special, None, vocab_size, 103, generator, mlm_probability=0.5, special_ids=specials)[0][
            ~special
        ]
        for _ in range(50)
    ])
    allowed = sorted(set(range(vocab_size)) - set(specials) | {103})
    assert sorted(set(drawn.tolist())) == allowed  # every ordinary id reachable, no special ever drawn


def test_english_whole_word_masking_never_splits_a_word(
    english_shards: Shards, english_tokenizer: BertTokenizer
) -> None:
    instances = create_instances(english_shards, 24, random.Random(0))[:32]
    generator = torch.Generator().manual_seed(0)
    chosen_total = budget_total = 0
    for _ in range(100):
        batch = pretraining_collate(instances, english_tokenizer, generator, whole_word=True)
        for row, instance in enumerate(instances):
            chosen = (batch["labels"][row] != -100).tolist()
            masked = (batch["input_ids"][row] == MASK).tolist()
            maskable = [token not in (CLS, SEP) for token in instance.tokens]
            pieces = english_tokenizer.convert_ids_to_tokens(instance.tokens)
            for i in range(1, len(instance.tokens)):
                if maskable[i] and maskable[i - 1] and pieces[i].startswith("##"):
                    assert (chosen[i], masked[i]) == (chosen[i - 1], masked[i - 1])
            chosen_total += sum(chosen)
            budget_total += max(1, round(0.15 * sum(maskable)))
    assert 0.95 * budget_total <= chosen_total <= budget_total


def test_collate_pads_and_masks_afresh_each_call(english_shards: Shards, english_tokenizer: BertTokenizer) -> None:
    instances = create_instances(english_shards, 24, random.Random(0))[:6]
    longest = max(len(instance.tokens) for instance in instances)
    first = pretraining_collate(instances, english_tokenizer, torch.Generator().manual_seed(0), whole_word=False)
    assert set(first) == {"input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label"}
    assert first["input_ids"].shape == (6, longest)
    for row, instance in enumerate(instances):
        n = len(instance.tokens)
        assert first["attention_mask"][row].tolist() == [1] * n + [0] * (longest - n)
        assert first["token_type_ids"][row, :n].tolist() == instance.token_type_ids
        assert (first["input_ids"][row, n:] == PAD).all() and (first["labels"][row, n:] == -100).all()
    assert first["next_sentence_label"].tolist() == [instance.next_sentence_label for instance in instances]
    generator = torch.Generator().manual_seed(0)
    again = pretraining_collate(instances, english_tokenizer, generator, whole_word=False)
    fresh = pretraining_collate(instances, english_tokenizer, generator, whole_word=False)
    assert torch.equal(again["labels"], first["labels"])  # reproducible from the seed
    assert not torch.equal(fresh["labels"], first["labels"])  # but a new mask every batch

    packed = create_instances(english_shards, 24, random.Random(0), nsp=False)[:4]
    assert "next_sentence_label" not in pretraining_collate(packed, english_tokenizer, generator, whole_word=False)


def test_mask_probability_must_be_a_fraction() -> None:
    tokens, special = random_batch(rows=2, length=8, vocab_size=50, seed=0)
    with pytest.raises(BertkitError, match="mlm_probability"):
        mask_tokens(tokens, special, None, 50, MASK, torch.Generator(), mlm_probability=1.5)
