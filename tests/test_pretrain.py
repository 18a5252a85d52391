"""`bertkit pretrain` end to end on tiny corpora: outputs, transformers parity, resume, fine-tuning, bad input."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from bertkit.cli import main
from tests.conftest import run_cli
from benchmarks.mlm_vs_bigram import mlm_against_bigram
from bertkit.pretraining import PretrainSettings, pretrain
from bertkit.trainer import Trainer, TrainConfig


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, english_texts, chinese_texts):
    """Real text, one sentence per line, a blank line between documents of 5 lines."""
    lines = [t[:200] for t in english_texts[:60] + chinese_texts[:60]]
    documents = ["\n".join(lines[i : i + 5]) for i in range(0, len(lines), 5)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return path


def tiny(tmp_path, corpus, tokenizer=None, **train) -> PretrainSettings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                  "intermediate_size": 64, "max_position_embeddings": 64}))
    options = {"epochs": 1, "batch_size": 8, "lr": 1e-3, "bf16": False, "max_steps": 6, "save_every": 3, **train}
    return PretrainSettings(corpus=[str(corpus)], out=str(tmp_path / "out"), vocab_size=None if tokenizer else 400,
                            tokenizer=tokenizer, config=str(config), max_seq_len=32, train=TrainConfig(**options))


def test_output_loads_in_transformers_with_the_same_logits(tmp_path, corpus):
    history = pretrain(tiny(tmp_path, corpus))
    out = tmp_path / "out"
    assert {"mlm_accuracy", "nsp_accuracy"} <= set(history.epochs[-1]["dev"])
    for name in ("config.json", "model.safetensors", "vocab.txt", "metrics.json", "training_curve.png"):
        assert (out / name).is_file(), name
    from bertkit.checkpoint import load_pretrained

    ours, tokenizer, _ = load_pretrained(out)
    theirs = transformers.BertForPreTraining.from_pretrained(out).eval()
    batch = tokenizer(["the news today", "我在北京工作"], ["more text follows", "很好"])
    with torch.no_grad():
        mine = ours.eval()(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        reference = theirs(**batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(mine.mlm_logits[real], reference.prediction_logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine.nsp_logits, reference.seq_relationship_logits, atol=1e-5, rtol=1e-5)


class Interrupted(Exception):
    pass


def test_resume_gives_the_same_losses(tmp_path, corpus, monkeypatch):
    # One vocab for both runs: WordPiece training breaks frequency ties in no fixed order.
    from bertkit.tokenizer import train_tokenizer

    train_tokenizer([corpus], 400).save_pretrained(tmp_path / "vocab")
    vocab = str(tmp_path / "vocab")
    full = pretrain(tiny(tmp_path / "a", corpus, vocab))
    original = Trainer._step

    def step_then_die(self):
        original(self)
        if self.global_step == 4:
            raise Interrupted

    monkeypatch.setattr(Trainer, "_step", step_then_die)
    with pytest.raises(Interrupted):
        pretrain(tiny(tmp_path / "b", corpus, vocab))
    monkeypatch.setattr(Trainer, "_step", original)
    settings = tiny(tmp_path / "b", corpus, vocab)
    settings.resume = True
    resumed = pretrain(settings)
    assert [s["step"] for s in resumed.steps] == [s["step"] for s in full.steps] == list(range(1, 7))
    torch.testing.assert_close(torch.tensor([s["loss"] for s in resumed.steps]),
                               torch.tensor([s["loss"] for s in full.steps]), rtol=0, atol=1e-6)


def test_pretrain_then_finetune(tmp_path, corpus, capsys):
    pretrain(tiny(tmp_path, corpus))
    rows = [("the news was good", "pos"), ("the news was bad", "neg")] * 4
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows), encoding="utf-8")
    assert main(["finetune", "classify", "--model", str(tmp_path / "out"), "--train", str(train), "--out",
                 str(tmp_path / "clf"), "--epochs", "1", "--batch-size", "4"]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "clf"), "good news"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("pos", "neg")


def test_whole_word_masking_and_no_nsp_run(tmp_path, corpus):
    settings = tiny(tmp_path, corpus, max_steps=2)
    settings.nsp, settings.whole_word_mask = False, True
    history = pretrain(settings)
    assert "nsp_accuracy" not in history.epochs[-1]["dev"] and "mlm_accuracy" in history.epochs[-1]["dev"]


def run(args, capsys):
    code, _, err = run_cli(args, capsys)
    return code, err


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    cases = {
        "empty.txt": ("\n\n", "empty"),
        "latin1.txt": ("ok line\n\ncaf\xe9\n".encode("latin-1"), "latin1.txt:3: not valid UTF-8"),
        "one_doc.txt": ("one sentence.\nanother sentence.\n", "separate documents with blank lines, or use --no-nsp"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        code, err = run(["pretrain", "--corpus", str(path), "--out", str(out), "--vocab-size", "100", "--steps", "1"], capsys)
        last = err.rstrip("\n").split("\n")[-1]  # progress bars may come first; the error is one line
        assert code == 2 and last.startswith("bertkit: error:") and expected in last, (name, err)
        assert not (out / "model.safetensors").exists()
    good = tmp_path / "good.txt"
    good.write_text("a b c.\n\nd e f.\n", encoding="utf-8")
    code, err = run(["pretrain", "--corpus", str(good), "--out", str(out), "--vocab-size", "3"], capsys)
    assert code == 2 and "vocab" in err.splitlines()[-1], err
    code, err = run(["pretrain", "--corpus", str(good), "--out", str(tmp_path / "none"), "--vocab-size", "100", "--resume"], capsys)
    assert code == 2 and "nothing to resume" in err


def test_bigram_baseline_reads_the_left_neighbour(tmp_path):
    """On text where every character fixes the next one, the bigram table predicts almost every masked
    position whose left neighbour is visible; a model after a few steps cannot yet."""
    cycle = "甲乙丙丁戊己庚辛壬癸"
    documents = ["\n".join(cycle * 3 for _ in range(3)) for _ in range(300)]
    corpus = tmp_path / "cycle.txt"
    corpus.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    settings = tiny(tmp_path, corpus, max_steps=2)
    pretrain(settings)
    result = mlm_against_bigram(settings.out, settings.max_seq_len)
    assert result["masked_positions"] > 40
    # Masked neighbours (15%) and random replacements (1.5%) are what keeps the table from 1.0.
    assert result["bigram_mlm_accuracy"] > 0.75
    assert result["bigram_mlm_loss"] < 1.0 < result["model_mlm_loss"]
    assert result["model_mlm_accuracy"] < 0.5
