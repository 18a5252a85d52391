"""SetFit few-shot and sentence-encoder zero-shot on tiny models: sampling, the folded head, API, CLI, errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

import bertkit
from bertkit.checkpoint import load_pretrained
from bertkit.data.classify import ClassifyExample
from bertkit.embeddings import encode
from bertkit.errors import BertkitError
from bertkit.inference import Predictor
from bertkit.setfit import fit_head, sample_pairs, sample_per_class
from tests.conftest import run_cli

POSITIVE = ["good movie", "great film", "a fun story", "love the actor", "great plot", "good fun"]
NEGATIVE = ["bad movie", "awful film", "a boring story", "hate the actor", "awful plot", "bad boring"]
ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


def test_pair_budget_is_fixed_and_balanced_whatever_the_class_count():
    for classes in (2, 10):
        labels = [f"c{i % classes}" for i in range(5 * classes)]
        pairs = sample_pairs(labels, 100, seed=0)
        assert len(pairs) == 100
        assert Counter(target for _, _, target in pairs) == {1.0: 50, 0.0: 50}
        for i, j, target in pairs:
            assert i != j and (labels[i] == labels[j]) == (target == 1.0)
    assert sample_pairs(labels, 20, seed=3) == sample_pairs(labels, 20, seed=3)


def test_k_per_class_sampler_and_its_error():
    examples = [ClassifyExample(f"t{i}", None, "pos" if i < 5 else "neg", i) for i in range(8)]
    chosen = sample_per_class(examples, 3, seed=0)
    assert Counter(e.label for e in chosen) == {"pos": 3, "neg": 3}
    assert sample_per_class(examples, 3, seed=0) == chosen and sample_per_class(examples, 3, seed=1) != chosen
    with pytest.raises(BertkitError, match="K=4 examples per class, but label 'neg' has only 3"):
        sample_per_class(examples, 4, seed=0)


@pytest.mark.parametrize("num_labels", [2, 3])
def test_folded_head_equals_sklearn_probabilities(num_labels):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    y = [i % num_labels for i in range(30)]
    weight, bias = fit_head(x, y, num_labels, c=1.0, seed=0)
    probs = torch.softmax(torch.from_numpy(x @ weight.T + bias), dim=-1).numpy()
    expected = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit(x, y).predict_proba(x)
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_setfit_trains_a_classifier_that_predicts_from_the_tuned_embeddings(tiny_model_dir, tmp_path):
    out = tmp_path / "setfit"
    clf = bertkit.finetune("setfit", train=ROWS, dev=ROWS, out=out, model=tiny_model_dir, num_pairs=32, batch_size=8,
                           lr=1e-3, seed=0)
    epoch = clf.history.epochs[0]
    assert epoch["pairs"] == 32 and len(clf.history.steps) == 4 and 0 <= epoch["dev"]["accuracy"] <= 1
    assert bertkit.load(out).history.best == clf.history.best  # metrics.json records the run
    model, tokenizer, _ = load_pretrained(out)
    base, _, _ = load_pretrained(tiny_model_dir, "BertModel")
    assert not torch.equal(model.bert.layers[0].ffn.up.weight, base.layers[0].ffn.up.weight)  # the encoder was tuned
    # The head is a linear layer over the normalised mean embedding, whatever batch the text sits in.
    texts = POSITIVE[:2] + NEGATIVE[:1]
    expected = torch.softmax(model.classifier(torch.from_numpy(encode(model, tokenizer, texts))), dim=-1)
    predictions = clf.predict(texts)
    for row, prediction in zip(expected.tolist(), predictions):
        assert set(prediction) == {"label", "score", "scores"}
        assert [prediction["scores"][model.config.id2label[i]] for i in range(2)] == pytest.approx(row, abs=1e-5)
    assert clf.evaluate(ROWS)["accuracy"] == epoch["dev"]["accuracy"]
    with pytest.raises(BertkitError, match="finetune setfit has no option 'pairs'"):
        bertkit.finetune("setfit", train=ROWS, out=tmp_path / "x", model=tiny_model_dir, pairs=8)
    with pytest.raises(BertkitError, match="no --multi-label"):
        bertkit.finetune("setfit", train=ROWS, out=tmp_path / "x", model=tiny_model_dir, multi_label=True)


def test_setfit_model_exports_to_one_onnx_graph(tiny_model_dir, tmp_path):
    from bertkit.export import export_onnx

    out = tmp_path / "setfit"
    bertkit.finetune("setfit", train=ROWS, out=out, model=tiny_model_dir, num_pairs=8, seed=0)
    result = export_onnx(out, None)
    assert result.max_abs_diff < 1e-4
    texts = ["good movie", "the plot was boring"]
    torch_predictions = bertkit.load(out).predict(texts)
    for ours, theirs in zip(bertkit.load(out, backend="onnx").predict(texts), torch_predictions):
        assert ours["label"] == theirs["label"] and ours["score"] == pytest.approx(theirs["score"], abs=1e-4)


def test_setfit_on_a_chinese_checkpoint(tiny_model_dir, tmp_path):
    path = tmp_path / "zh.csv"
    path.write_text("text,label\n我很喜欢电影,pos\n她喜欢上海,pos\n我不喜欢电影,neg\n他不喜欢日报,neg\n", encoding="utf-8")
    clf = bertkit.finetune("setfit", train=path, dev=path, out=tmp_path / "zh", model=tiny_model_dir, num_pairs=8, seed=0)
    assert clf.history.epochs[0]["examples"] == 4 and "accuracy" in clf.history.epochs[0]["dev"]


def test_cli_setfit_with_k_and_its_errors(tiny_model_dir, train_file, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["finetune", "setfit", "--train", str(train_file), "--out", str(out), "--model", str(tiny_model_dir),
            "--num-pairs", "8", "--k", "4"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "SetFit on 8 examples, 8 pairs" in err
    code, out_text, err = run_cli(["predict", "--model", str(out), "good movie"], capsys)
    assert code == 0 and set(json.loads(out_text)) == {"id", "label", "score", "scores"}
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--overwrite" in err and "--resume" not in err
    code, _, err = run_cli(args[:-1] + ["7", "--overwrite"], capsys)
    assert code == 2 and err.strip() == "bertkit: error: K=7 examples per class, but label 'neg' has only 6"
    code, _, err = run_cli(args[:-3] + ["0", "--overwrite"], capsys)
    assert code == 2 and "num_pairs (--num-pairs) must be at least 2" in err


def test_zeroshot_scores_are_softmaxed_cosines_to_the_descriptions(tiny_model_dir, tmp_path, capsys):
    descriptions = {"pos": "a good fun movie", "neg": "an awful boring film"}
    clf = bertkit.zeroshot(descriptions, out=tmp_path / "api", model=tiny_model_dir, temperature=0.5)
    texts = ["great plot", "bad story"]
    encoder = clf.model
    text_vectors, label_vectors = encode(encoder, clf.tokenizer, texts), encode(encoder, clf.tokenizer, list(descriptions.values()))
    expected = torch.softmax(torch.from_numpy(text_vectors @ label_vectors.T) / 0.5, dim=-1)
    for row, prediction in zip(expected.tolist(), clf.predict(texts)):
        assert [prediction["scores"]["pos"], prediction["scores"]["neg"]] == pytest.approx(row, abs=1e-5)
        assert prediction["label"] == ("pos" if row[0] > row[1] else "neg")

    labels_file = tmp_path / "labels.json"
    labels_file.write_text(json.dumps(descriptions), encoding="utf-8")
    out = tmp_path / "zeroshot"
    code, _, err = run_cli(["finetune", "zeroshot", "--labels", str(labels_file), "--out", str(out),
                            "--model", str(tiny_model_dir), "--temperature", "0.5"], capsys)
    assert code == 0, err
    predictor = Predictor(out)
    for row, prediction in zip(expected.tolist(), predictor.predict(predictor.from_texts(texts))):
        assert [prediction["scores"]["pos"], prediction["scores"]["neg"]] == pytest.approx(row, abs=1e-5)


@pytest.mark.parametrize("labels, message", [
    ({"pos": "good"}, "at least two labels"),
    ({"pos": "good", "neg": ""}, "label 'neg': the description must be non-empty text"),
    (["pos", "neg"], "at least two labels"),
])
def test_zeroshot_label_errors(tiny_model_dir, tmp_path, labels, message):
    with pytest.raises(BertkitError, match=message):
        bertkit.zeroshot(labels, out=tmp_path / "z", model=tiny_model_dir)
    assert not (tmp_path / "z").exists()


def test_zeroshot_bad_file_and_temperature(tiny_model_dir, tmp_path):
    path = tmp_path / "labels.json"
    path.write_text("pos: good", encoding="utf-8")
    with pytest.raises(BertkitError, match="labels.json"):
        bertkit.zeroshot(path, out=tmp_path / "z", model=tiny_model_dir)
    with pytest.raises(BertkitError, match="temperature .* must be above 0"):
        bertkit.zeroshot({"a": "x", "b": "y"}, out=tmp_path / "z", model=tiny_model_dir, temperature=0)
