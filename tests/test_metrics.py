"""bertkit.metrics against hand-worked numbers and against the reference libraries (seqeval, scikit-learn).

Classification and SQuAD numbers are worked out by hand in the comments; NER chunking and scores are
compared with the real seqeval (default, conlleval-compatible mode) on tricky hand-made cases and on
300 seeded random tag sequences.
"""

from __future__ import annotations

import json
import random
import warnings

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities as seqeval_get_entities

from bertkit.errors import BertkitError
from bertkit.metrics import (
    classification_metrics,
    entity_metrics,
    get_entities,
    multilabel_metrics,
    normalize_answer,
    regression_metrics,
    squad_exact,
    squad_f1,
    squad_metrics,
)


@pytest.fixture(autouse=True)
def _quiet_seqeval():
    """seqeval warns on odd tags ("seems not to be NE tag") and on 0/0 scores; both are expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------------------
# Classification


def test_classification_metrics_hand_worked() -> None:
    labels = ["neg", "neu", "pos"]
    y_true = [0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 2, 0, 2, 2, 2, 0]  # "neu" is never predicted
    # Confusion matrix (rows = gold, cols = predicted):
    #   neg: 2 predicted neg, 0 neu, 1 pos  -> [2, 0, 1]
    #   neu: 1 neg, 0 neu, 1 pos            -> [1, 0, 1]
    #   pos: 1 neg, 0 neu, 2 pos            -> [1, 0, 2]
    # accuracy = diagonal / n = (2 + 0 + 2) / 8 = 0.5
    # neg: tp 2, predicted 4 (column), gold 3 (row) -> P 2/4, R 2/3, F1 2*2/(3+4) = 4/7
    # neu: tp 0, predicted 0, gold 2 -> P 0 (zero_division=0), R 0, F1 0
    # pos: tp 2, predicted 4, gold 3 -> P 1/2, R 2/3, F1 4/7
    # macro F1 = (4/7 + 0 + 4/7) / 3 = 8/21
    m = classification_metrics(y_true, y_pred, labels)
    assert m["confusion_matrix"] == [[2, 0, 1], [1, 0, 1], [1, 0, 2]]
    assert m["accuracy"] == 0.5
    assert m["macro_f1"] == pytest.approx(8 / 21)
    assert m["per_class"]["neg"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert m["per_class"]["neu"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["per_class"]["pos"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert list(m["per_class"]) == labels
    json.dumps(m, allow_nan=False)


def test_classification_label_absent_everywhere_counts_in_macro_f1() -> None:
    # Label "c" occurs neither in gold nor predictions: it still takes part in the macro mean with F1 0.
    # a: tp 1, pred 1, gold 1 -> F1 1; b: tp 1, pred 1, gold 1 -> F1 1; c: 0 -> macro = 2/3
    m = classification_metrics([0, 1], [0, 1], ["a", "b", "c"])
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_classification_matches_sklearn() -> None:
    from sklearn.metrics import confusion_matrix, f1_score as sk_f1, precision_recall_fscore_support

    rng = random.Random(7)
    labels = ["a", "b", "c", "d", "e"]
    y_true = [rng.randrange(4) for _ in range(60)]  # "e" never appears in gold
    y_pred = [rng.choice([0, 1, 3, 4]) for _ in range(60)]  # "c" is never predicted
    m = classification_metrics(y_true, y_pred, labels)
    ids = list(range(len(labels)))
    assert m["macro_f1"] == pytest.approx(sk_f1(y_true, y_pred, average="macro", labels=ids, zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    for k, label in enumerate(labels):
        assert m["per_class"][label] == pytest.approx({"precision": p[k], "recall": r[k], "f1": f[k], "support": s[k]})
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=ids).tolist()


@pytest.mark.parametrize(
    "y_true, y_pred, labels, message",
    [
        ([0, 1], [0], ["a", "b"], "2 gold values but 1 predictions"),
        ([], [], ["a"], "nothing to score"),
        ([0, 2], [0, 1], ["a", "b"], "gold label id 2 is not in 0..1"),
        ([0, 1], [0, -1], ["a", "b"], "predicted label id -1"),
        ([0], [0], ["a", "a"], "duplicate labels"),
    ],
)
def test_classification_bad_input(y_true, y_pred, labels, message) -> None:
    with pytest.raises(BertkitError, match=message):
        classification_metrics(y_true, y_pred, labels)


def test_multilabel_metrics_hand_worked() -> None:
    labels = ["a", "b", "c"]
    y_true = [[1, 0, 1], [0, 1, 0], [1, 1, 0]]
    y_pred = [[1, 0, 1], [0, 0, 0], [1, 0, 1]]
    # exact match: row 0 only -> 1/3
    # a: tp 2, predicted 2, gold 2 -> P 1, R 1, F1 1
    # b: tp 0, predicted 0, gold 2 -> 0, 0, 0
    # c: tp 1 (row 0), predicted 2, gold 1 -> P 1/2, R 1, F1 2/3
    # micro: tp 3, predicted 4, gold 5 -> F1 = 2*3 / (4 + 5) = 2/3;  macro = (1 + 0 + 2/3) / 3 = 5/9
    m = multilabel_metrics(y_true, y_pred, labels)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["micro_f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx(5 / 9)
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})

    from sklearn.metrics import accuracy_score, f1_score as sk_f1

    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["micro_f1"] == pytest.approx(sk_f1(y_true, y_pred, average="micro", zero_division=0))
    assert m["macro_f1"] == pytest.approx(sk_f1(y_true, y_pred, average="macro", zero_division=0))


def test_multilabel_bad_input() -> None:
    with pytest.raises(BertkitError, match="2 entries but there are 3 labels"):
        multilabel_metrics([[1, 0]], [[1, 0, 0]], ["a", "b", "c"])
    with pytest.raises(BertkitError, match="only 0 and 1"):
        multilabel_metrics([[1, 2]], [[1, 0]], ["a", "b"])


def test_regression_metrics_hand_worked() -> None:
    # errors -1, 0, -1, -1 -> MSE 3/4
    # Pearson: x - 2.5 = (-1.5, -.5, .5, 1.5), y - 3.25 = (-1.25, -1.25, .75, 1.75)
    #   sxy = 1.875 + .625 + .375 + 2.625 = 5.5, sxx = 5, syy = 6.75 -> r = 5.5 / sqrt(33.75)
    # Spearman: ranks x = 1, 2, 3, 4; y = 1.5, 1.5, 3, 4 (tie averaged)
    #   centred: (-1.5, -.5, .5, 1.5) and (-1, -1, .5, 1.5): sxy 4.5, sxx 5, syy 4.5 -> 4.5 / sqrt(22.5)
    m = regression_metrics([1, 2, 3, 4], [2, 2, 4, 5])
    assert m["mse"] == pytest.approx(0.75)
    assert m["pearson"] == pytest.approx(5.5 / 33.75**0.5)
    assert m["spearman"] == pytest.approx(4.5 / 22.5**0.5)

    from scipy.stats import pearsonr, spearmanr

    rng = random.Random(3)
    x = [rng.choice([0.0, 0.5, 1.0, 2.5, 4.0, 5.0]) for _ in range(40)]  # many ties
    y = [v + rng.gauss(0, 1) for v in x]
    m = regression_metrics(x, y)
    assert m["pearson"] == pytest.approx(pearsonr(x, y)[0])
    assert m["spearman"] == pytest.approx(spearmanr(x, y)[0])


def test_regression_constant_side_gives_zero_correlation() -> None:
    m = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert m == {"mse": pytest.approx(2 / 3), "pearson": 0.0, "spearman": 0.0}
    with pytest.raises(BertkitError):
        regression_metrics([1.0], [1.0, 2.0])
    with pytest.raises(BertkitError):
        regression_metrics([float("nan")], [1.0])


# ---------------------------------------------------------------------------------------------------------
# NER: seqeval default mode

TRICKY_SEQUENCES = [
    # BIO
    ["B-PER", "I-PER", "O", "B-LOC"],  # trailing entity
    ["O", "I-PER", "I-PER", "O"],  # I- after O starts an entity (IOB1-ish)
    ["I-PER"],  # I- at the very start
    ["B-PER", "I-LOC", "I-LOC"],  # B-X I-Y splits
    ["B-PER", "B-PER", "I-PER"],  # B-X B-X: two entities
    ["I-PER", "I-LOC", "B-LOC", "I-ORG"],
    ["O", "O", "O"],  # all O
    [],  # empty sentence
    # BIOES / IOBES
    ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC"],
    ["E-PER"],  # lone E-
    ["O", "E-PER", "E-PER"],  # E- after O, E- after E-
    ["S-PER", "S-PER", "I-PER", "E-PER"],  # S- S- then I- after S-
    ["B-ORG", "E-ORG", "I-ORG", "S-LOC", "E-LOC"],
    ["B-PER", "E-LOC"],  # type change inside
    ["B-PER", "S-PER", "E-PER"],
    ["I-LOC", "E-LOC", "E-LOC", "I-LOC"],
    # odd tags seqeval still chunks: bare prefixes, no prefix, a dot, hyphenated types
    ["B", "I", "O", "S", "E"],
    ["PER", "PER", "O", "LOC"],
    [".", "B-PER", ".", "I-PER"],
    ["B-MISC-X", "I-MISC-X", "B-MISC"],
]


@pytest.mark.parametrize("tags", TRICKY_SEQUENCES, ids=lambda t: " ".join(t) or "empty")
def test_get_entities_matches_seqeval_on_tricky_cases(tags: list[str]) -> None:
    assert get_entities(tags) == seqeval_get_entities(tags)


def test_get_entities_literals() -> None:
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert get_entities(["O", "I-PER", "I-PER", "O"]) == [("PER", 1, 2)]
    assert get_entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]
    assert get_entities(["S-PER", "B-LOC", "E-LOC", "E-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 3)]
    assert get_entities([]) == []
    assert get_entities(["O", "O"]) == []
    with pytest.raises(BertkitError, match="invalid NER tag"):
        get_entities(["B-PER", ""])


def _assert_same_as_seqeval(true_tags: list[list[str]], pred_tags: list[list[str]]) -> None:
    m = entity_metrics(true_tags, pred_tags)
    assert m["precision"] == precision_score(true_tags, pred_tags)
    assert m["recall"] == recall_score(true_tags, pred_tags)
    assert m["f1"] == f1_score(true_tags, pred_tags)
    report = classification_report(true_tags, pred_tags, output_dict=True)
    expected_types = {k: v for k, v in report.items() if not k.endswith(" avg")}
    assert list(m["per_type"]) == sorted(expected_types)
    for type_, row in expected_types.items():
        got = m["per_type"][type_]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == (
            row["precision"], row["recall"], row["f1-score"], row["support"]
        ), type_
    json.dumps(m, allow_nan=False)


def test_entity_metrics_matches_seqeval_on_hand_cases() -> None:
    true_tags = [
        ["O", "O", "B-MISC", "I-MISC", "B-MISC", "O", "O"],
        ["B-PER", "I-PER", "O"],
        ["S-LOC", "O", "B-ORG", "E-ORG"],
        [],
        ["O", "O"],
        ["I-PER", "I-PER"],
    ]
    pred_tags = [
        ["O", "O", "B-MISC", "I-MISC", "B-MISC", "I-MISC", "O"],
        ["B-PER", "I-PER", "O"],
        ["S-LOC", "O", "B-ORG", "I-ORG"],
        [],
        ["B-LOC", "O"],
        ["B-PER", "I-PER"],
    ]
    # gold entities: MISC(2,3) MISC(4,4) | PER(0,1) | LOC(0,0) ORG(2,3) | - | - | PER(0,1)   -> 6
    # predicted:     MISC(2,3) MISC(4,5) | PER(0,1) | LOC(0,0) ORG(2,3) | - | LOC(0,0) | PER(0,1) -> 7
    # correct: MISC(2,3), PER(0,1), LOC(0,0), ORG(2,3), PER(0,1) = 5 -> P 5/7, R 5/6
    m = entity_metrics(true_tags, pred_tags)
    assert m["precision"] == pytest.approx(5 / 7)
    assert m["recall"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(2 * 5 / (7 + 6))
    assert m["per_type"]["MISC"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_type"]["LOC"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    _assert_same_as_seqeval(true_tags, pred_tags)
    # the tricky sequences scored against their own reversals (same lengths, many partial matches)
    _assert_same_as_seqeval(TRICKY_SEQUENCES, [list(reversed(tags)) for tags in TRICKY_SEQUENCES])


def test_entity_metrics_edge_cases() -> None:
    # nothing in gold and nothing predicted: seqeval reports 0 (zero_division) and no types
    assert entity_metrics([["O", "O"], []], [["O", "O"], []]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "per_type": {}}
    _assert_same_as_seqeval([["O", "O"], []], [["O", "O"], []])
    # a type only predicted shows up with support 0
    _assert_same_as_seqeval([["B-PER", "O"]], [["B-PER", "S-ORG"]])
    with pytest.raises(BertkitError, match="sentence 1 has 2 gold tags but 1 predicted"):
        entity_metrics([["O"], ["O", "B-PER"]], [["O"], ["O"]])
    with pytest.raises(BertkitError, match="2 gold sentences but 1 predicted"):
        entity_metrics([["O"], ["O"]], [["O"]])


def _random_sentence(rng: random.Random) -> list[str]:
    tags = ["O"] + [f"{p}-{t}" for p in "BIES" for t in ("PER", "LOC", "ORG")]
    return [rng.choice(tags) for _ in range(rng.randrange(0, 13))]


def test_random_sequences_match_seqeval() -> None:
    rng = random.Random(20240601)
    sentences = [_random_sentence(rng) for _ in range(300)]
    for tags in sentences:
        assert get_entities(tags) == seqeval_get_entities(tags), tags
    # Scores: pair every sentence with a prediction of the same length: half random, half a perturbed copy
    # of the gold (so there are many exact matches too), scored as 30 corpora of 10 sentences each.
    predictions = []
    for tags in sentences:
        if rng.random() < 0.5:
            pred = [rng.choice(["O", "B-PER", "I-LOC", "E-ORG", "S-PER"]) for _ in tags]
        else:
            pred = [t if rng.random() < 0.85 else rng.choice(["O", "B-LOC", "I-PER", "S-ORG"]) for t in tags]
        predictions.append(pred)
    for start in range(0, 300, 10):
        _assert_same_as_seqeval(sentences[start : start + 10], predictions[start : start + 10])


# ---------------------------------------------------------------------------------------------------------
# SQuAD (official v2.0 evaluate script definitions)


@pytest.mark.parametrize(
    "text, expected",
    [
        # lower -> "the  eiffel-tower!"; punctuation is *deleted* (not spaced) -> "the  eiffeltower";
        # article -> "   eiffeltower"; whitespace squeezed -> "eiffeltower"
        ("The  Eiffel-Tower!", "eiffeltower"),
        ("The  Eiffel Tower!", "eiffel tower"),
        ("an apple, a pear and THE end.", "apple pear and end"),
        ("Theater of Anne", "theater of anne"),  # articles only as whole words
        ("  \tA\n", ""),
        ("", ""),
        ("U.S. $5,000", "us 5000"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_squad_exact_and_f1_hand_worked() -> None:
    assert squad_exact("The Eiffel Tower", "eiffel tower.") == 1.0
    assert squad_exact("Eiffel Tower", "the tower") == 0.0
    # gold "the cat sat on the mat" -> [cat, sat, on, mat] (4 tokens); pred "cat on a mat" -> [cat, on, mat] (3)
    # common = 3 -> precision 3/3 = 1, recall 3/4 -> F1 = 2 * 1 * 0.75 / 1.75 = 6/7
    assert squad_f1("the cat sat on the mat", "cat on a mat") == pytest.approx(6 / 7)
    # gold [denver, broncos], pred [broncos, team]: common 1 -> P 1/2, R 1/2, F1 1/2
    assert squad_f1("Denver Broncos", "the Broncos team") == pytest.approx(0.5)
    # repeated tokens count with multiplicity: gold [new, york, new, york], pred [new, york]
    # common = min counts = 2 -> P 2/2, R 2/4 -> F1 = 2 * 0.5 / 1.5 = 2/3
    assert squad_f1("New York, New York", "new york") == pytest.approx(2 / 3)
    assert squad_f1("Paris", "London") == 0.0
    # the empty rule: F1 = 1 if both are empty (after normalisation), else 0
    assert squad_f1("", "") == 1.0
    assert squad_f1("the", "") == 1.0  # "the" normalises to nothing
    assert squad_f1("", "Paris") == 0.0
    assert squad_f1("Paris", "") == 0.0
    assert squad_exact("", "") == 1.0 and squad_exact("", "Paris") == 0.0


def test_squad_metrics_v1_takes_max_over_golds() -> None:
    golds = {"q1": ["Denver Broncos", "Broncos", "the Denver team"], "q2": ["the cat sat on the mat", "a dog"]}
    preds = {"q1": "Broncos", "q2": "cat on a mat"}
    # q1: exact on the 2nd gold -> EM 1, F1 1.  q2: EM 0; F1 max(6/7, 0) = 6/7
    # EM = 100 * 1/2 = 50; F1 = 100 * (1 + 6/7) / 2 = 650/7
    m = squad_metrics(golds, preds)
    assert m == {"exact_match": 50.0, "f1": pytest.approx(650 / 7), "total": 2}  # no HasAns/NoAns keys for v1


def test_squad_metrics_v2_split() -> None:
    golds = {
        "q1": ["Denver Broncos", "Broncos"],  # pred "Broncos": EM 1, F1 1            (HasAns)
        "q2": ["the cat sat on the mat"],  # pred "cat on a mat": EM 0, F1 6/7     (HasAns)
        "q3": [],  # no answer, pred "": both empty -> EM 1, F1 1                   (NoAns)
        "q4": [""],  # no answer, pred "Paris": one empty -> EM 0, F1 0             (NoAns)
        "q5": ["Paris"],  # missing prediction counts as "": EM 0, F1 0             (HasAns)
    }
    preds = {"q1": "Broncos", "q2": "cat on a mat", "q3": "", "q4": "Paris", "unknown": "ignored"}
    m = squad_metrics(golds, preds)
    # all:    EM 100 * 2/5 = 40;         F1 100 * (1 + 6/7 + 1) / 5 = 400/7
    # HasAns: EM 100 * 1/3;              F1 100 * (1 + 6/7) / 3 = 1300/21
    # NoAns:  EM 100 * 1/2 = 50;         F1 50
    assert m == {
        "exact_match": pytest.approx(40.0),
        "f1": pytest.approx(400 / 7),
        "total": 5,
        "HasAns_exact": pytest.approx(100 / 3),
        "HasAns_f1": pytest.approx(1300 / 21),
        "HasAns_total": 3,
        "NoAns_exact": 50.0,
        "NoAns_f1": 50.0,
        "NoAns_total": 2,
    }
    json.dumps(m, allow_nan=False)


def test_squad_metrics_all_unanswerable_and_bad_input() -> None:
    m = squad_metrics({"q1": [], "q2": [""]}, {"q1": "", "q2": ""})
    assert m["exact_match"] == 100.0 and m["f1"] == 100.0 and m["NoAns_total"] == 2
    assert m["HasAns_total"] == 0 and m["HasAns_exact"] == 0.0 and m["HasAns_f1"] == 0.0
    with pytest.raises(BertkitError, match="no questions"):
        squad_metrics({}, {})
    with pytest.raises(BertkitError, match="must be a list of strings"):
        squad_metrics({"q1": "Paris"}, {"q1": "Paris"})  # type: ignore[dict-item]
