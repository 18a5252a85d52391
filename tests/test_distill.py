"""`bertkit distill` on tiny models: the layer copy, the loss against its definition, a CLI run whose student
predicts and loads in transformers with the same logits, unlabelled text (classify and NER), and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers
from safetensors.torch import load_file
from torch import nn

import bertkit
from bertkit.baselines import PRIOR_KEY
from bertkit.checkpoint import load_pretrained, save_model
from bertkit.config import BertConfig
from bertkit.distillation import DistillationLoss, DistillOptions, layer_map, load_teacher, make_student, soft_loss
from bertkit.errors import BertkitError
from bertkit.model import BertModel
from bertkit.tokenizer import BertTokenizer
from tests.conftest import run_cli

POSITIVE = ["good movie", "great film", "love the plot", "fun story", "the actor was great", "love love love"]
NEGATIVE = ["bad movie", "awful film", "hate the plot", "boring story", "the actor was awful", "hate hate hate"]
ROWS = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
MORE = ["a great great film", "what an awful story", "", "the plot was fun", "hate the actor"]
SENTENCES = [
    (["john", "smith", "lives", "in", "paris", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]),
    (["john", "works", "at", "google", "."], ["B-PER", "O", "O", "B-ORG", "O"]),
    (["smith", "lives", "in", "new", "york", "."], ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"]),
]
QUICK = {"epochs": 1, "batch_size": 4, "lr": 3e-3}


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A 4-layer classifier (hidden 32) fine-tuned briefly on the toy sentiment rows."""
    root = tmp_path_factory.mktemp("distill_teacher")
    tokenizer = BertTokenizer.from_pretrained(tiny_model_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    save_model(BertModel(config), root / "base")
    tokenizer.save_pretrained(root / "base")
    bertkit.finetune("classify", ROWS * 3, out=root / "teacher", model=root / "base", epochs=2, batch_size=8, lr=3e-3)
    return root / "teacher"


@pytest.fixture(scope="module")
def ner_teacher_dir(tmp_path_factory, tiny_model_dir) -> Path:
    rows = [{"tokens": words, "tags": tags} for words, tags in SENTENCES]
    out = tmp_path_factory.mktemp("distill_ner") / "teacher"
    bertkit.finetune("ner", rows * 4, out=out, model=tiny_model_dir, epochs=2, batch_size=4, lr=5e-3)
    return out


def test_layer_map_is_every_other_layer_ending_at_the_top():
    assert layer_map(3, 6) == [1, 3, 5] == [2 * i + 1 for i in range(3)]
    assert layer_map(2, 4) == [1, 3] and layer_map(2, 6) == [2, 5] and layer_map(1, 4) == [3]
    assert layer_map(6, 6) == list(range(6)) and layer_map(4, 6) == [0, 2, 3, 5]


def test_student_layers_are_the_teachers_own(teacher_dir):
    teacher, _, _, _ = load_teacher(teacher_dir)
    student, mapping, _ = make_student(teacher, DistillOptions(), seed=0)  # default: half the layers
    assert mapping == [1, 3] and student.config.num_hidden_layers == 2
    assert type(student) is type(teacher) and student.config.id2label == teacher.config.id2label
    theirs = teacher.state_dict()
    for key, value in student.state_dict().items():
        if key.startswith("bert.layers."):
            index, rest = key.removeprefix("bert.layers.").split(".", 1)
            key = f"bert.layers.{2 * int(index) + 1}.{rest}"  # student layer i is teacher layer 2i+1
        assert torch.equal(value, theirs[key]), key
    assert any(key.startswith("bert.embeddings.") for key in student.state_dict())
    assert {"classifier.weight", "bert.pooler.dense.weight"} <= set(student.state_dict())


def test_soft_loss_equals_its_definition():
    student, teacher, t = [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], [[0.5, 1.5, -1.0], [2.0, 0.0, 1.0]], 2.0

    def softmax(row):
        exps = [math.exp(x / t) for x in row]
        return [e / sum(exps) for e in exps]

    ce = [-sum(p * math.log(q) for p, q in zip(softmax(tr), softmax(sr))) for sr, tr in zip(student, teacher)]
    got = soft_loss(torch.tensor(student), torch.tensor(teacher), t)
    assert got.item() == pytest.approx(t * t * sum(ce) / 2, rel=1e-6)
    masked = soft_loss(torch.tensor([student]), torch.tensor([teacher]), t, mask=torch.tensor([[0, 1]]))
    assert masked.item() == pytest.approx(t * t * ce[1], rel=1e-6)

    def bce(s, p):  # sigmoid targets p, logits s
        q = 1 / (1 + math.exp(-s))
        return -(p * math.log(q) + (1 - p) * math.log(1 - q))

    multi = [sum(bce(s / t, 1 / (1 + math.exp(-tt / t))) for s, tt in zip(sr, tr)) for sr, tr in zip(student, teacher)]
    got = soft_loss(torch.tensor(student), torch.tensor(teacher), t, multi_label=True)
    assert got.item() == pytest.approx(t * t * sum(multi) / 2, rel=1e-6)


class _Fixed(nn.Module):
    """A model whose logits are given: the loss is checked without any network in the way."""

    def __init__(self, logits: list[list[float]], problem_type: str = "single_label_classification") -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))
        self.config = SimpleNamespace(problem_type=problem_type, hidden_size=4)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        return SimpleNamespace(logits=self.logits * 1.0, loss=None)


def test_distillation_loss_mixes_soft_and_hard_as_defined():
    student, teacher = [[1.0, -1.0], [0.0, 2.0]], [[3.0, 0.0], [-1.0, 1.0]]
    t, alpha = 3.0, 0.3
    loss_fn = DistillationLoss(_Fixed(teacher), "classify", DistillOptions(temperature=t, alpha=alpha), [])
    batch = {"input_ids": torch.tensor([[1, 2, 3], [1, 2, 4]]), "attention_mask": torch.ones(2, 3, dtype=torch.long),
             "labels": torch.tensor([1, -100])}  # the second text is unlabelled: soft targets only
    loss, logs = loss_fn(_Fixed(student), batch)

    def log_softmax(row, temperature=1.0):
        norm = math.log(sum(math.exp(x / temperature) for x in row))
        return [x / temperature - norm for x in row]

    soft = t * t * sum(-sum(math.exp(p) * q for p, q in zip(log_softmax(tr, t), log_softmax(sr, t)))
                       for sr, tr in zip(student, teacher)) / 2
    hard = -log_softmax(student[0])[1]
    assert logs["soft"] == pytest.approx(soft, rel=1e-6) and logs["hard"] == pytest.approx(hard, rel=1e-6)
    assert loss.item() == pytest.approx(alpha * soft + (1 - alpha) * hard, rel=1e-6)
    batch["labels"] = torch.tensor([-100, -100])  # no hard label at all: no NaN, the soft part alone
    loss, logs = loss_fn(_Fixed(student), batch)
    assert logs["hard"] == 0 and loss.item() == pytest.approx(alpha * soft, rel=1e-6)


def test_multi_label_hard_loss_skips_unlabelled_rows():
    student, teacher, t = [[1.0, -2.0], [0.5, 0.5]], [[2.0, -1.0], [0.0, 3.0]], 2.0
    multi = "multi_label_classification"
    loss_fn = DistillationLoss(_Fixed(teacher, multi), "classify", DistillOptions(temperature=t, alpha=0.5), [])
    nan = float("nan")
    batch = {"input_ids": torch.tensor([[1, 2], [1, 3]]), "attention_mask": torch.ones(2, 2, dtype=torch.long),
             "labels": torch.tensor([[1.0, 0.0], [nan, nan]])}  # an unlabelled text's labels are NaN
    loss, logs = loss_fn(_Fixed(student, multi), batch)

    def bce(logit, target):
        q = 1 / (1 + math.exp(-logit))
        return -(target * math.log(q) + (1 - target) * math.log(1 - q))

    hard = (bce(student[0][0], 1.0) + bce(student[0][1], 0.0)) / 2
    soft = t * t * sum(bce(s / t, 1 / (1 + math.exp(-tt / t))) for sr, tr in zip(student, teacher)
                       for s, tt in zip(sr, tr)) / 2
    assert logs["hard"] == pytest.approx(hard, rel=1e-6) and logs["soft"] == pytest.approx(soft, rel=1e-6)
    assert loss.item() == pytest.approx(0.5 * soft + 0.5 * hard, rel=1e-6)


def test_cli_student_predicts_and_loads_in_transformers(teacher_dir, tmp_path, capsys):
    train, dev = write_csv(tmp_path / "train.csv", ROWS * 2), write_csv(tmp_path / "dev.csv", ROWS)
    more = tmp_path / "more.txt"
    more.write_text("\n".join(MORE) + "\n", encoding="utf-8")
    out = tmp_path / "small"
    code, _, err = run_cli(["distill", "--teacher", str(teacher_dir), "--train", str(train), "--dev", str(dev),
                            "--unlabeled", str(more), "--out", str(out), "--student-layers", "1", "--temperature", "3",
                            "--alpha", "0.7", "--epochs", "2", "--batch-size", "4", "--lr", "3e-3"], capsys)
    assert code == 0, err
    assert "student in" in err
    report = json.loads((out / "distill.json").read_text())
    assert report["layer_map"] == [3] and report["unlabeled_texts"] == 4 and report["labelled_examples"] == 24
    config, teacher_config = (json.loads((d / "config.json").read_text()) for d in (out, teacher_dir))
    assert config["num_hidden_layers"] == 1 and config["id2label"] == teacher_config["id2label"]
    task_fields = [{k: v for k, v in c["bertkit"].items() if k != PRIOR_KEY} for c in (config, teacher_config)]
    assert task_fields[0] == task_fields[1]  # the teacher's task fields: predict, serve, export read them
    assert config["bertkit"][PRIOR_KEY]["examples"] == 24  # the majority baseline of the student's own training data

    texts = ["great film", "the actor was awful and the plot was boring"]
    code, stdout, err = run_cli(["predict", "--model", str(out), *texts], capsys)
    assert code == 0, err
    predictions = [json.loads(line) for line in stdout.splitlines()]
    assert len(predictions) == 2 and all(p["label"] in ("pos", "neg") for p in predictions)

    theirs = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    ours, tokenizer, _ = load_pretrained(out)
    batch = tokenizer(texts)
    with torch.no_grad():
        mine = ours.eval()(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        reference = theirs(**batch).logits
    torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)
    scores = torch.softmax(mine, -1)[:, [config["label2id"]["neg"], config["label2id"]["pos"]]]
    for prediction, row in zip(predictions, scores.tolist()):
        assert [prediction["scores"]["neg"], prediction["scores"]["pos"]] == pytest.approx(row, abs=1e-5)


def test_fresh_narrow_student_with_hidden_loss_saves_no_projection(teacher_dir, tmp_path):
    student_config = tmp_path / "student.json"
    student_config.write_text(json.dumps({"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                                          "intermediate_size": 32}), encoding="utf-8")
    out = tmp_path / "narrow"
    model = bertkit.distill(teacher_dir, ROWS, out=out, student_config=str(student_config), hidden_loss=True, **QUICK)
    assert {"soft", "hard", "hidden"} <= set(model.history.steps[-1])
    assert not [key for key in load_file(str(out / "model.safetensors")) if "distill" in key]
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 16
    _, info = transformers.BertForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert len(model.predict(["good movie"])) == 1


def test_ner_teacher_labels_unlabelled_text(ner_teacher_dir, tmp_path):
    rows = [{"tokens": words, "tags": tags} for words, tags in SENTENCES]
    more = tmp_path / "more.txt"
    more.write_text("john lives in new york .\nsmith works at google .\n", encoding="utf-8")
    out = tmp_path / "ner-small"
    model = bertkit.distill(ner_teacher_dir, rows, out=out, unlabeled=more, dev=rows, hidden_loss=True, **QUICK)
    assert json.loads((out / "distill.json").read_text())["unlabeled_texts"] == 2
    assert json.loads((out / "config.json").read_text())["bertkit"]["task"] == "ner"
    prediction = model.predict(["john smith lives in paris ."])[0]
    assert len(prediction["tags"]) == 6 and model.evaluate(rows)["f1"] >= 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--student-layers", "0"], "student_layers (--student-layers) must be at least 1, got 0"),
    (["--student-layers", "5"], "--student-layers 5 is more than the teacher's 4 layers; the student must be smaller"),
    (["--student-size", "tiny"], "the student (2 layers of width 128) is larger than the teacher (4 layers of width 32); "
                                 "choose a smaller --student-size or --student-config"),
    (["--student-size", "tiny", "--student-layers", "2"],
     "--student-layers and --student-size do not go together; choose one way to make the student"),
    (["--alpha", "1.5"], "alpha (--alpha) must be at least 0 and at most 1, got 1.5"),
])
def test_bad_student_is_one_line_and_writes_nothing(extra, message, teacher_dir, tmp_path, capsys):
    train, out = write_csv(tmp_path / "train.csv", ROWS), tmp_path / "out"
    code, _, err = run_cli(["distill", "--teacher", str(teacher_dir), "--train", str(train), "--out", str(out), *extra],
                           capsys)
    assert (code, err) == (2, f"bertkit: error: {message}\n")
    assert not out.exists()


def test_teacher_and_data_must_agree(teacher_dir, ner_teacher_dir, tiny_model_dir, tmp_path, capsys):
    csv = write_csv(tmp_path / "train.csv", ROWS)
    conll = tmp_path / "train.conll"
    conll.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(*s)) for s in SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    cases = [
        (ner_teacher_dir, csv, f"the teacher {ner_teacher_dir} is a ner model, but {csv} is classify data; "
                               "distill a classify teacher on it"),
        (teacher_dir, conll, f"the teacher {teacher_dir} is a classify model, but {conll} is ner data; "
                             "distill a ner teacher on it"),
        (tiny_model_dir, csv, f"--teacher needs a fine-tuned model; {tiny_model_dir} is a pre-trained encoder without "
                              "a task head (BertModel); fine-tune it first with `bertkit finetune`"),
    ]
    for teacher, train, message in cases:
        code, _, err = run_cli(["distill", "--teacher", str(teacher), "--train", str(train), "--out", str(out)], capsys)
        assert (code, err) == (2, f"bertkit: error: {message}\n")
    other = write_csv(tmp_path / "other.csv", [{"text": "good movie", "label": "meh"}])
    code, _, err = run_cli(["distill", "--teacher", str(teacher_dir), "--train", str(other), "--out", str(out)], capsys)
    assert code == 2 and "meh" in err and len(err.splitlines()) == 1
    assert not out.exists()
    with pytest.raises(BertkitError, match="^distill has no option 'epoch'"):
        bertkit.distill(teacher_dir, ROWS, out=out, epoch=3)


def test_a_lora_adapter_is_neither_a_teacher_nor_a_continual_start(tiny_model_dir, tmp_path, capsys):
    """distill and --continual share the check that a directory is a plain fine-tuned model (tasks.fine_tuned_task)."""
    adapter = tmp_path / "lora"
    bertkit.finetune("classify", ROWS, out=adapter, model=tiny_model_dir, peft="lora", lora_rank=2, epochs=1)
    capsys.readouterr()
    csv = write_csv(tmp_path / "train.csv", ROWS)
    fold = "is an adapter directory; fold it into a plain model with `bertkit merge` first"
    code, _, err = run_cli(["distill", "--teacher", str(adapter), "--train", str(csv), "--out", str(tmp_path / "s")], capsys)
    assert (code, err) == (2, f"bertkit: error: --teacher: {adapter} {fold}\n")
    code, _, err = run_cli(["finetune", "classify", "--model", str(adapter), "--continual", "--train", str(csv),
                            "--out", str(tmp_path / "c")], capsys)
    assert (code, err) == (2, f"bertkit: error: --continual: {adapter} {fold}\n")
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("which", ["classify", "ner"])
def test_cached_teacher_logits_equal_a_fresh_forward(which, teacher_dir, ner_teacher_dir):
    teacher, tokenizer, task, _ = load_teacher(teacher_dir if which == "classify" else ner_teacher_dir)
    loss_fn = DistillationLoss(teacher, task.name, DistillOptions(), [])
    texts = ["good movie", "the actor was awful and the plot was boring", "john lives in paris"]
    batch = tokenizer(texts)
    inputs = dict(batch)
    with torch.no_grad():
        direct = teacher.eval()(**inputs).logits
        first = loss_fn.teacher_logits({k: v[:2] for k, v in inputs.items()})  # the longest text, padded once
        again = loss_fn.teacher_logits(inputs)  # two texts from the cache, one new
    assert len(loss_fn.cache) == 3
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(again[real] if which == "ner" else again, direct[real] if which == "ner" else direct,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first[:, : again.shape[1]] if which == "ner" else first, again[:2], atol=1e-5, rtol=1e-5)
