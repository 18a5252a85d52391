"""`bertkit tune TASK`: a hyper-parameter search on the dev score, built on Optuna.

Layout of the output directory:

    DIR/study.db          the Optuna study (SQLite): run the same command again to resume it
    DIR/best/             the best trial's model, a normal model directory (the only model kept)
    DIR/leaderboard.csv   one row per trial, best first
    DIR/trials.png        the dev score of each trial;  DIR/importance.png  each parameter's importance
    DIR/trials/N/         trial N while it trains (removed when it ends)

Each epoch's dev score is reported to Optuna, which prunes trials that fall behind (median rule). A trial
killed mid-way is marked failed when the search resumes; finished trials are never run again.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertkit.callbacks import Callback
from bertkit.errors import BertkitError
from bertkit.fileio import TEMP_PREFIX, atomic_write_text
from bertkit.options import Options, option, split_keywords

if TYPE_CHECKING:
    import optuna

    from bertkit.api import FineTuned
    from bertkit.trainer import Trainer

STUDY_FILE = "study.db"
BEST_DIR = "best"
TRIALS_DIR = "trials"
SEARCHED = ("lr", "epochs", "batch_size", "warmup_ratio", "seed")  # TrainConfig fields the search sets


@dataclass
class TuneOptions(Options):
    """The search: its budget and the range of each searched setting (a range is LOW HIGH, inclusive)."""

    trials: int = option(20, "trials in all (with those of an interrupted search of the same --out)", min=1)
    timeout: float | None = option(None, "start no new trial after this many seconds", above=0, metavar="SECONDS")
    lr_range: list[float] | None = option(None, "learning rates to search, sampled log-uniformly (default: a tenth "
                                          "to three times the default rate for the model and task)", metavar="X")
    epochs_range: list[int] = option([2, 5], "epochs to search")
    batch_sizes: list[int] = option([16, 32], "batch sizes to choose from")
    warmup_range: list[float] = option([0.0, 0.2], "warmup ratios to search", metavar="X")
    seed_range: list[int] = option([0, 1000], "seeds to search")
    sampler_seed: int = option(0, "seed of the sampler (which settings are tried)", min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lr_range", "epochs_range", "warmup_range", "seed_range"):
            values = getattr(self, name)
            if values is None:  # lr_range: set from the model once it is known
                continue
            flag = "--" + name.replace("_", "-")
            if len(values) != 2:
                raise BertkitError(f"{name} ({flag}) takes two values, LOW HIGH; got {len(values)}")
            if values[0] > values[1]:
                raise BertkitError(f"{name} ({flag}) is an empty range: {values[0]:g} > {values[1]:g}")
        if not self.batch_sizes:
            raise BertkitError("batch_sizes (--batch-sizes) is empty; give at least one")
        if (self.lr_range is not None and self.lr_range[0] <= 0) or min(self.batch_sizes) < 1 or self.epochs_range[0] < 1:
            raise BertkitError("learning rates must be above 0, and batch sizes and epochs at least 1")
        if not 0 <= self.warmup_range[0] <= self.warmup_range[1] <= 1:
            raise BertkitError(f"warmup_range (--warmup-range) must lie within 0..1, got {self.warmup_range}")

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", *self.lr_range, log=True),
            "epochs": trial.suggest_int("epochs", *self.epochs_range),
            "batch_size": trial.suggest_categorical("batch_size", list(self.batch_sizes)),
            "warmup_ratio": trial.suggest_float("warmup_ratio", *self.warmup_range),
            "seed": trial.suggest_int("seed", *self.seed_range),
        }


class Pruning(Callback):
    """Reports each epoch's dev score to an Optuna trial and stops the run when Optuna prunes it."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.pruned = False

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.trial.report(record["dev"][trainer.main_metric], record["epoch"])
        if self.trial.should_prune():
            self.pruned = trainer.should_stop = True


@dataclass
class TuneResult:
    """The search's outcome: the best model (DIR/best), its dev score and settings, and the Optuna study."""

    model: FineTuned
    value: float
    params: dict[str, Any]
    study: optuna.Study


def _open_study(out: Path, sampler_seed: int, main_metric: str) -> optuna.Study:
    """The study in DIR/study.db, created or resumed; trials a killed search left running are marked failed."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / STUDY_FILE}")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1)
    study = optuna.create_study(storage=storage, study_name="bertkit", direction="maximize", pruner=pruner,
                                load_if_exists=True)
    # A resumed sampler is seeded past the trials already run, so it does not propose the same settings again.
    sampler = optuna.samplers.TPESampler(seed=sampler_seed + len(study.trials))
    study = optuna.load_study(study_name="bertkit", storage=storage, sampler=sampler, pruner=pruner)
    study.set_user_attr("main_metric", main_metric)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return study


def _finished(study: optuna.Study) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _settle(study: optuna.Study, out: Path) -> None:
    """Promote the best completed trial's directory to DIR/best and remove every other trial directory.

    Runs after each trial (Optuna has recorded its state by then) and when a search starts, so a search
    killed anywhere, even mid-swap, still ends with DIR/best holding the study's best trial."""
    from optuna.trial import TrialState

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best_number = max(completed, key=lambda t: (t.value, -t.number)).number if completed else None
    best, old = out / BEST_DIR, out / f"{TEMP_PREFIX}old-best"
    trials = out / TRIALS_DIR
    for trial_dir in sorted(trials.iterdir()) if trials.is_dir() else []:
        if trial_dir.name == str(best_number) and (trial_dir / "model.safetensors").is_file():
            if best.exists():
                best.rename(old)
            trial_dir.rename(best)
        else:
            shutil.rmtree(trial_dir)
    if old.exists() and best.exists():  # the swap's leftover
        shutil.rmtree(old)
    elif old.exists():  # a swap cut short between its two renames: the previous best is all there is
        old.rename(best)
    shutil.rmtree(trials, ignore_errors=True)


def write_leaderboard(study: optuna.Study, path: Path) -> None:
    """One row per trial, the best first: number, state, dev score, its settings, seconds."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: (t.value is None, -(t.value or 0.0), t.number))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "state", study.user_attrs.get("main_metric", "value"), *SEARCHED, "seconds"])
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
        value = t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)]
                                                     if t.intermediate_values else "")
        writer.writerow([t.number, t.state.name.lower(), value, *(t.params.get(k, "") for k in SEARCHED),
                         f"{seconds:.1f}" if seconds != "" else ""])
    atomic_write_text(path, buffer.getvalue())


def plot_trials(study: optuna.Study, path: Path) -> None:
    """Each trial's dev score (pruned trials at their last reported score) and the best so far."""
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    completed = [(t.number, t.value) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)])
              for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.intermediate_values]
    if completed:
        ax.plot(*zip(*completed), "o", color="tab:blue", label="completed")
        best, running = [], float("-inf")
        for number, value in completed:
            running = max(running, value)
            best.append((number, running))
        ax.step(*zip(*best), where="post", color="tab:orange", label="best so far")
    if pruned:
        ax.plot(*zip(*pruned), "x", color="tab:gray", label="pruned (last epoch's score)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"dev {study.user_attrs.get('main_metric', 'score')}")
    ax.set_title("hyper-parameter search")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_importance(study: optuna.Study, path: Path) -> bool:
    """Each searched parameter's importance for the dev score (Optuna's default evaluator); False (no picture)
    with fewer than two completed trials, from which no importance can be told."""
    import optuna
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return False
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # every completed trial had the same settings or score
        return False
    names = list(importances)[::-1]
    fig = Figure(figsize=(6, 0.5 * len(names) + 1.5))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (share of the score's variance)")
    ax.set_title("parameter importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def _default_lr_range(model: Any, task: str) -> list[float]:
    """`defaults.lr_search_range` for the model about to be tuned (a directory, hub id, None or a model object)."""
    from bertkit.checkpoint import load_config, resolve_model_dir
    from bertkit.defaults import default_lr_for, lr_search_range

    if model is None or isinstance(model, (str, os.PathLike)):
        config = load_config(resolve_model_dir(model))
    else:
        config = getattr(getattr(model, "model", model), "config", None)
        if config is None:
            raise BertkitError("model= is a directory, a hub id, or a bertkit model")
    rate = default_lr_for(config, task)
    low, high = lr_search_range(rate)
    print(f"searching learning rates {low:g}..{high:g}, around the default {rate:g} for {task} with a model "
          f"{config.hidden_size} wide (--lr-range sets another)", file=sys.stderr)
    return [low, high]


def tune(task: str, train: Any, dev: Any, out: str | os.PathLike, model: Any = None, **options: Any) -> TuneResult:
    """Search learning rate, epochs, batch size, warmup and seed on the dev score; keep the best model.

    `options`: the search (trials, timeout, lr_range, epochs_range, batch_sizes, warmup_range, seed_range,
    sampler_seed), the task's options and the training settings that are not searched (weight_decay, ...).
    Running it again with the same `out` resumes the search.
    """
    import optuna

    from bertkit.api import FineTuned
    from bertkit.finetuning import finetune
    from bertkit.tasks import get_task
    from bertkit.trainer import TrainConfig

    if dev is None:
        raise BertkitError("tune needs dev= (--dev): the search is on the dev score")
    task_class = get_task(task)
    task_options, search, fixed = split_keywords(options, task_class.Options, TuneOptions, TrainConfig,
                                                 what=f"tune {task}")
    if searched := sorted(set(fixed) & set(SEARCHED)):
        raise BertkitError(f"tune searches {', '.join(searched)}; give their ranges instead "
                           "(lr_range, epochs_range, batch_sizes, warmup_range, seed_range)")
    search = TuneOptions(**search)
    if search.lr_range is None:
        search.lr_range = _default_lr_range(model, task_class.name)
    TrainConfig(**fixed)  # range errors now, not in the first trial
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = _open_study(out, search.sampler_seed, task_class.main_metric)
    _settle(study, out)  # what a killed search left: a finished best trial's model, a half-trained one

    def objective(trial: optuna.Trial) -> float:
        trial_dir = out / TRIALS_DIR / str(trial.number)
        pruning = Pruning(trial)
        try:
            history = finetune(task_class(task_options), train, trial_dir, model, dev,
                               TrainConfig(**fixed, **search.suggest(trial), lr_source="search"), overwrite=True, callbacks=[pruning])
        except BaseException:
            shutil.rmtree(trial_dir, ignore_errors=True)
            raise
        if pruning.pruned:
            raise optuna.TrialPruned()
        return history.best  # its directory is promoted or removed once Optuna has recorded the score

    def report(study: optuna.Study, trial: Any) -> None:
        _settle(study, out)
        write_leaderboard(study, out / "leaderboard.csv")
        print(f"trial {trial.number}: {trial.state.name.lower()}"
              + (f", dev {task_class.main_metric} {trial.value:.4f}" if trial.value is not None else ""), file=sys.stderr)

    remaining = search.trials - len(_finished(study))
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=search.timeout, callbacks=[report], catch=())
    write_leaderboard(study, out / "leaderboard.csv")
    try:
        best = study.best_trial
    except ValueError:
        raise BertkitError(f"no trial of the search in {out} completed (all were pruned or failed)") from None
    plot_trials(study, out / "trials.png")
    plot_importance(study, out / "importance.png")
    return TuneResult(FineTuned(out / BEST_DIR), best.value, dict(best.params), study)

