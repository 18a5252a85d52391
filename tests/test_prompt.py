"""PET-style zero-shot with the MLM head: scores against transformers' BertForMaskedLM, multi-token words, errors."""

from __future__ import annotations

import json

import pytest
import torch

import bertkit
from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.heads import BertForMaskedLM
from bertkit.prompt import Prompt
from tests.conftest import run_cli

TEMPLATE = "{text} . the movie was [MASK] !"


def classifier(path, verbalizer, calibrate=False, template=TEMPLATE):
    return bertkit.prompt_classifier(template, verbalizer, model=path, calibrate=calibrate, batch_size=2)


def test_single_word_scores_equal_transformers_fill_mask(tiny_mlm_dir):
    import transformers

    texts = ["good fun", "the plot was a boring story and the actor was awful"]
    ours = classifier(tiny_mlm_dir, {"pos": ["great", "good"], "neg": ["awful"]}).word_log_probs(texts)
    model = transformers.BertForMaskedLM.from_pretrained(str(tiny_mlm_dir)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_mlm_dir))
    batch = tokenizer([TEMPLATE.format(text=t) for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    probs = logits[batch["input_ids"] == tokenizer.mask_token_id].softmax(-1)  # (texts, vocab): fill-mask's scores
    ids = tokenizer.convert_tokens_to_ids(["great", "good", "awful"])
    torch.testing.assert_close(ours.exp(), probs[:, ids], atol=1e-5, rtol=1e-4)


def test_multi_token_words_are_mean_log_probs_batched(tiny_mlm_dir):
    prompt = classifier(tiny_mlm_dir, {"pos": ["good fun"], "neg": ["bad"]})
    texts = ["good movie", "an awful film", "john smith lives in new york"]
    batched = prompt.word_log_probs(texts)
    model, tokenizer = prompt.model, prompt.tokenizer
    for row, text in enumerate(texts):  # one text at a time, the two masks read by hand
        ids = tokenizer.encode(f"{text} . the movie was [MASK] [MASK] !").input_ids
        with torch.no_grad():
            log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        masks = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
        good, fun = tokenizer.encode("good fun").input_ids[1:3]
        expected = (log_probs[masks[0], good] + log_probs[masks[1], fun]) / 2
        assert batched[row, 0].item() == pytest.approx(expected.item(), abs=1e-5)


def test_chinese_label_words_are_one_mask_per_character(tiny_mlm_dir):
    prompt = classifier(tiny_mlm_dir, {"pos": ["很好"], "neg": ["不"]}, template="{text}。[MASK]")
    assert [len(pieces) for _, pieces in prompt.words] == [2, 1]
    assert len(prompt.predict(["我喜欢电影"])) == 1


def test_predict_and_calibration(tiny_mlm_dir):
    plain = classifier(tiny_mlm_dir, {"pos": ["good"], "neg": ["bad"]})
    calibrated = classifier(tiny_mlm_dir, {"pos": ["good"], "neg": ["bad"]}, calibrate=True)
    [p], [c], [free] = plain.predict(["great film"]), calibrated.predict(["great film"]), plain.predict(["N/A"])
    assert set(p) == {"label", "score", "scores"} and sum(p["scores"].values()) == pytest.approx(1)
    ratio = {k: p["scores"][k] / free["scores"][k] for k in ("pos", "neg")}
    assert c["scores"]["pos"] == pytest.approx(ratio["pos"] / sum(ratio.values()), abs=1e-5)
    assert calibrated.predict(["N/A"])[0]["scores"]["pos"] == pytest.approx(0.5, abs=1e-5)
    metrics = plain.evaluate([{"text": "great film", "label": "pos"}, {"text": "bad plot", "label": "neg"}])
    assert set(metrics) >= {"accuracy", "macro_f1", "per_class"}


def test_pair_template(tiny_mlm_dir):
    prompt = classifier(tiny_mlm_dir, {"same": ["good"], "other": ["bad"]}, template="{text} ? [MASK] , {pair}")
    assert len(prompt.predict([("good movie", "great film")])) == 1
    with pytest.raises(BertkitError, match="holds \\{pair\\}; give \\(text, pair\\) tuples"):
        prompt.predict(["good movie"])


@pytest.mark.parametrize("template, verbalizer, message", [
    ("{text} it was good", {"pos": ["good"], "neg": ["bad"]}, "exactly one \\[MASK\\]"),
    ("it was [MASK]", {"pos": ["good"], "neg": ["bad"]}, "must hold \\{text\\}"),
    (TEMPLATE, {"pos": ["good"], "neg": ["zebra"]}, "label 'neg': the word 'zebra' is not in the vocabulary"),
    (TEMPLATE, {"pos": ["good"], "neg": []}, "label 'neg' has no verbalizer word"),
    (TEMPLATE, {"pos": ["good"]}, "at least two labels"),
])
def test_prompt_errors(tiny_mlm_dir, template, verbalizer, message):
    with pytest.raises(BertkitError, match=message):
        classifier(tiny_mlm_dir, verbalizer, template=template)


def test_a_model_without_an_mlm_head_is_refused(tiny_model_dir):
    with pytest.raises(BertkitError, match="without a masked-LM head"):
        classifier(tiny_model_dir, {"pos": ["good"], "neg": ["bad"]})


def test_prompt_from_a_file_and_a_bad_one(tmp_path):
    path = tmp_path / "prompt.json"
    path.write_text('{"template": "{text} it was [MASK] .", "verbalizer": {"pos": "good", "neg": ["bad", "awful"]}}')
    assert Prompt.load(path) == Prompt("{text} it was [MASK] .", {"pos": ["good"], "neg": ["bad", "awful"]})
    with pytest.raises(BertkitError, match="a prompt is"):
        Prompt.load({"template": "{text} [MASK]"})
    with pytest.raises(BertkitError, match="label 'neg': the verbalizer gives a word or a list of words"):
        Prompt.make("{text} [MASK]", {"pos": "good", "neg": 3})


def test_cli_predict_with_a_prompt(tiny_mlm_dir, tmp_path, capsys):
    path = tmp_path / "prompt.json"
    path.write_text(json.dumps({"template": TEMPLATE, "verbalizer": {"pos": "good", "neg": "bad"}}), encoding="utf-8")
    code, out, err = run_cli(["predict", "--model", str(tiny_mlm_dir), "--prompt", str(path), "--calibrate",
                              "good fun", "bad plot"], capsys)
    assert code == 0, err
    expected = classifier(tiny_mlm_dir, {"pos": ["good"], "neg": ["bad"]}, calibrate=True).predict(["good fun", "bad plot"])
    for number, (line, prediction) in enumerate(zip(out.splitlines(), expected), start=1):
        assert json.loads(line)["id"] == number
        assert json.loads(line)["scores"] == pytest.approx(prediction["scores"], abs=1e-6)
    code, _, err = run_cli(["predict", "--model", str(tiny_mlm_dir), "--calibrate", "good fun"], capsys)
    assert code == 2 and "--calibrate goes with --prompt" in err


ROWS = [{"text": "good fun", "label": "pos"}, {"text": "great film", "label": "pos"},
        {"text": "awful plot", "label": "neg"}, {"text": "a boring story", "label": "neg"}]
VERBALIZER = {"pos": ["good fun", "great"], "neg": ["bad"]}  # pos answers with two pieces, neg with one


def test_prompt_features_label_the_masks_with_the_first_word(tiny_mlm_dir):
    from bertkit.tasks import PromptTask
    from bertkit.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(tiny_mlm_dir)
    task = PromptTask({"template": TEMPLATE, "verbalizer": VERBALIZER})
    examples = task.examples(ROWS, "train")
    features = task.features(examples, tokenizer, None)
    good, fun = tokenizer.encode("good fun").input_ids[1:3]
    for feature, example in zip(features, examples):
        labelled = {i: t for i, t in enumerate(feature["labels"]) if t != -100}
        masks = [i for i, t in enumerate(feature["input_ids"]) if t == tokenizer.mask_token_id]
        assert sorted(labelled) == masks
        expected = [good, fun] if example.label == "pos" else tokenizer.encode("bad").input_ids[1:2]
        assert [labelled[i] for i in masks] == expected


def test_prompt_fine_tuning_learns_the_answer_and_predicts_from_its_directory(tiny_mlm_dir, tmp_path):
    out = tmp_path / "prompt"
    before = classifier(tiny_mlm_dir, VERBALIZER).word_log_probs([r["text"] for r in ROWS])
    model = bertkit.finetune("prompt", train=ROWS * 2, dev=ROWS, out=out, model=tiny_mlm_dir, template=TEMPLATE,
                             verbalizer=VERBALIZER, epochs=3, lr=3e-3, batch_size=4, seed=0)
    losses = [epoch["train_loss"] for epoch in model.history.epochs]
    assert losses == sorted(losses, reverse=True) and "accuracy" in model.history.epochs[-1]["dev"]
    after = classifier(out, VERBALIZER).word_log_probs([r["text"] for r in ROWS])
    gold = torch.tensor([0 if r["label"] == "pos" else 2 for r in ROWS])  # columns: good fun, great, bad
    # The MLM loss trains the gold word's pieces at the masks (on this random model, the label prior first).
    assert (after[torch.arange(4), gold] > before[torch.arange(4), gold]).all()
    loaded = bertkit.load(out)
    assert loaded.task == "prompt"
    assert loaded.predict(["good fun"]) == classifier(out, VERBALIZER).predict(["good fun"])
    assert loaded.evaluate(ROWS)["accuracy"] == model.history.epochs[-1]["dev"]["accuracy"]


def test_cli_finetune_prompt_and_its_errors(tiny_mlm_dir, tiny_model_dir, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    words = tmp_path / "words.json"
    words.write_text(json.dumps(VERBALIZER), encoding="utf-8")
    out = tmp_path / "cli"
    args = ["finetune", "prompt", "--train", str(train), "--out", str(out), "--template", TEMPLATE,
            "--verbalizer", str(words), "--epochs", "1", "--batch-size", "2"]
    code, _, err = run_cli(args + ["--model", str(tiny_mlm_dir)], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["bertkit"]["verbalizer"] == VERBALIZER
    code, text, err = run_cli(["predict", "--model", str(out), "good fun"], capsys)
    assert code == 0 and set(json.loads(text)) == {"id", "label", "score", "scores"}
    code, _, err = run_cli(args + ["--model", str(tiny_model_dir), "--overwrite"], capsys)
    assert code == 2 and "without a pre-trained MLM head" in err
    words.write_text(json.dumps({"pos": "good", "other": "bad"}), encoding="utf-8")
    code, _, err = run_cli(args + ["--model", str(tiny_mlm_dir), "--overwrite"], capsys)
    assert code == 2 and err.strip() == "bertkit: error: label 'neg' has no verbalizer word"
    code, _, err = run_cli(["finetune", "prompt", "--train", str(train), "--out", str(out), "--overwrite"], capsys)
    assert code == 2 and "needs a template and a verbalizer" in err


def test_masked_lm_scores_chosen_positions_as_the_full_projection_does():
    """Prompt scoring (positions=) and prompt training (masked_only=) project only the masks: the same rows
    and the same loss as the projection of every position."""
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    model = BertForMaskedLM(config).eval()
    ids = torch.randint(5, 50, (3, 10))
    attention = torch.ones_like(ids)
    attention[1, 7:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[2, 1], labels[2, 8] = 7, 9, 3, 4
    full = model(ids, attention, labels=labels)
    masked = model(ids, attention, labels=labels, masked_only=True)
    assert masked.logits.shape == (4, 50)
    assert torch.allclose(masked.logits, full.logits[labels != -100], atol=1e-5)
    assert torch.allclose(masked.loss, full.loss, atol=1e-6)
    assert torch.equal(model(ids, attention, positions=labels != -100).logits, masked.logits)
