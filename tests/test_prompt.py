"""PET-style zero-shot with the MLM head: scores against transformers' BertForMaskedLM, multi-token words, errors."""

from __future__ import annotations

import pytest
import torch

from bertkit.checkpoint import load_pretrained, save_model
from bertkit.errors import BertkitError
from bertkit.heads import BertForMaskedLM
from bertkit.prompt import Prompt, PromptClassifier

TEMPLATE = "{text} . the movie was [MASK] !"


@pytest.fixture(scope="module")
def tiny_mlm_dir(tiny_model_dir, tmp_path_factory):
    config = load_pretrained(tiny_model_dir, "BertModel")[0].config
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny_mlm")
    save_model(BertForMaskedLM(config), path)
    load_pretrained(tiny_model_dir)[1].save_pretrained(path)
    return path


def classifier(path, verbalizer, calibrate=False, template=TEMPLATE):
    model, tokenizer, _ = load_pretrained(path)
    return PromptClassifier(model, tokenizer, Prompt(template, verbalizer), calibrate=calibrate, batch_size=2)


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
    texts = ["good movie", "an awful film"]
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


def test_predict_and_calibration(tiny_mlm_dir):
    plain = classifier(tiny_mlm_dir, {"pos": ["good"], "neg": ["bad"]})
    calibrated = classifier(tiny_mlm_dir, {"pos": ["good"], "neg": ["bad"]}, calibrate=True)
    [p], [c], [free] = plain.predict(["great film"]), calibrated.predict(["great film"]), plain.predict(["N/A"])
    assert set(p) == {"label", "score", "scores"} and sum(p["scores"].values()) == pytest.approx(1)
    ratio = {k: p["scores"][k] / free["scores"][k] for k in ("pos", "neg")}
    assert c["scores"]["pos"] == pytest.approx(ratio["pos"] / sum(ratio.values()), abs=1e-5)
    assert calibrated.predict(["N/A"])[0]["scores"]["pos"] == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("template, verbalizer, message", [
    ("{text} it was good", {"pos": ["good"], "neg": ["bad"]}, "exactly one \\[MASK\\]"),
    ("it was [MASK]", {"pos": ["good"], "neg": ["bad"]}, "must hold \\{text\\}"),
    (TEMPLATE, {"pos": ["good"], "neg": ["zebra"]}, "label 'neg': the word 'zebra' is not in the vocabulary"),
    (TEMPLATE, {"pos": ["good"], "neg": []}, "label 'neg' has no verbalizer word"),
])
def test_prompt_errors(tiny_mlm_dir, template, verbalizer, message):
    with pytest.raises(BertkitError, match=message):
        classifier(tiny_mlm_dir, verbalizer, template=template)


def test_prompt_from_a_file_and_a_bad_one(tmp_path):
    path = tmp_path / "prompt.json"
    path.write_text('{"template": "{text} it was [MASK] .", "verbalizer": {"pos": "good", "neg": ["bad", "awful"]}}')
    assert Prompt.load(path) == Prompt("{text} it was [MASK] .", {"pos": ["good"], "neg": ["bad", "awful"]})
    with pytest.raises(BertkitError, match="a prompt is"):
        Prompt.load({"template": "{text} [MASK]"})
