"""Fine-tuning on a real task gives the same model with the fast (unpadded) path as with the padded reference."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from bertkit.checkpoint import save_model
from bertkit.finetuning import finetune
from bertkit.inference import Predictor
from bertkit.config import BertConfig
from bertkit.model import BertModel
from bertkit.tasks import ClassifyTask
from bertkit.tokenizer import BertTokenizer
from bertkit.trainer import TrainConfig
from tests.conftest import package_file


def polarity_files(tmp_path: Path) -> tuple[Path, Path]:
    """The 200 real labelled movie reviews (Pang & Lee), 150 to train and 50 to test, as JSONL."""
    lines = package_file("gensim", "gensim/test/test_data/pang_lee_polarity.cor").read_text(encoding="cp1252").splitlines()
    rows = [line.split(" ", 1) for line in lines if line.strip()]
    records = [json.dumps({"text": text.strip(), "label": label.removeprefix("__label__")}) + "\n" for label, text in rows]
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(0)).tolist()
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(records[i] for i in order[:150]), encoding="utf-8")
    test.write_text("".join(records[i] for i in order[150:]), encoding="utf-8")
    return train, test


@pytest.fixture(scope="module")
def small_uncased_bert(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, hidden-64 BERT with MiniLM's real 30,522-token uncased vocab, without dropout: the two paths
    draw dropout masks over differently shaped tensors, which would part the runs for a reason that is not math."""
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small_uncased_bert")
    save_model(BertModel(config), path)
    tokenizer.save_pretrained(path)
    return path


def test_finetuning_is_unchanged_by_the_fast_path(small_uncased_bert, tmp_path, monkeypatch):
    train, test = polarity_files(tmp_path)
    settings = TrainConfig(epochs=6, batch_size=16, lr=3e-3, seed=3, bf16=False)
    fast = finetune(ClassifyTask(), train, tmp_path / "fast", small_uncased_bert, train_config=settings)
    fast_predictions = Predictor(tmp_path / "fast").predict(ClassifyTask().read(test))

    # Every BertModel forward, in training and in prediction, now takes the padded reference path.
    monkeypatch.setattr(BertModel, "forward", functools.partialmethod(BertModel.forward, unpad=False))
    reference = finetune(ClassifyTask(), train, tmp_path / "reference", small_uncased_bert, train_config=settings)
    reference_predictions = Predictor(tmp_path / "reference").predict(ClassifyTask().read(test))

    fast_losses = [point["loss"] for point in fast.steps]
    reference_losses = [point["loss"] for point in reference.steps]
    assert len(fast_losses) == len(reference_losses) >= 50
    last_epoch, first_epoch = sum(fast_losses[-10:]) / 10, sum(fast_losses[:10]) / 10
    assert last_epoch < first_epoch - 0.2, "the model must actually learn, or the comparison proves nothing"
    torch.testing.assert_close(torch.tensor(fast_losses), torch.tensor(reference_losses), rtol=1e-3, atol=1e-4)
    assert [p["label"] for p in fast_predictions] == [p["label"] for p in reference_predictions]
    for a, b in zip(fast_predictions, reference_predictions):
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)


def test_the_fast_path_refuses_masks_that_are_not_right_padded():
    from bertkit.errors import BertkitError

    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32)).eval()
    ids = torch.ones(2, 4, dtype=torch.long)
    for mask in ([[0, 1, 1, 1], [1, 1, 1, 1]], [[1, 0, 1, 0], [1, 1, 1, 1]]):
        with pytest.raises(BertkitError, match="right-padded"):
            model(ids, torch.tensor(mask))
    model(ids, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))  # right padding is accepted
