"""`bertkit distill`: a smaller student trained to match a fine-tuned teacher (classification and NER).

The loss of a batch (Hinton et al. 2015; TinyBERT for the hidden states):

    loss = alpha * T² * soft_CE(student / T, teacher / T) + (1 - alpha) * hard loss  [+ hidden-state MSE]

soft_CE is the cross-entropy of the student's softened distribution against the teacher's (softmax over
the labels; per label sigmoid for a multi-label teacher), averaged over the rows: one per text, or one per
real token for NER. The hard loss is the head's own loss on the rows that carry a label, so unlabelled text
(`unlabeled=`, one text per line) teaches through the teacher's soft targets alone. The teacher runs in eval
mode without gradients inside the loss function of the ordinary fine-tuning loop (`finetuning.finetune`).

The student either keeps a subset of the teacher's layers (DistilBERT) - student layer i starts as teacher
layer `layer_map(S, T)[i]`, every other one for half the depth; embeddings, pooler and head are copied - or is
a fresh network of a named size or config.json with the teacher's vocabulary. The hidden-state loss pairs the
embeddings with the embeddings and student layer i with teacher layer `layer_map(S, T)[i]`, through a trained
linear projection when the widths differ (dropped from the saved model). The student is an ordinary model
directory with the teacher's labels and task fields; `distill.json` records how it was made.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.batching import IGNORE_INDEX
from bertkit.callbacks import to_json
from bertkit.checkpoint import load_config, load_model, resolve_model_dir
from bertkit.config import MODEL_SIZES, BertConfig
from bertkit.errors import BertkitError
from bertkit.fileio import atomic_path, atomic_write_text
from bertkit.options import Options, option, split_keywords
from bertkit.tasks import TASKS, Task, fine_tuned_task
from bertkit.tasks.base import ReadExamples
from bertkit.tokenizer import BertTokenizer
from bertkit.trainer import History, TrainConfig, set_seed

REPORT_FILE = "distill.json"
PROJECTION = "distill_projection"  # the student's attribute holding the hidden-state projection while training


@dataclass
class DistillOptions(Options):
    """The settings of `bertkit distill` besides the files (--teacher, --train, --dev, --out)."""

    unlabeled: str | None = option(None, "in-domain texts, one per line (or a CSV/JSONL text column), that the "
                                         "teacher labels: soft targets only", metavar="FILE")
    student_layers: int | None = option(None, "the student keeps N of the teacher's layers, evenly spaced and "
                                              "ending at the top (default: half, every other one)", min=1)
    student_size: str | None = option(None, "instead: a fresh student of this named size, with the teacher's "
                                            "vocabulary", choices=tuple(MODEL_SIZES))
    student_config: str | None = option(None, "instead: a fresh student from this config.json, with the teacher's "
                                              "vocabulary", metavar="FILE")
    temperature: float = option(2.0, "softmax temperature of the soft targets (the soft loss is scaled by T²)",
                                above=0, metavar="T")
    alpha: float = option(0.5, "weight of the soft loss against the teacher; 1 - alpha weighs the hard labels",
                          min=0, max=1)
    hidden_loss: bool = option(False, "also match the teacher's hidden states: MSE over the layer map (TinyBERT)")

    def __post_init__(self) -> None:
        super().__post_init__()
        chosen = [name for name in ("student_layers", "student_size", "student_config") if getattr(self, name) is not None]
        if len(chosen) > 1:
            flags = " and ".join("--" + name.replace("_", "-") for name in chosen)
            raise BertkitError(f"{flags} do not go together; choose one way to make the student")


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer (0-based) of each student layer: evenly spaced, the last on the last.
    3 of 6 -> [1, 3, 5] (layer 2i+1: every other one), 2 of 6 -> [2, 5], 6 of 6 -> every layer."""
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, multi_label: bool = False,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """T² times the cross-entropy of the student's softened predictions against the teacher's, averaged over the
    rows (the last dimension is the labels; `mask` keeps some rows, e.g. NER's real tokens).

    softmax: -Σ_c softmax(t/T)_c · log softmax(s/T)_c; multi-label: the binary cross-entropy of sigmoid(s/T)
    against sigmoid(t/T), summed over the labels."""
    labels = student.shape[-1]
    student, teacher = student.float().reshape(-1, labels), teacher.float().reshape(-1, labels)
    if mask is not None:
        keep = mask.reshape(-1).bool()
        student, teacher = student[keep], teacher[keep]
    s, t = student / temperature, teacher / temperature
    if multi_label:
        per_row = F.binary_cross_entropy_with_logits(s, torch.sigmoid(t), reduction="none").sum(-1)
    else:
        per_row = -(torch.softmax(t, dim=-1) * torch.log_softmax(s, dim=-1)).sum(-1)
    return per_row.mean() * temperature**2


class HiddenStates:
    """Catches an encoder's embeddings output and each layer's output (forward hooks) while `catch()` is open,
    so the head's own forward stays as it is. Layers run on packed real tokens (or on the rows the head reads,
    for the last layer of a classifier); two encoders given the same batch catch rows that correspond."""

    def __init__(self, encoder: nn.Module) -> None:
        self.states: list[torch.Tensor] | None = None
        for module in [encoder.embeddings, *encoder.layers]:
            module.register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if self.states is not None:
            self.states.append(output)

    @contextmanager
    def catch(self) -> Iterator[list[torch.Tensor]]:
        self.states = []
        try:
            yield self.states
        finally:
            self.states = None


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], mapping: list[int],
                attention_mask: torch.Tensor, projection: nn.Module | None) -> torch.Tensor:
    """Mean over the pairs (embeddings <-> embeddings, student layer i <-> teacher layer mapping[i]) of the MSE
    between the (projected) student states and the teacher's; the embeddings' padding rows are left out."""
    real = attention_mask.bool()
    pairs = [(student[0][real], teacher[0][real])]
    pairs += [(student[i + 1], teacher[j + 1]) for i, j in enumerate(mapping)]
    losses = [F.mse_loss((projection(s) if projection is not None else s).float(), t.float()) for s, t in pairs]
    return torch.stack(losses).mean()


class DistillationLoss:
    """loss_fn(model, batch) -> (loss, {"soft", "hard"[, "hidden"]}) for the Trainer: the teacher's logits are
    computed here from the batch, in eval mode and without gradients."""

    def __init__(self, teacher: nn.Module, task: str, options: DistillOptions, mapping: list[int]) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.token_level = task == "ner"
        self.multi_label = teacher.config.problem_type == "multi_label_classification"
        self.temperature, self.alpha = options.temperature, options.alpha
        self.mapping = mapping
        self.teacher_states = HiddenStates(teacher.bert) if options.hidden_loss else None
        self.student_states: HiddenStates | None = None  # hooked by `prepare` on the student
        # The teacher is fixed, so each text's logits are computed once, on the first epoch, and looked up after
        # (not with the hidden-state loss, whose states would take too much memory to keep).
        self.cache: dict[bytes, torch.Tensor] | None = None if options.hidden_loss else {}

    def prepare(self, student: nn.Module) -> nn.Module:
        """The prepare_model hook: with the hidden-state loss, catch the student's states, and give it a trained
        projection to the teacher's width when the widths differ."""
        if self.teacher_states is not None:
            self.student_states = HiddenStates(student.bert)
            width, teacher_width = student.config.hidden_size, self.teacher.config.hidden_size
            if width != teacher_width:
                setattr(student, PROJECTION, nn.Linear(width, teacher_width))
        return student

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        labels = batch.get("labels")
        module = getattr(model, "module", model)  # under DDP the student sits on the wrapped module
        self.teacher.to(batch["input_ids"].device)
        with torch.no_grad(), self._catch(self.teacher_states) as teacher_states:
            teacher_logits = self.teacher(**inputs).logits if self.cache is None else self.teacher_logits(inputs)
        labelled = self._labelled(labels)
        # NER's head scores its own labels (a CRF's likelihood included); a classifier's rows are picked here.
        ner_labels = labels if self.token_level and bool(labelled.any()) else None
        with self._catch(self.student_states) as student_states:
            output = model(**inputs, labels=ner_labels)
        soft = soft_loss(output.logits, teacher_logits, self.temperature, self.multi_label,
                         inputs["attention_mask"] if self.token_level else None)
        hard = self._hard(output, labels, labelled)
        loss = self.alpha * soft + (1 - self.alpha) * hard
        logs = {"soft": soft.item(), "hard": hard.item()}
        if self.teacher_states is not None:
            hidden = hidden_loss(student_states, teacher_states, self.mapping,
                                 inputs["attention_mask"], getattr(module, PROJECTION, None))
            loss = loss + hidden
            logs["hidden"] = hidden.item()
        return loss, logs

    def teacher_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's logits of the batch, computed only for the texts it has not seen yet. Each is kept cut to
        its real length (NER: one row per token) and padded with zeros to the batch's length, which no loss reads."""
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        types = inputs.get("token_type_ids", torch.zeros_like(ids))
        lengths = mask.sum(1).tolist()
        rows = torch.stack([ids, types], dim=1).cpu()
        keys = [rows[i, :, :n].numpy().tobytes() for i, n in enumerate(lengths)]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            logits = self.teacher(**{k: v[missing] for k, v in inputs.items()}).logits
            for i, row in zip(missing, logits):
                self.cache[keys[i]] = row[: lengths[i]] if self.token_level else row
        if not self.token_level:
            return torch.stack([self.cache[key] for key in keys])
        cached = [self.cache[key] for key in keys]
        return torch.stack([F.pad(row, (0, 0, 0, ids.shape[1] - len(row))) for row in cached])

    @staticmethod
    def _catch(states: HiddenStates | None):
        return states.catch() if states is not None else nullcontext()

    def _labelled(self, labels: torch.Tensor | None) -> torch.Tensor:
        """Which rows (tokens for NER) carry a hard label: unlabelled ones hold IGNORE_INDEX, or NaN (multi-label)."""
        if labels is None:
            return torch.zeros(0, dtype=torch.bool)
        return ~labels.isnan().any(-1) if self.multi_label else labels != IGNORE_INDEX

    def _hard(self, output: Any, labels: torch.Tensor | None, labelled: torch.Tensor) -> torch.Tensor:
        zero = output.logits.sum() * 0.0
        if labels is None or not bool(labelled.any()):
            return zero
        if self.token_level:
            return output.loss
        logits, targets = output.logits[labelled].float(), labels[labelled]
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, targets.float())
        return F.cross_entropy(logits, targets)


# -- the student -------------------------------------------------------------------------------------------


def _describe(config: BertConfig) -> str:
    return f"{config.num_hidden_layers} layers of width {config.hidden_size}"


def student_from_layers(teacher: nn.Module, layers: int) -> tuple[nn.Module, list[int]]:
    """The teacher with `layers` of its layers (those of `layer_map`), every other weight copied as it is."""
    config = teacher.config
    if layers > config.num_hidden_layers:
        raise BertkitError(f"--student-layers {layers} is more than the teacher's {config.num_hidden_layers} layers; "
                           "the student must be smaller")
    mapping = layer_map(layers, config.num_hidden_layers)
    student = type(teacher)(dataclasses.replace(config, num_hidden_layers=layers, extra=copy.deepcopy(config.extra)))
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():  # "bert.layers.I.rest" (a head model) or "layers.I.rest" (a bare encoder)
        layer = re.match(r"((?:bert\.)?layers\.)(\d+)(\..*)", key)
        key_in_teacher = f"{layer[1]}{mapping[int(layer[2])]}{layer[3]}" if layer else key
        state[key] = source[key_in_teacher].clone()
    student.load_state_dict(state)
    return student, mapping


def fresh_student(teacher: nn.Module, config: BertConfig, seed: int) -> tuple[nn.Module, list[int]]:
    """A freshly initialised student of `config`'s shape with the teacher's vocabulary, labels and task fields."""
    t = teacher.config
    config = dataclasses.replace(config, vocab_size=t.vocab_size, pad_token_id=t.pad_token_id,
                                 type_vocab_size=t.type_vocab_size, id2label=t.id2label, label2id=t.label2id,
                                 problem_type=t.problem_type, architectures=None, extra=copy.deepcopy(t.extra))
    if config.num_hidden_layers > t.num_hidden_layers or config.hidden_size > t.hidden_size:
        raise BertkitError(f"the student ({_describe(config)}) is larger than the teacher ({_describe(t)}); "
                           "choose a smaller --student-size or --student-config")
    set_seed(seed)
    return type(teacher)(config), layer_map(config.num_hidden_layers, t.num_hidden_layers)


def make_student(teacher: nn.Module, options: DistillOptions, seed: int) -> tuple[nn.Module, list[int], str]:
    """(student, layer map, how it was made) for the options' choice; the default keeps half the layers."""
    if options.student_size is not None:
        config = BertConfig.from_size(options.student_size, teacher.config.vocab_size,
                                      max_position_embeddings=teacher.config.max_position_embeddings)
        return (*fresh_student(teacher, config, seed), f"size {options.student_size}, fresh")
    if options.student_config is not None:
        config = BertConfig.from_json_file(options.student_config)
        return (*fresh_student(teacher, config, seed), f"config {options.student_config}, fresh")
    layers = options.student_layers or max(1, teacher.config.num_hidden_layers // 2)
    return (*student_from_layers(teacher, layers), f"{layers} of the teacher's layers")


# -- the data ----------------------------------------------------------------------------------------------


def load_teacher(name_or_path: str | os.PathLike) -> tuple[nn.Module, BertTokenizer, Task, Path]:
    """The teacher model (a plain classify or NER model directory), its tokenizer, its task and its directory."""
    directory = resolve_model_dir(name_or_path)
    config = load_config(directory)
    task = fine_tuned_task(config, directory, "--teacher")
    if task.name not in ("classify", "ner"):
        raise BertkitError(f"the teacher {directory} is a {task.name} model; distill handles classify and ner teachers")
    model, _ = load_model(directory, config=config)
    return model, BertTokenizer.from_pretrained(directory), task, directory


def read_train(task: Task, data: Any, teacher: Path) -> list[Any]:
    """The labelled training examples, read as the teacher's task reads them; data of the other task is named so."""
    try:
        return task.examples(data, "train")
    except BertkitError as error:
        for name, other in TASKS.items():
            if name in ("classify", "ner") and name != task.name:
                try:
                    other().examples(data, "train")
                except (BertkitError, ValueError, KeyError):
                    continue
                shown = data if isinstance(data, (str, os.PathLike)) else "train="
                raise BertkitError(f"the teacher {teacher} is a {task.name} model, but {shown} is {name} data; "
                                   f"distill a {name} teacher on it") from None
        raise error


def read_unlabeled(task: Task, path: str | os.PathLike) -> list[Any]:
    """Unlabelled examples of the teacher's task from a .txt file (one text per line) or a text column."""
    from bertkit.embeddings import read_texts

    if getattr(task.options, "text_pair_column", None):
        raise BertkitError("the teacher classifies sentence pairs; --unlabeled gives single texts (one per line)")
    lines, texts = read_texts(path, getattr(task.options, "text_column", "text"))
    examples = [task.from_text(text, line) for line, text in zip(lines, texts)]
    return [example for example in examples if task.problem(example) is None]


def student_task(task: Task, teacher_config: BertConfig, unlabeled: int) -> Task:
    """The teacher's task for the student: the teacher's labels in the teacher's order (the soft targets line up
    with them), and training features of the last `unlabeled` examples without hard labels."""
    labels = [teacher_config.id2label[i] for i in range(teacher_config.num_labels)]

    class StudentTask(type(task)):
        def label_list(self, examples: list[Any]) -> list[str]:
            return labels

        def label_prior(self, examples: list[Any]) -> dict[str, Any] | None:
            return super().label_prior(examples[: len(examples) - unlabeled])

        def features(self, examples: list[Any], tokenizer: BertTokenizer, config: BertConfig) -> list:
            features = super().features(examples, tokenizer, config)
            nothing: Any = [float("nan")] * len(labels) if getattr(self.options, "multi_label", False) else IGNORE_INDEX
            for feature in features:
                feature.setdefault("labels", nothing)  # unlabelled texts (NER windows already hold IGNORE_INDEX)
            return features

    StudentTask.__name__ = type(task).__name__
    return StudentTask(task.settings, encoding=task.encoding)


def _drop_projection(directory: Path) -> None:
    """Rewrite model.safetensors without the hidden-state projection, which only training needs."""
    from safetensors.torch import load_file, save_file

    path = directory / "model.safetensors"
    state = load_file(str(path))
    if any(key.startswith(PROJECTION + ".") for key in state):
        with atomic_path(path) as tmp:
            save_file({k: v for k, v in state.items() if not k.startswith(PROJECTION + ".")}, str(tmp),
                      metadata={"format": "pt"})


def distill(teacher: str | os.PathLike, train: Any, out: str | os.PathLike, dev: Any = None, **options: Any) -> History:
    """Distil the classify or NER model `teacher` into a smaller student saved in `out` (see the module notes).

    `train`/`dev` as for `finetune` (in the teacher's format and columns). `options`: every field of
    DistillOptions, TrainConfig, and overwrite, resume, eval_batch_size, encoding. Returns the run's History.
    """
    from bertkit.finetuning import FinetuneOptions
    from bertkit.finetuning import finetune as run

    distill_options, train_options, extra = split_keywords(options, DistillOptions, TrainConfig, FinetuneOptions,
                                                           what="distill")
    settings = FinetuneOptions(**extra)
    if settings.mlm_weight or settings.folds:
        raise BertkitError("distill takes no mlm_weight or folds")
    choice, train_config = DistillOptions(**distill_options), TrainConfig(**train_options)
    teacher_model, tokenizer, task, teacher_dir = load_teacher(teacher)
    task.encoding = settings.encoding
    labelled = read_train(task, train, teacher_dir)
    task.check_labels(labelled, teacher_model.config, train if isinstance(train, (str, os.PathLike)) else "train")
    unlabeled = read_unlabeled(task, choice.unlabeled) if choice.unlabeled is not None else []
    student, mapping, made = make_student(teacher_model, choice, train_config.seed)
    loss = DistillationLoss(teacher_model, task.name, choice, mapping)
    history = run(student_task(task, teacher_model.config, len(unlabeled)), ReadExamples(labelled + unlabeled), out,
                  student, dev, train_config, settings.eval_batch_size, settings.resume, settings.overwrite,
                  prepare_model=loss.prepare, loss_fn=loss, tokenizer=tokenizer)
    out_dir = Path(out)
    _drop_projection(out_dir)
    report = {"teacher": str(teacher_dir), "student": made, "layer_map": mapping, "labelled_examples": len(labelled),
              **{k: str(v) if isinstance(v, os.PathLike) else v for k, v in dataclasses.asdict(choice).items()},
              "unlabeled_texts": len(unlabeled)}
    atomic_write_text(out_dir / REPORT_FILE, to_json(report))
    return history

