"""The fine-tuning task families: one module each, behind the `Task` interface of `base`."""

from __future__ import annotations

from bertkit.errors import BertkitError
from bertkit.tasks.base import Task
from bertkit.tasks.classify import ClassifyTask
from bertkit.tasks.ner import NerTask
from bertkit.tasks.prompt import PromptTask
from bertkit.tasks.qa import QATask

TASKS: dict[str, type[Task]] = {task.name: task for task in (ClassifyTask, NerTask, QATask, PromptTask)}

# What a directory fine-tuned elsewhere (say with the transformers Trainer) is for, by its architecture.
_TASK_OF_ARCHITECTURE = {task.architecture: name for name, task in TASKS.items()}


def get_task(name: str) -> type[Task]:
    if name not in TASKS:
        raise BertkitError(f"unknown task {name!r} (choose from {', '.join(TASKS)})")
    return TASKS[name]


def task_of(config) -> Task:
    """The task a fine-tuned model directory is for, with the settings it was trained with."""
    settings = dict(config.extra.get("bertkit") or {})
    name = settings.pop("task", None) or _TASK_OF_ARCHITECTURE.get((config.architectures or [""])[0])
    if name not in TASKS:
        raise BertkitError(
            f"the model is a {(config.architectures or ['BertModel'])[0]}, not fine-tuned for a task; "
            "fine-tune it first with `bertkit finetune`"
        )
    return TASKS[name](settings)


def fine_tuned_task(config, directory, flag: str) -> Task:
    """The task of `directory`, which `flag` (the option that names it: "--teacher", "--continual") needs to be
    a plain fine-tuned model: an adapter directory or an encoder without a task head is a one-line error."""
    from bertkit.efficient import is_adapter_dir

    if is_adapter_dir(config):
        raise BertkitError(f"{flag}: {directory} is an adapter directory; fold it into a plain model with "
                           "`bertkit merge` first")
    try:
        return task_of(config)
    except BertkitError:
        raise BertkitError(f"{flag} needs a fine-tuned model; {directory} is a pre-trained encoder without a task head "
                           f"({(config.architectures or ['BertModel'])[0]}); fine-tune it first with `bertkit finetune`") from None


__all__ = ["TASKS", "Task", "ClassifyTask", "NerTask", "QATask", "PromptTask", "fine_tuned_task", "get_task", "task_of"]
