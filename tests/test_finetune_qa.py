"""`bertkit finetune qa` end to end on a tiny synthetic SQuAD file (no real QA data ships offline)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from bertkit.checkpoint import load_pretrained
from bertkit.cli import main
from tests.conftest import run_cli

CONTEXTS = [
    ("john smith lives in paris . he works at google .", [("where does john smith live ?", "paris"), ("who works at google ?", "john smith")]),
    ("the movie was great . the actor was john .", [("what was great ?", "the movie"), ("who was the actor ?", "john")]),
]


def squad(version_2: bool = False) -> dict:
    paragraphs = []
    for c, (context, questions) in enumerate(CONTEXTS):
        qas = [{"id": f"{c}-{q}", "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}
               for q, (question, answer) in enumerate(questions)]
        if version_2:
            qas.append({"id": f"{c}-none", "question": "what does the plot love ?", "answers": [], "is_impossible": True})
        paragraphs.append({"context": context, "qas": qas})
    return {"version": "v2.0" if version_2 else "v1.1", "data": [{"title": "toy", "paragraphs": paragraphs}]}



@pytest.mark.parametrize("version_2", [False, True], ids=["squad1", "squad2"])
def test_finetune_evaluate_predict_and_transformers_parity(version_2, tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "train.json"
    data.write_text(json.dumps(squad(version_2)), encoding="utf-8")
    out = tmp_path / "qa"
    code, _, err = run_cli(["finetune", "qa", "--model", str(tiny_model_dir), "--train", str(data), "--dev", str(data),
                        "--out", str(out), "--epochs", "25", "--batch-size", "4", "--lr", "5e-3",
                        "--max-seq-len", "24", "--doc-stride", "6"], capsys)  # short windows: contexts span several
    assert code == 0, err
    code, stdout, err = run_cli(["evaluate", "--model", str(out), "--data", str(data)], capsys)
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["exact_match"] >= 50 and metrics["f1"] >= metrics["exact_match"]
    assert ("HasAns_exact" in metrics) == version_2

    queries = tmp_path / "q.jsonl"
    context = CONTEXTS[0][0]
    queries.write_text(json.dumps({"question": "where does john smith live ?", "context": context}) + "\n", encoding="utf-8")
    code, stdout, err = run_cli(["predict", "--model", str(out), "--input", str(queries)], capsys)
    assert code == 0, err
    prediction = json.loads(stdout)
    assert set(prediction) >= {"answer", "start", "end", "score"}
    if prediction["answer"]:
        assert context[prediction["start"]:prediction["end"]] == prediction["answer"]

    theirs = transformers.BertForQuestionAnswering.from_pretrained(out).eval()
    ours, tokenizer, _ = load_pretrained(out)
    batch = tokenizer(["who works at google ?"], [context])
    with torch.no_grad():
        mine = ours.eval()(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        reference = theirs(**batch)
    torch.testing.assert_close(mine.start_logits, reference.start_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine.end_logits, reference.end_logits, atol=1e-5, rtol=1e-5)


def test_answer_that_does_not_match_its_context(tiny_model_dir, tmp_path, capsys):
    data = squad()
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 2
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli(["finetune", "qa", "--model", str(tiny_model_dir), "--train", str(path), "--out", str(out)], capsys)
    assert code == 2 and "bad.json" in err and "does not match" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_qa_predict_needs_question_and_context(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "train.json"
    data.write_text(json.dumps(squad()), encoding="utf-8")
    out = tmp_path / "qa"
    assert main(["finetune", "qa", "--model", str(tiny_model_dir), "--train", str(data), "--out", str(out), "--epochs", "1"]) == 0
    capsys.readouterr()
    code, _, err = run_cli(["predict", "--model", str(out), "just a text"], capsys)
    assert code == 2 and "question" in err and err.count("\n") == 1
