"""Sentence embeddings: the sentence-transformers recipe on a real checkpoint, padding invariance, API, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bertkit
from bertkit.embeddings import encode, load_encoder
from bertkit.errors import BertkitError
from tests.conftest import run_cli


def test_default_equals_sentence_transformers_recipe(minilm_dir, english_texts):
    import transformers

    texts = english_texts[95:105]  # long news paragraphs and short reviews in one batch
    ours = bertkit.embed(texts, minilm_dir, batch_size=4)

    reference = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    batch = hf_tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    assert int(batch["attention_mask"].sum(1).min()) < batch["attention_mask"].shape[1]  # the batch has padding
    with torch.no_grad():
        out = reference(**batch, output_hidden_states=True)
    mask = batch["attention_mask"][..., None].float()

    def mean_pool(hidden):
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    expected = torch.nn.functional.normalize(mean_pool(out.last_hidden_state), dim=-1).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    lower = bertkit.embed(texts, minilm_dir, layers="-1,-3", normalize=False)
    expected_lower = mean_pool((out.hidden_states[-1] + out.hidden_states[-3]) / 2).numpy()
    np.testing.assert_allclose(lower, expected_lower, atol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_embeddings_do_not_depend_on_padding(tiny_model_dir, pooling):
    encoder, tokenizer = load_encoder(tiny_model_dir)
    short = "good movie"
    longer = ["the plot was a boring story and the actor was awful", "john smith lives in new york and works at google"]
    alone = encode(encoder, tokenizer, [short], pooling=pooling, normalize=False)
    batched = encode(encoder, tokenizer, longer + [short], pooling=pooling, normalize=False, batch_size=3)
    np.testing.assert_allclose(batched[2], alone[0], atol=1e-5)
    assert not np.allclose(batched[0], alone[0])  # the texts really differ
    # Several layers go through the same padded states.
    lower_alone = encode(encoder, tokenizer, [short], pooling=pooling, layers=(0, -1))
    lower_batched = encode(encoder, tokenizer, longer + [short], pooling=pooling, layers=(0, -1), batch_size=3)
    np.testing.assert_allclose(lower_batched[2], lower_alone[0], atol=1e-5)


def test_finetuned_model_embeds_with_its_encoder(tiny_model_dir, tmp_path):
    rows = [{"text": t, "label": label} for t, label in [("good movie", "pos"), ("bad movie", "neg")] * 2]
    clf = bertkit.finetune("classify", train=rows, out=tmp_path / "clf", model=tiny_model_dir, epochs=1, batch_size=2)
    encoder, tokenizer = load_encoder(tmp_path / "clf")
    np.testing.assert_allclose(clf.embed(["good fun", "bad plot"], pooling="cls"),
                               encode(encoder, tokenizer, ["good fun", "bad plot"], pooling="cls"), atol=1e-6)
    with pytest.raises(BertkitError, match="embed has no option 'pool'"):
        clf.embed(["good"], pool="mean")


def test_bad_pooling_and_layers_are_one_line_errors(tiny_model_dir):
    encoder, tokenizer = load_encoder(tiny_model_dir)
    with pytest.raises(BertkitError, match="pooling .* must be one of"):
        encode(encoder, tokenizer, ["good"], pooling="sum")
    with pytest.raises(BertkitError, match="layer -9 does not exist"):
        encode(encoder, tokenizer, ["good"], layers=(-9,))
    with pytest.raises(BertkitError, match="comma-separated"):
        encode(encoder, tokenizer, ["good"], layers="last")
    with pytest.raises(BertkitError, match="list of strings"):
        encode(encoder, tokenizer, "good")


def test_cli_embed_writes_npy_and_jsonl_and_refuses_to_overwrite(tiny_model_dir, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("good movie\nbad plot\n", encoding="utf-8")
    npy = tmp_path / "out.npy"
    code, _, err = run_cli(["embed", "--model", str(tiny_model_dir), "--input", str(texts), "--output", str(npy)], capsys)
    assert code == 0, err
    vectors = np.load(npy)
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    code, _, err = run_cli(["embed", "--model", str(tiny_model_dir), "--input", str(texts), "--output", str(npy)], capsys)
    assert code == 2 and "--overwrite" in err
    jsonl = tmp_path / "out.jsonl"
    code, _, err = run_cli(["embed", "--model", str(tiny_model_dir), "--input", str(texts), "--output", str(jsonl),
                            "--no-normalize", "--pooling", "cls", "--layers=-1,-2"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [row["id"] for row in rows] == [1, 2] and len(rows[0]["embedding"]) == 32
    encoder, tokenizer = load_encoder(tiny_model_dir)
    expected = encode(encoder, tokenizer, ["good movie", "bad plot"], pooling="cls", normalize=False, layers=(-1, -2))
    np.testing.assert_allclose(np.array([row["embedding"] for row in rows]), expected, atol=1e-6)
    code, _, err = run_cli(["embed", "--model", str(tiny_model_dir), "--input", str(texts), "--output",
                            str(tmp_path / "out.csv")], capsys)
    assert code == 2 and err.strip().endswith("the output must end in .npy or .jsonl")
    assert not list(tmp_path.glob(".bertkit-tmp-*"))


def test_cli_similar_ranks_the_corpus(tiny_model_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the plot was boring\ngood movie\ngood movie !\n", encoding="utf-8")
    code, out, err = run_cli(["similar", "--model", str(tiny_model_dir), "--corpus", str(corpus), "good movie", "--top", "2"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and rows[0]["text"] == "good movie" and rows[0]["id"] == 2
    assert rows[0]["score"] == pytest.approx(1.0, abs=1e-5) and rows[0]["score"] >= rows[1]["score"]
    code, _, err = run_cli(["similar", "--model", str(tiny_model_dir), "--corpus", str(corpus), "good", "--top", "0"], capsys)
    assert code == 2 and "--top must be at least 1" in err
