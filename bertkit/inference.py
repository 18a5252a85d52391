"""Predictor: a fine-tuned model directory in, JSON-ready predictions out. Shared by `predict`,
`evaluate` and the server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from bertkit.checkpoint import load_pretrained
from bertkit.data.io import read_text_lines
from bertkit.tasks import task_of
from bertkit.trainer import autocast, bf16_available


class Predictor:
    def __init__(self, model_dir: str | os.PathLike, batch_size: int = 32, bf16: bool = False) -> None:
        self.model, self.tokenizer, self.model_dir = load_pretrained(model_dir)
        self.model.eval()
        self.config = self.model.config
        self.task = task_of(self.config)
        self.batch_size = batch_size
        self.device = next(self.model.parameters()).device
        self.bf16 = bf16 and bf16_available(self.device)

    def read(self, path: str | os.PathLike) -> list[Any]:
        """Examples from a .txt file (one text per line) or a file in the task's training format."""
        if Path(path).suffix.lower() == ".txt":
            lines = read_text_lines(path)
            return [self.task.from_text(text, number) for number, text in enumerate(lines, start=1) if text.strip()]
        return self.task.read(path, require_labels=False)

    def from_texts(self, texts: list[str]) -> list[Any]:
        return [self.task.from_text(text, number) for number, text in enumerate(texts, start=1)]

    def predict(self, examples: list[Any]) -> list[dict]:
        with torch.inference_mode(), autocast(self.device, self.bf16):
            return self.task.predict(self.model, self.tokenizer, examples, self.batch_size)

    def evaluate(self, path: str | os.PathLike) -> dict[str, Any]:
        examples = self.task.read(path)
        self.task.check_labels(examples, self.config, path)
        return self.task.score(examples, self.predict(examples), self.config)
