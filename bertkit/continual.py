"""Continual learning for classification (`finetune classify --model runs/old --continual`): fine-tune an
already fine-tuned classifier on new data without losing its old task.

Every `finetune classify` run is a stage, and leaves in its model directory what a later stage needs:

- `rehearsal.jsonl`: a sample of the training data seen so far (`--rehearsal-size` examples, as even as possible
  across the stages and, within each, across the labels), one JSON row `{"stage", "text", ["text_pair"], "label"}`;
- `stages/NAME-dev.jsonl`: a sample of each stage's dev data (`--stage-dev-size`), to score that task later;
- `stages.json`: the stages in order (name, task, labels, sizes, strategy, dev sample path, own score) and this
  model's score on every stage's dev sample (`scores`);
- `ewc.safetensors` after an EWC stage: the parameter anchors θ* and the diagonal Fisher F.

A `--continual` stage keeps the model's labels at their rows (id2label grows: new labels come after, old head rows
are copied exactly), trains by one of three strategies, and then scores every earlier stage again: metrics.json
gets a `forgetting` table (each earlier task's score before and after, and the drop) and forgetting.png plots it.

- `rehearsal` (default): the kept sample is mixed into the new training data, `--rehearsal-ratio` of the mix.
- `ewc` (elastic weight consolidation, Kirkpatrick et al. 2017, online form): the loss gains
  λ/2 Σ F_i (θ_i − θ*_i)² through the trainer's `loss_fn` hook. F is the empirical Fisher's diagonal (the mean
  squared per-example gradient of the training loss) of each task's kept sample, taken with the model at the end
  of that task; the Fishers of successive tasks add up, and θ* is the latest task's final weights.
- `none`: plain sequential fine-tuning, the comparison.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bertkit.errors import BertkitError
from bertkit.fileio import atomic_path, atomic_write_text
from bertkit.options import Options, option

REHEARSAL_FILE = "rehearsal.jsonl"
STAGES_FILE = "stages.json"
STAGES_DIR = "stages"
EWC_FILE = "ewc.safetensors"
FORGETTING_PLOT = "forgetting.png"
STRATEGIES = ("rehearsal", "ewc", "none")

LossFn = Callable[[nn.Module, dict[str, Any]], tuple[Any, dict[str, float]]]


@dataclass
class ContinualOptions(Options):
    """The continual-learning settings of `finetune classify` (see the module's docstring)."""

    continual: bool = option(False, "fine-tune --model, a fine-tuned classifier, on new data without losing its old "
                                    "task: its labels keep their head rows, new labels extend the head")
    continual_strategy: str = option("rehearsal", "with --continual: rehearsal (mix the model's kept sample of earlier "
                                                  "training data in), ewc (Fisher-weighted pull towards the earlier "
                                                  "weights), none (plain sequential fine-tuning)", choices=STRATEGIES)
    rehearsal_size: int = option(200, "classify: training examples kept in the model directory (rehearsal.jsonl), "
                                      "even across stages and labels, for later --continual runs (0: none)", min=0)
    rehearsal_ratio: float = option(0.3, "with --continual-strategy rehearsal: the share of the training examples "
                                         "drawn from the kept sample", above=0, max=0.9)
    ewc_lambda: float = option(1e6, "with --continual-strategy ewc: the weight λ of the penalty λ/2·Σ F·(θ-θ*)²",
                               above=0, metavar="λ")
    stage_name: str | None = option(None, "classify: this run's name in stages.json and the forgetting report "
                                          "(default: stageN)", metavar="NAME")
    stage_dev_size: int = option(500, "classify: dev examples kept in the model directory (stages/) to score this "
                                      "task after later stages (0: none)", min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        defaults = ContinualOptions.__dataclass_fields__
        changed = [name for name in ("continual_strategy", "rehearsal_ratio", "ewc_lambda")
                   if getattr(self, name) != defaults[name].default]
        if changed and not self.continual:
            raise BertkitError(f"--{changed[0].replace('_', '-')} goes with --continual")
        if self.rehearsal_ratio != defaults["rehearsal_ratio"].default and self.continual_strategy != "rehearsal":
            raise BertkitError("--rehearsal-ratio goes with --continual-strategy rehearsal")
        if self.ewc_lambda != defaults["ewc_lambda"].default and self.continual_strategy != "ewc":
            raise BertkitError("--ewc-lambda goes with --continual-strategy ewc")
        if self.stage_name is not None and not re.fullmatch(r"[A-Za-z0-9][\w.-]*", self.stage_name):
            raise BertkitError(f"--stage-name {self.stage_name!r}: use letters, digits, '.', '_' and '-'")


# -- the kept samples -------------------------------------------------------------------------------------------


def balanced_sample(items: list[Any], size: int, key: Callable[[Any], Any], seed: int) -> list[Any]:
    """Up to `size` of `items`, as even as possible across the groups `key` makes: the groups, each shuffled,
    give one item in turn until `size` are chosen, so a small group is kept whole and the rest share the room."""
    rng = random.Random(seed)
    groups: dict[Any, list[Any]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    queues = [rng.sample(members, len(members)) for _, members in sorted(groups.items(), key=lambda g: str(g[0]))]
    chosen: list[Any] = []
    while len(chosen) < size and any(queues):
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop())
    return chosen


def label_key(example: Any) -> str:
    """A classification example's label as a group key (multi-label: its labels, sorted, joined)."""
    return "|".join(sorted(example.label)) if isinstance(example.label, list) else example.label


def rehearsal_draws(memory: list[Any], new_count: int, ratio: float, seed: int) -> list[Any]:
    """Examples of `memory` to add to `new_count` new ones so that `ratio` of the mix comes from memory:
    round(new_count · ratio / (1 − ratio)) draws, each kept example drawn as often as any other (±1)."""
    count = round(new_count * ratio / (1 - ratio))
    rng = random.Random(seed)
    draws: list[Any] = []
    while memory and len(draws) < count:
        draws += rng.sample(memory, len(memory))
    return draws[:count]


def kept_task(task: Any) -> Any:
    """The classify task that reads the kept files: the same settings, with the kept files' column names."""
    from bertkit.tasks import ClassifyTask

    pair = "text_pair" if task.options.text_pair_column else None
    return ClassifyTask({**task.settings, "text_column": "text", "text_pair_column": pair, "label_column": "label"})


def write_examples(path: Path, rows: list[tuple[str, Any]]) -> None:
    """(stage, example) pairs as JSON lines in the kept files' columns."""
    lines = []
    for stage, e in rows:
        row = {"stage": stage, "text": e.text, **({"text_pair": e.pair} if e.pair is not None else {}), "label": e.label}
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(lines))


def read_examples(path: Path, task: Any) -> list[tuple[str, Any]]:
    """What `write_examples` wrote: (stage, example) pairs."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise BertkitError(f"{path}: cannot read the kept examples ({exc})") from None
    if not rows:
        return []
    examples = kept_task(task).from_records(rows, str(path))
    return [(str(row.get("stage", "")), example) for row, example in zip(rows, examples)]


# -- EWC --------------------------------------------------------------------------------------------------------


def _leading(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The part of `tensor` an older, smaller tensor of `shape` corresponds to (a grown head's old rows)."""
    return tensor[tuple(slice(0, n) for n in shape)]


class EWCLoss:
    """loss_fn(model, batch) -> (task loss + λ/2 · Σ_i F_i (θ_i − θ*_i)², {"ewc": the penalty}) for the trainer.

    Parameters that have grown since the anchor (a head with new labels) are penalised on their old part only;
    parameters without an anchor, and frozen ones, are not penalised."""

    def __init__(self, anchors: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor], weight: float,
                 base: LossFn | None = None) -> None:
        self.anchors, self.fisher, self.weight = anchors, fisher, weight
        self.base = base or (lambda model, batch: (model(**batch).loss, {}))

    def penalty(self, model: nn.Module) -> torch.Tensor:
        module = getattr(model, "module", model)  # under DDP the parameters sit on the wrapped module
        total = torch.zeros(())
        for name, parameter in module.named_parameters():
            if name not in self.fisher or not parameter.requires_grad:
                continue
            anchor, fisher = self.anchors[name], self.fisher[name]
            if anchor.device != parameter.device:
                self.anchors[name] = anchor = anchor.to(parameter.device)
                self.fisher[name] = fisher = fisher.to(parameter.device)
            total = total.to(parameter.device) + (fisher * (_leading(parameter, anchor.shape) - anchor) ** 2).sum()
        return 0.5 * self.weight * total

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        loss, logs = self.base(model, batch)
        penalty = self.penalty(model)
        return loss + penalty, {**logs, "ewc": penalty.item()}


def fisher_diagonal(model: nn.Module, features: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """The empirical Fisher's diagonal: for every trainable parameter, the mean over `features` of the squared
    gradient of that one example's loss (gold label), with dropout off."""
    from bertkit.batching import collate

    if not features:
        raise BertkitError("EWC needs examples to estimate the Fisher information on; none were given")
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in parameters.items()}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for feature in features:
        model.zero_grad(set_to_none=True)
        batch = {k: v.to(device) for k, v in collate([feature], pad_token_id).items()}
        model(**batch).loss.backward()
        for name, p in parameters.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: value / len(features) for name, value in fisher.items()}


def save_ewc(path: Path, anchors: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor]) -> None:
    state = {f"anchor.{k}": v.detach().cpu().contiguous() for k, v in anchors.items()}
    state.update({f"fisher.{k}": v.detach().cpu().contiguous() for k, v in fisher.items()})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


def load_ewc(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    state = load_file(path)
    anchors = {k.removeprefix("anchor."): v for k, v in state.items() if k.startswith("anchor.")}
    fisher = {k.removeprefix("fisher."): v for k, v in state.items() if k.startswith("fisher.")}
    if set(anchors) != set(fisher):
        raise BertkitError(f"{path}: anchors and Fisher name different parameters")
    return anchors, fisher


def add_fisher(newer: dict[str, torch.Tensor], older: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Online EWC's sum of two tasks' Fishers; an older, smaller tensor adds into its leading part."""
    total = {name: value.clone() for name, value in newer.items()}
    for name, value in older.items():
        if name in total:
            _leading(total[name], value.shape).add_(value)
    return total


# -- a stage: what a run starts from, and what it leaves behind ---------------------------------------------------


def _load_stages(model_dir: Path) -> dict[str, Any]:
    path = model_dir / STAGES_FILE
    if not path.is_file():
        return {"stages": [], "scores": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BertkitError(f"{path}: cannot read the stages ({exc})") from None


def _source_dir(model: Any) -> Path:
    """The directory a --continual run starts from (a FineTuned gives its own)."""
    from bertkit.checkpoint import resolve_model_dir

    directory = getattr(model, "directory", model)
    if model is None:
        directory = resolve_model_dir(None)  # the packaged encoder: refused below, as any model without a head
    if not isinstance(directory, (str, Path)) and not hasattr(directory, "__fspath__"):
        raise BertkitError("--continual needs model= as a fine-tuned model directory (or what finetune returned)")
    return resolve_model_dir(directory)


class Stage:
    """One `finetune classify` run as a stage: built before training (checks, the data mix, the hooks), and
    `finish(history)` after it writes the kept samples, stages.json and the forgetting report."""

    def __init__(self, task: Any, options: ContinualOptions, model: Any, out: Path, train: Any, dev: Any,
                 seed: int) -> None:
        from bertkit.tasks.base import ReadExamples

        self.task, self.options, self.out, self.seed = task, options, Path(out), seed
        self.source: Path | None = None
        self.previous: dict[str, Any] = {"stages": [], "scores": {}}
        self.memory: list[tuple[str, Any]] = []
        self.old_labels: list[str] | None = None
        self._ewc: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        if options.continual:
            self._check_source(model)
        self.new_train = task.examples(train, "train")
        self.new_dev = task.examples(dev, "dev") if dev is not None else None
        names = [s["name"] for s in self.previous["stages"]]
        self.name = options.stage_name or f"stage{len(names) + 1}"
        if self.name in names:
            raise BertkitError(f"--stage-name {self.name!r} is already a stage of {self.source} ({', '.join(names)})")
        replay = []
        if options.continual and options.continual_strategy == "rehearsal":
            replay = rehearsal_draws([e for _, e in self.memory], len(self.new_train), options.rehearsal_ratio, seed)
        self.replayed = len(replay)
        self.train = ReadExamples(self.new_train + replay)
        self.dev = dev  # as given: the trainer reads it again, and names a path in its errors

    def _check_source(self, model: Any) -> None:
        from bertkit.checkpoint import load_config
        from bertkit.tasks import fine_tuned_task

        source = _source_dir(model)
        if source.resolve() == self.out.resolve():
            raise BertkitError("--continual: --out must be a new directory, not --model itself")
        config = load_config(source)
        old_task = fine_tuned_task(config, source, "--continual")
        if old_task.name != self.task.name:
            raise BertkitError(f"--continual: {source} was fine-tuned for {old_task.name}, not {self.task.name}")
        for name, what in (("multi_label", "multi-label data"), ("text_pair_column", "sentence pairs")):
            if bool(getattr(old_task.options, name)) != bool(getattr(self.task.options, name)):
                had = "was" if getattr(old_task.options, name) else "was not"
                raise BertkitError(f"--continual: {source} {had} fine-tuned on {what}; the new data must match")
        self.source = source
        self.old_labels = [config.id2label[i] for i in range(len(config.id2label))]
        self.previous = _load_stages(source)
        strategy = self.options.continual_strategy
        if (source / REHEARSAL_FILE).is_file():
            self.memory = read_examples(source / REHEARSAL_FILE, self.task)
        needs_memory = strategy == "rehearsal" or (strategy == "ewc" and not (source / EWC_FILE).is_file())
        if needs_memory and not self.memory:
            raise BertkitError(f"--continual-strategy {strategy}: {source} keeps no training sample ({REHEARSAL_FILE}; "
                               "it was fine-tuned with --rehearsal-size 0 or outside bertkit); use --continual-strategy none")

    @property
    def labels(self) -> list[str] | None:
        """The head's labels: the old model's at their rows, then the new data's other labels, sorted."""
        if self.old_labels is None:
            return None
        new = self.task.label_list(self.new_train)
        return self.old_labels + [label for label in new if label not in self.old_labels]

    def hooks(self, prepare_model: Callable[[nn.Module], nn.Module] | None,
              loss_fn: LossFn | None) -> tuple[Callable[[nn.Module], nn.Module] | None, LossFn | None]:
        """(prepare_model, loss_fn) for this stage: the old head rows copied in first; EWC's penalty on the loss."""
        if self.source is None:
            return prepare_model, loss_fn
        from bertkit.checkpoint import load_hf_state

        state = load_hf_state(self.source)
        weight, bias = state["classifier.weight"], state["classifier.bias"]

        def prepare(model: nn.Module) -> nn.Module:
            with torch.no_grad():  # the old labels' rows exactly; new rows keep their fresh initialisation
                model.classifier.weight[: weight.shape[0]] = weight
                model.classifier.bias[: bias.shape[0]] = bias
            return prepare_model(model) if prepare_model is not None else model

        if self.options.continual_strategy == "ewc":
            anchors, fisher = self._old_fisher()
            loss_fn = EWCLoss(anchors, fisher, self.options.ewc_lambda, loss_fn)
        return prepare, loss_fn

    def _fisher_of(self, model_dir: Path, examples: list[Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(anchors, Fisher) of the model in `model_dir` on `examples`."""
        from bertkit.checkpoint import load_pretrained

        model, tokenizer, _ = load_pretrained(model_dir)
        features = self.task.features(examples, tokenizer, model.config)
        fisher = fisher_diagonal(model, features, tokenizer.pad_token_id)
        anchors = {name: p.detach().clone() for name, p in model.named_parameters() if name in fisher}
        return anchors, fisher

    def _old_fisher(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The earlier tasks' EWC state: saved by an earlier EWC stage, or estimated now on the kept sample with the
        model as the last task left it (which is the model at the end of that task)."""
        assert self.source is not None
        if self._ewc is None:
            self._ewc = (load_ewc(self.source / EWC_FILE) if (self.source / EWC_FILE).is_file()
                         else self._fisher_of(self.source, [e for _, e in self.memory]))
        return self._ewc

    # -- after training ------------------------------------------------------------------------------------------

    def finish(self, history: Any, eval_batch_size: int = 64) -> None:
        """Write the kept samples, stages.json, and for a --continual stage the forgetting report (and EWC state)."""
        from bertkit.callbacks import to_json
        from bertkit.fileio import atomic_write_text

        o, out = self.options, self.out
        own_sample = balanced_sample(self.new_train, o.rehearsal_size or len(self.new_train), label_key, self.seed)
        kept = self.memory + [(self.name, e) for e in own_sample]
        if o.rehearsal_size:
            memory = balanced_sample(kept, o.rehearsal_size, lambda pair: (pair[0], label_key(pair[1])), self.seed)
            write_examples(out / REHEARSAL_FILE, memory)
        stages = [dict(s) for s in self.previous["stages"]]
        for stage in stages:  # the earlier dev samples move along with the model
            if stage.get("dev") and self.source is not None and (self.source / stage["dev"]).is_file():
                write_examples(out / stage["dev"], read_examples(self.source / stage["dev"], self.task))
        dev_path = None
        if self.new_dev and o.stage_dev_size:
            sample = random.Random(self.seed).sample(self.new_dev, min(o.stage_dev_size, len(self.new_dev)))
            dev_path = f"{STAGES_DIR}/{self.name}-dev.jsonl"
            write_examples(out / dev_path, [(self.name, e) for e in sample])
        stage = {"name": self.name, "task": self.task.name, "labels": self.labels or self.task.label_list(self.new_train),
                 "train_examples": len(self.new_train), "rehearsal_examples": self.replayed,
                 "strategy": o.continual_strategy if o.continual else None, "from": str(self.source) if self.source else None,
                 "dev": dev_path, "dev_examples": len(sample) if dev_path else 0}
        stages.append(stage)
        scores = self._scores(stages, history, eval_batch_size)
        stage["score"] = scores.get(self.name)
        atomic_write_text(out / STAGES_FILE, to_json({"metric": self.task.main_metric, "stages": stages, "scores": scores}))
        if not o.continual:
            return
        if o.continual_strategy == "ewc":
            _, old_fisher = self._old_fisher()
            anchors, fisher = self._fisher_of(out, own_sample)
            save_ewc(out / EWC_FILE, anchors, add_fisher(fisher, old_fisher))
        self._report(stages, scores)

    def _scores(self, stages: list[dict[str, Any]], history: Any, eval_batch_size: int) -> dict[str, float]:
        """This model's main metric on every stage's dev sample. The new stage's is the best epoch's dev score when
        its sample is the whole dev set; the rest are scored now."""
        metric = self.task.main_metric
        scores: dict[str, float] = {}
        pending = [s for s in stages if s.get("dev")]
        if pending and pending[-1]["name"] == self.name and history.best is not None \
                and pending[-1]["dev_examples"] == len(self.new_dev or []):
            scores[self.name] = history.best
            pending.pop()
        if pending:
            from bertkit.checkpoint import load_pretrained

            model, tokenizer, _ = load_pretrained(self.out)
            model.eval()
            reader = kept_task(self.task)
            with torch.inference_mode():
                for s in pending:
                    examples = [e for _, e in read_examples(self.out / s["dev"], self.task)]
                    predictions = reader.predict(model, tokenizer, examples, eval_batch_size)
                    scores[s["name"]] = reader.score(examples, predictions, model.config)[metric]
        return {s["name"]: scores[s["name"]] for s in stages if s["name"] in scores}

    def _report(self, stages: list[dict[str, Any]], scores: dict[str, float]) -> None:
        """The forgetting table in metrics.json and forgetting.png: each earlier stage's score before and after."""
        from bertkit.callbacks import to_json
        from bertkit.plots import plot_forgetting

        before = self.previous.get("scores", {})
        rows = [{"task": s["name"], "before": before.get(s["name"]), "after": scores.get(s["name"]),
                 "drop": before[s["name"]] - scores[s["name"]] if s["name"] in before and s["name"] in scores else None}
                for s in stages[:-1]]
        path = self.out / "metrics.json"
        metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        metrics["continual"] = {"stage": self.name, "from": str(self.source), "strategy": self.options.continual_strategy,
                                "new_examples": len(self.new_train), "rehearsal_examples": self.replayed,
                                "ewc_lambda": self.options.ewc_lambda if self.options.continual_strategy == "ewc" else None,
                                "scores": scores}
        metrics["forgetting"] = rows
        atomic_write_text(path, to_json(metrics))
        plot_forgetting(rows, scores.get(self.name), self.name, self.task.main_metric, self.out / FORGETTING_PLOT)


def forgetting_summary(model_dir: str | Path) -> str:
    """One line for the command line: the forgetting table of a --continual stage's metrics.json, in words."""
    path = Path(model_dir) / "metrics.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    parts = [f"{r['task']} {r['before']:.4f} -> {r['after']:.4f}" for r in record.get("forgetting", [])
             if r["before"] is not None and r["after"] is not None]
    metric = record.get("main_metric", "score")
    return f"earlier stages' dev {metric}: {', '.join(parts)} (forgetting in metrics.json)" if parts else ""
