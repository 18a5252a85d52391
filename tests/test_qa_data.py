"""bertkit.data.qa: SQuAD reading and checking, windowed features, and decoding logits back to answer text.

No real QA data is available offline, so every SQuAD input here is a small synthetic fixture written in this
file: multi-paragraph articles with long (~400-token) contexts, accented, numeric and Chinese answers.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from transformers import BertTokenizerFast

from bertkit.data.qa import QAExample, QAFeature, decode_qa, encode_qa, read_qa_jsonl, read_squad
from bertkit.errors import BertkitError
from bertkit.tokenizer import BertTokenizer

MAX_LENGTH, DOC_STRIDE = 64, 16  # small windows, so a ~400-token context has many

FILLER = (
    "The committee met again in the spring to review the annual budget, and the members discussed several "
    "proposals about roads, schools and parks before the session closed late in the evening. "
)  # 35 tokens
CHINESE_FILLER = "我们今天在图书馆里学习了很长时间，然后一起去食堂吃饭。"  # 27 tokens (one per character)


def paragraph(before: int, sentence: str, after: int, filler: str = FILLER) -> str:
    """A long context: `before` filler sentences, the sentence holding the answer, `after` filler sentences."""
    return filler * before + sentence + " " + filler * after


def question(qa_id: str, text: str, context: str, answer: str) -> dict:
    """A SQuAD question whose answer_start is the first occurrence of `answer` in the context."""
    return {"id": qa_id, "question": text, "answers": [{"text": answer, "answer_start": context.index(answer)}]}


def squad_fixture() -> dict:
    """Two articles, three long paragraphs, answers at the start, middle and end of their contexts."""
    zurich = paragraph(5, "In 1998 the bank moved its headquarters to Zürich, where it still is.", 6)
    brazil = paragraph(0, "São Paulo is the largest city of Brazil.", 10) + "The prize was worth 1,000,000 dollars."
    chinese = paragraph(7, "他在北京大学工作了十年。", 7, CHINESE_FILLER)
    return {
        "version": "1.1",
        "data": [
            {"title": "Banks", "paragraphs": [{"context": zurich, "qas": [
                question("zurich", "Where did the bank move its headquarters?", zurich, "Zürich"),
                question("year", "When did the bank move?", zurich, "1998"),
                question("phrase", "What did the bank do in 1998?", zurich, "moved its headquarters to Zürich"),
            ]}]},
            {"title": "Brazil", "paragraphs": [
                {"context": brazil, "qas": [
                    question("sao-paulo", "What is the largest city of Brazil?", brazil, "São Paulo"),
                    question("prize", "How much was the prize worth?", brazil, "1,000,000"),
                ]},
                {"context": chinese, "qas": [question("beida", "他在哪里工作？", chinese, "北京大学")]},
            ]},
        ],
    }  # fmt: skip


def write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(minilm_dir: Path) -> BertTokenizer:
    return BertTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def fixture_examples(tmp_path_factory: pytest.TempPathFactory) -> list[QAExample]:
    path = write_json(tmp_path_factory.mktemp("squad") / "train.json", squad_fixture())
    examples, version_2 = read_squad(path)
    assert not version_2
    return examples


def windows_of(features: list[QAFeature], example_index: int) -> list[QAFeature]:
    return [f for f in features if f.example_index == example_index]


def answer_token_span(feature: QAFeature, answer_start: int, answer_end: int) -> list[int]:
    """Tokens of this window that overlap the answer's characters."""
    return [
        i for i, offset in enumerate(feature.offsets)
        if offset is not None and offset[0] < answer_end and offset[1] > answer_start
    ]  # fmt: skip


def peaked_logits(
    features: list[QAFeature], peaks: dict[int, tuple[int, int]], seed: int = 0, peak: float = 10.0
) -> tuple[list[list[float]], list[list[float]]]:
    """Noise in [-1, 0) everywhere, plus `peak` at the (start, end) token given for each feature index in peaks."""
    rng = random.Random(seed)
    starts = [[-rng.random() for _ in f.input_ids] for f in features]
    ends = [[-rng.random() for _ in f.input_ids] for f in features]
    for index, (start, end) in peaks.items():
        starts[index][start] = ends[index][end] = peak
    return starts, ends


# ---------------------------------------------------------------- encode_qa: windows and answer positions


def test_fixture_contexts_are_long(tokenizer: BertTokenizer, fixture_examples: list[QAExample]) -> None:
    lengths = {len(tokenizer.encode(e.context, truncation="do_not_truncate").input_ids) for e in fixture_examples}
    assert min(lengths) > 350 and max(lengths) < 500, lengths


def test_every_window_recovers_the_answer_text_exactly(
    tokenizer: BertTokenizer, fixture_examples: list[QAExample]
) -> None:
    features = encode_qa(fixture_examples, tokenizer, MAX_LENGTH, DOC_STRIDE, max_query_length=16)
    assert [f.example_index for f in features] == sorted(f.example_index for f in features)
    for index, example in enumerate(fixture_examples):
        answer = example.answers[0]
        answer_start, answer_end = answer["answer_start"], answer["answer_start"] + len(answer["text"])
        windows = windows_of(features, index)
        assert len(windows) >= 15, "the fixture should give many windows"
        answer_tokens = max(len(answer_token_span(f, answer_start, answer_end)) for f in windows)
        holding = 0
        for feature in windows:
            assert len(feature.input_ids) == len(feature.token_type_ids) == len(feature.offsets) <= MAX_LENGTH
            whole = len(answer_token_span(feature, answer_start, answer_end)) == answer_tokens
            if feature.start_position == 0:
                assert feature.end_position == 0
                assert not whole, f"{example.id}: the answer is inside this window but its positions are 0"
                continue
            holding += 1
            assert whole
            start, end = feature.offsets[feature.start_position], feature.offsets[feature.end_position]
            assert example.context[start[0] : end[1]] == answer["text"]  # case, accents and digits preserved
        assert holding >= 1, f"{example.id}: no window holds the answer"


def bert_is_max_context(spans: list[tuple[int, int]], span_index: int, position: int) -> bool:
    """_check_is_max_context from google-research/bert run_squad.py, transcribed as the reference."""
    best_score, best_span_index = None, None
    for index, (start, length) in enumerate(spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_span_index = score, index
    return span_index == best_span_index


def test_window_layout(tokenizer: BertTokenizer, fixture_examples: list[QAExample]) -> None:
    """[CLS] question [SEP] context [SEP], advancing by doc_stride; one max-context window per context token."""
    example = fixture_examples[0]
    # 4 question tokens -> 57-token windows: with doc_stride 16 some tokens tie between two windows (the first wins).
    features = encode_qa([example], tokenizer, MAX_LENGTH, DOC_STRIDE, max_query_length=4)
    question_ids = tokenizer.encode(example.question).input_ids[1:5]  # cut to max_query_length=4
    context = tokenizer.encode(example.context, truncation="do_not_truncate")
    context_ids, context_offsets = context.input_ids[1:-1], context.offsets[1:-1]
    window = MAX_LENGTH - len(question_ids) - 3
    spans = [(w * DOC_STRIDE, min(window, len(context_ids) - w * DOC_STRIDE)) for w in range(len(features))]
    seen_max_context = [0] * len(context_ids)
    for w, feature in enumerate(features):
        start = w * DOC_STRIDE
        expected_context = context_ids[start : start + window]
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        assert feature.input_ids == [cls, *question_ids, sep, *expected_context, sep]
        assert feature.token_type_ids == [0] * (len(question_ids) + 2) + [1] * (len(expected_context) + 1)
        assert feature.offsets[: len(question_ids) + 2] == [None] * (len(question_ids) + 2)
        assert feature.offsets[-1] is None
        assert feature.offsets[len(question_ids) + 2 : -1] == context_offsets[start : start + window]
        context_max = feature.max_context[len(question_ids) + 2 : -1]
        assert not any(feature.max_context[: len(question_ids) + 2]) and not feature.max_context[-1]
        assert context_max == [bert_is_max_context(spans, w, start + i) for i in range(len(context_max))]
        for i, is_max in enumerate(context_max):
            seen_max_context[start + i] += is_max
    assert (len(features) - 1) * DOC_STRIDE + window >= len(context_ids) > (len(features) - 2) * DOC_STRIDE + window
    assert seen_max_context == [1] * len(context_ids)


def test_first_window_matches_transformers_overflowing_tokens(
    minilm_dir: Path, tokenizer: BertTokenizer, fixture_examples: list[QAExample]
) -> None:
    """HF's `stride` is the overlap between windows, ours the advance: overlap = window length - doc_stride."""
    oracle = BertTokenizerFast.from_pretrained(minilm_dir)
    for example in fixture_examples:
        features = encode_qa([example], tokenizer, MAX_LENGTH, DOC_STRIDE)  # questions are under max_query_length
        question_length = len(tokenizer.encode(example.question).input_ids) - 2
        overlap = MAX_LENGTH - question_length - 3 - DOC_STRIDE
        hf = oracle(
            example.question, example.context, truncation="only_second", max_length=MAX_LENGTH, stride=overlap,
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )  # fmt: skip
        assert features[0].input_ids == hf["input_ids"][0]
        ours_covered = {f.offsets[i] for f in features for i in range(len(f.offsets)) if f.offsets[i] is not None}
        hf_context = {
            tuple(offset)
            for window, sequence in zip(hf["offset_mapping"], (hf.sequence_ids(i) for i in range(len(hf["input_ids"]))))
            for offset, segment in zip(window, sequence)
            if segment == 1
        }
        assert ours_covered == hf_context  # every context token, exactly once as a span, in both schemes
        # With this setting the two schemes happen to agree window for window, too.
        assert [f.input_ids for f in features] == hf["input_ids"]


def test_answer_across_a_window_boundary(tokenizer: BertTokenizer) -> None:
    question_text = "what orbits the earth?"  # 5 tokens, so windows hold 64 - 5 - 3 = 56 context tokens
    window = MAX_LENGTH - 5 - 3
    words = "the cat sat on mat".split()  # one token each
    lead = " ".join(words[i % len(words)] for i in range(window - 3))
    context = f"{lead} the international space station orbits it. " + FILLER * 9  # the answer: tokens 53..56
    answer = "the international space station"
    example = QAExample("iss", question_text, context, [{"text": answer, "answer_start": context.index(answer)}])
    features = encode_qa([example], tokenizer, MAX_LENGTH, DOC_STRIDE)
    answer_start, answer_end = context.index(answer), context.index(answer) + len(answer)

    partial = [i for i, f in enumerate(features) if 0 < len(answer_token_span(f, answer_start, answer_end)) < 4]
    whole = [i for i, f in enumerate(features) if f.start_position != 0]
    assert partial, "the fixture must split the answer over a window boundary"
    assert whole, "some window must hold the answer whole"
    assert all(features[i].start_position == features[i].end_position == 0 for i in partial)
    assert all(len(answer_token_span(features[i], answer_start, answer_end)) == 4 for i in whole)

    # The start token is scored only in its max-context window; peak there, noise everywhere else.
    chosen = [i for i in whole if features[i].max_context[features[i].start_position]]
    assert len(chosen) == 1
    feature = features[chosen[0]]
    starts, ends = peaked_logits(features, {chosen[0]: (feature.start_position, feature.end_position)})
    # The first window ends one token short of the answer's end. A higher peak there on the cut-off answer
    # must lose: its start token sits at that window's edge, so only the max-context window may propose it.
    cut_tokens = answer_token_span(features[0], answer_start, answer_end)
    assert 0 in partial and len(cut_tokens) == 3 and not features[0].max_context[cut_tokens[0]]
    starts[0][cut_tokens[0]] = ends[0][cut_tokens[-1]] = 12.0
    [result] = decode_qa([example], features, starts, ends)
    assert result["answer"] == answer
    assert (result["start"], result["end"]) == (answer_start, answer_end)


def test_no_answer_and_unknown_answer_get_cls_positions(tokenizer: BertTokenizer) -> None:
    impossible = QAExample("x", "Who?", FILLER * 3, [], is_impossible=True)
    features = encode_qa([impossible], tokenizer, MAX_LENGTH, DOC_STRIDE)
    assert len(features) > 1
    assert all(f.start_position == f.end_position == 0 for f in features)


def test_question_too_long_for_max_length(tokenizer: BertTokenizer) -> None:
    example = QAExample("long-q", "why " * 70, "Because.", [])
    with pytest.raises(BertkitError, match='question "long-q": max_length=64 leaves no room'):
        encode_qa([example], tokenizer, max_length=64, doc_stride=16, max_query_length=64)
    assert encode_qa([example], tokenizer, max_length=64, doc_stride=16, max_query_length=32)


# ---------------------------------------------------------------- decode_qa


@pytest.fixture(scope="module")
def short_example(tokenizer: BertTokenizer) -> tuple[QAExample, list[QAFeature], dict[str, int]]:
    """One window; token index of each context word by its text."""
    context = "In 1998 the bank moved its headquarters to Zürich and later to São Paulo."
    example = QAExample("short", "Where is the bank?", context, [])
    features = encode_qa([example], tokenizer)
    assert len(features) == 1
    tokens = {context[o[0] : o[1]]: i for i, o in enumerate(features[0].offsets) if o is not None}
    return example, features, tokens


def test_decode_returns_the_gold_span_from_its_window(
    tokenizer: BertTokenizer, fixture_examples: list[QAExample]
) -> None:
    features = encode_qa(fixture_examples, tokenizer, MAX_LENGTH, DOC_STRIDE, max_query_length=16)
    peaks = {}
    for index in range(len(fixture_examples)):
        holding = [
            i for i, f in enumerate(features)
            if f.example_index == index and f.start_position and f.max_context[f.start_position]
        ]  # fmt: skip
        assert len(holding) == 1
        peaks[holding[0]] = (features[holding[0]].start_position, features[holding[0]].end_position)
    starts, ends = peaked_logits(features, peaks)
    results = decode_qa(fixture_examples, features, starts, ends)
    assert len(results) == len(fixture_examples)
    for example, result in zip(fixture_examples, results):
        gold = example.answers[0]
        assert result["answer"] == gold["text"]
        assert (result["start"], result["end"]) == (gold["answer_start"], gold["answer_start"] + len(gold["text"]))
        assert example.context[result["start"] : result["end"]] == result["answer"]
        assert 0.99 < result["score"] <= 1.0  # one dominant span: nearly all the n-best probability


def test_decode_respects_max_answer_len(short_example: tuple) -> None:
    example, features, tokens = short_example
    starts, ends = peaked_logits(features, {0: (tokens["Zürich"], tokens["Paulo"])})
    ends[0][tokens["Zürich"]] = 5.0
    [long] = decode_qa([example], features, starts, ends)
    assert long["answer"] == "Zürich and later to São Paulo"
    [short] = decode_qa([example], features, starts, ends, max_answer_len=3)
    assert short["answer"] == "Zürich"


def test_decode_never_returns_end_before_start(short_example: tuple) -> None:
    example, features, tokens = short_example
    starts, ends = peaked_logits(features, {0: (tokens["Paulo"], tokens["Zürich"])})  # best end precedes best start
    starts[0][tokens["Zürich"]] = 5.0
    [result] = decode_qa([example], features, starts, ends)
    assert result["answer"] == "Zürich"
    for seed in range(20):  # pure noise: whatever wins is still a forward span
        starts, ends = peaked_logits(features, {}, seed=seed)
        [result] = decode_qa([example], features, starts, ends, n_best=5)
        assert result["start"] < result["end"]
        assert example.context[result["start"] : result["end"]] == result["answer"]


def test_decode_score_is_the_probability_among_the_n_best_spans(short_example: tuple) -> None:
    example, features, tokens = short_example
    starts, ends = peaked_logits(features, {0: (tokens["Zürich"], tokens["Zürich"])}, peak=5.0)
    starts[0][tokens["São"]] = ends[0][tokens["Paulo"]] = 4.0
    # Valid spans among the top 2 starts and ends: Zürich (10), Zürich ... Paulo (9), São Paulo (8).
    [result] = decode_qa([example], features, starts, ends, n_best=2)
    assert result["answer"] == "Zürich"
    assert result["score"] == pytest.approx(1 / (1 + math.exp(-1)))  # softmax over the 2 best: 10 and 9
    [result] = decode_qa([example], features, starts, ends, n_best=3)
    assert result["score"] == pytest.approx(1 / (1 + math.exp(-1) + math.exp(-2)))  # 10, 9 and 8 (São Paulo)


def test_decode_no_answer_threshold_both_ways(short_example: tuple) -> None:
    example, features, tokens = short_example
    starts, ends = peaked_logits(features, {0: (tokens["Zürich"], tokens["Zürich"])}, peak=3.0)  # span score 6
    starts[0][0] = ends[0][0] = 5.0  # null score 10: 4 above the span

    [result] = decode_qa([example], features, starts, ends, allow_no_answer=True)
    assert result == {"answer": "", "start": -1, "end": -1, "score": pytest.approx(4.0)}
    [result] = decode_qa([example], features, starts, ends, allow_no_answer=True, null_threshold=3.9)
    assert result["answer"] == ""
    [result] = decode_qa([example], features, starts, ends, allow_no_answer=True, null_threshold=4.1)
    assert result["answer"] == "Zürich"
    [result] = decode_qa([example], features, starts, ends)  # SQuAD v1.1: always a span
    assert result["answer"] == "Zürich"
    # A negative threshold prefers "no answer" even when the span scores higher.
    starts[0][0] = ends[0][0] = 2.0  # null score 4: 2 below the span
    [result] = decode_qa([example], features, starts, ends, allow_no_answer=True)
    assert result["answer"] == "Zürich"
    [result] = decode_qa([example], features, starts, ends, allow_no_answer=True, null_threshold=-2.5)
    assert result == {"answer": "", "start": -1, "end": -1, "score": pytest.approx(-2.0)}


def test_decode_null_score_is_the_lowest_over_windows(
    tokenizer: BertTokenizer, fixture_examples: list[QAExample]
) -> None:
    example = fixture_examples[0]
    features = encode_qa([example], tokenizer, MAX_LENGTH, DOC_STRIDE, max_query_length=16)
    [gold] = [i for i, f in enumerate(features) if f.start_position and f.max_context[f.start_position]]
    starts, ends = peaked_logits(features, {gold: (features[gold].start_position, features[gold].end_position)})
    for window in starts + ends:
        window[0] = 20.0  # every window but one strongly says "no answer"
    starts[-1][0] = ends[-1][0] = 0.0
    [result] = decode_qa([example], features, starts, ends, allow_no_answer=True)
    assert result["answer"] == "Zürich"


# ---------------------------------------------------------------- read_squad / read_qa_jsonl


def test_read_squad_examples(fixture_examples: list[QAExample]) -> None:
    assert [e.id for e in fixture_examples] == ["zurich", "year", "phrase", "sao-paulo", "prize", "beida"]
    assert fixture_examples[0].question == "Where did the bank move its headquarters?"
    chinese = fixture_examples[-1]
    assert chinese.answers == [{"text": "北京大学", "answer_start": chinese.context.index("北京大学")}]
    assert not any(e.is_impossible for e in fixture_examples)


def small_squad(**qa_fields: object) -> dict:
    """One paragraph, one question; qa_fields override the question's fields (None removes one)."""
    qa = {"id": "abc", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 15}]}
    qa.update(qa_fields)
    qa = {key: value for key, value in qa.items() if value is not None}
    paragraphs = [{"context": "The capital is Paris.", "qas": [qa]}]
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": paragraphs}]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            small_squad(answers=[{"text": "Paris", "answer_start": 14}]),  # off by one, as in a few official answers
            'train.json: data[0].paragraphs[0].qas[0] (id "abc"): answers[0]: answer text "Paris" does not match '
            'the context at answer_start 14 (" Pari"); the text occurs at 15',
        ),
        (small_squad(answers=[{"text": "Paris", "answer_start": -1}]), "answers[0]: answer_start -1 is negative"),
        (small_squad(answers=[{"text": "Paris", "answer_start": 19}]), "past the end of the context (21 characters)"),
        (small_squad(answers=[{"text": "Paris", "answer_start": "15"}]), "\"answer_start\" is not an integer ('15')"),
        (small_squad(answers=[]), 'qas[0] (id "abc"): no answers; a training question needs at least one'),
        (small_squad(answers=None), "no answers"),
        (small_squad(question=None), 'qas[0] (id "abc"): "question" is missing'),
        (small_squad(question="  "), '"question" is empty'),
        (small_squad(id=None), 'qas[0]: "id" is missing'),
        (small_squad(is_impossible=True), '"is_impossible" is true but it has 1 answer(s)'),
        ({"data": [{"paragraphs": [{"qas": []}]}]}, 'data[0].paragraphs[0]: "context" is missing'),
        ({"data": [{"paragraphs": [{"context": "x", "qas": []}]}]}, "no questions in any paragraph"),
        ({"data": []}, 'train.json: "data" is empty'),
        ({"version": "1.1"}, 'train.json: no "data" key'),
        ([1, 2], 'train.json: no "data" key'),
    ],
)
def test_read_squad_errors(tmp_path: Path, content: object, message: str) -> None:
    path = write_json(tmp_path / "train.json", content)
    with pytest.raises(BertkitError) as error:
        read_squad(path)
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_read_squad_duplicate_ids(tmp_path: Path) -> None:
    content = small_squad()
    content["data"][0]["paragraphs"][0]["qas"] *= 2
    first = r"data\[0\]\.paragraphs\[0\]\.qas\[0\]"
    with pytest.raises(BertkitError, match=rf'qas\[1\]: duplicate id "abc" \(first at {first}\)'):
        read_squad(write_json(tmp_path / "dev.json", content))


def test_read_squad_not_json_and_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"paragraphs": }\n]}', encoding="utf-8")
    with pytest.raises(BertkitError, match=r"broken\.json:2:18: not valid JSON \(Expecting value\)"):
        read_squad(path)
    path.write_bytes('{"data": [],\n "title": "Zürich"}'.encode("latin-1"))
    with pytest.raises(BertkitError, match=r"broken\.json:2: not valid UTF-8 \(byte 0xfc\)"):
        read_squad(path)
    with pytest.raises(BertkitError, match="no such file"):
        read_squad(tmp_path / "missing.json")


def test_read_squad_without_required_answers(tmp_path: Path) -> None:
    """Evaluation/prediction-style input: answers may be absent, but present ones are still checked."""
    examples, _ = read_squad(write_json(tmp_path / "a.json", small_squad(answers=None)), require_answers=False)
    assert examples == [QAExample("abc", "What is the capital?", "The capital is Paris.", [])]
    bad = small_squad(answers=[{"text": "Lyon", "answer_start": 15}])
    message = r'answer text "Lyon" does not match the context at answer_start 15 \("Pari"\)$'
    with pytest.raises(BertkitError, match=message):
        read_squad(write_json(tmp_path / "b.json", bad), require_answers=False)


def test_read_squad_detects_v2(tmp_path: Path) -> None:
    impossible = {"id": "no", "question": "What is the population?", "answers": [], "is_impossible": True,
                  "plausible_answers": [{"text": "capital", "answer_start": 4}]}  # fmt: skip
    content = small_squad()
    content["data"][0]["paragraphs"][0]["qas"].append(impossible)
    content.pop("version")
    examples, version_2 = read_squad(write_json(tmp_path / "v2.json", content))
    assert version_2
    assert [(e.id, e.is_impossible, e.answers) for e in examples] == [
        ("abc", False, [{"text": "Paris", "answer_start": 15}]),
        ("no", True, []),
    ]
    labelled_v2 = {**small_squad(), "version": "v2.0"}
    assert read_squad(write_json(tmp_path / "v2b.json", labelled_v2))[1]
    assert not read_squad(write_json(tmp_path / "v1.json", small_squad()))[1]


def test_read_qa_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "questions.jsonl"
    lines = [
        {"question": "Where?", "context": "In Zürich."},
        {"id": "q-7", "question": "Who?", "context": "São Paulo FC."},
        {"question": "What?", "context": "北京大学"},
    ]
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    examples = read_qa_jsonl(path)
    assert [e.id for e in examples] == ["0", "q-7", "2"]
    assert examples[1] == QAExample("q-7", "Who?", "São Paulo FC.", [])

    path.write_text('{"question": "Where?", "context": "Here."}\n{"question": "Who?"}\n', encoding="utf-8")
    with pytest.raises(BertkitError, match=r'questions\.jsonl:2: "context" is missing$'):
        read_qa_jsonl(path)
    path.write_text('{"question": "Where?", "context": "Here."}\nnot json\n', encoding="utf-8")
    with pytest.raises(BertkitError, match=r"questions\.jsonl:2: not valid JSON"):
        read_qa_jsonl(path)
