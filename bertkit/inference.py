"""Predictor: a fine-tuned model directory in, JSON-ready predictions out. Shared by `predict`,
`evaluate` and the server.

Two backends run the model: PyTorch (the weights in the directory), or ONNX Runtime (the graph that
`bertkit export onnx` wrote to DIR/model.onnx). Both read the config and tokenizer from the directory
and hand the task the same outputs, so everything after the forward pass is shared.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
from dataclasses import dataclass
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

import torch
from torch import nn
from tqdm import tqdm

from bertkit.baselines import prior_metrics
from bertkit.checkpoint import load_config, load_pretrained, resolve_model_dir
from bertkit.data.io import DEFAULT_ENCODING, ReadOptions, iter_lines
from bertkit.errors import BertkitError
from bertkit.export import DIGEST_KEY, INPUT_NAMES, ONNX_FILE, open_session, run_session, weights_digest
from bertkit.config import BertConfig
from bertkit.options import option
from bertkit.tasks import task_of
from bertkit.tokenizer import BertTokenizer
from bertkit.runtime import autocast, use_bf16

BACKENDS = ("torch", "onnx")
CHUNK_SIZE = 4096  # examples in memory at once when predicting a file; many batches, so length sorting still pays


@dataclass
class InferenceOptions(ReadOptions):
    """The settings of `predict`, `evaluate` and `serve` (flags and keywords of `bertkit.load`); `serve` reads no
    files, so it takes no --encoding."""

    batch_size: int = option(64, "texts per model batch", min=1)
    fp32: bool = option(False, "run in fp32 even where the hardware has native bf16 (the default uses it there)")
    backend: str = option("torch", "onnx: ONNX Runtime on DIR/model.onnx (from `bertkit export onnx`)",
                          choices=BACKENDS)
    onnx: str | None = option(None, "with --backend onnx: another graph, e.g. the int8 one", metavar="FILE")


class OnnxModel(nn.Module):
    """An exported graph behind the call the tasks make: model(input_ids=..., ...) -> the outputs by name.

    It holds no weights of its own; one empty parameter says where its outputs live (the CPU), as a
    PyTorch model's parameters do, so callers find the device the usual way.
    """

    def __init__(self, path: Path, config: BertConfig, threads: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.path = path
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        self.session = open_session(path, threads)
        self.metadata: dict[str, str] = self.session.get_modelmeta().custom_metadata_map
        inputs = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if unknown := [name for name in inputs if name not in INPUT_NAMES]:
            raise BertkitError(f"{path}: the graph wants inputs {', '.join(unknown)}; "
                               f"bertkit feeds {', '.join(INPUT_NAMES)}")
        task = task_of(config)
        if missing := [name for name in task.outputs if name not in self.output_names]:
            raise BertkitError(f"{path}: the graph's outputs are {', '.join(self.output_names)}; a {task.name} model's "
                               f"are {', '.join(task.outputs)} ({', '.join(missing)} missing)")

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> SimpleNamespace:
        if input_ids.shape[1] > self.config.max_position_embeddings:  # as BertModel says it, not as a Gather error
            raise BertkitError(f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                               f"{self.config.max_position_embeddings}")
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return SimpleNamespace(**{name: torch.from_numpy(value) for name, value in run_session(self.session, batch).items()})


def load_onnx(
    model_dir: str | os.PathLike, onnx_file: str | os.PathLike | None = None
) -> tuple[OnnxModel, BertTokenizer, Path]:
    """The ONNX graph (default DIR/model.onnx) with the directory's config and tokenizer."""
    directory = resolve_model_dir(model_dir)
    path = Path(onnx_file) if onnx_file is not None else directory / ONNX_FILE
    if not path.is_file():
        raise BertkitError(f"{path}: no such file; create it with `bertkit export onnx --model {directory}`")
    config = load_config(directory)
    tokenizer = BertTokenizer.from_pretrained(directory)
    if tokenizer.vocab_size != config.vocab_size:
        raise BertkitError(f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but config.json says "
                           f"vocab_size {config.vocab_size}; they must be the same")
    model = OnnxModel(path, config, threads=torch.get_num_threads())
    # Graphs from other exporters carry no digest; ours must come from the weights now in the directory.
    if DIGEST_KEY in model.metadata and model.metadata[DIGEST_KEY] != weights_digest(directory):
        raise BertkitError(f"{path} was exported from other weights than those now in {directory}; "
                           f"export it again with `bertkit export onnx --model {directory}`")
    return model, tokenizer, directory


class Predictor:
    def __init__(
        self,
        model_dir: str | os.PathLike,
        batch_size: int = 32,
        fp32: bool = False,
        backend: str = "torch",
        onnx_file: str | os.PathLike | None = None,
        encoding: str = DEFAULT_ENCODING,
    ) -> None:
        """`backend` "onnx" runs `onnx_file` (default DIR/model.onnx) in ONNX Runtime on the CPU. The torch
        backend runs in bf16 autocast where the hardware has native bf16, unless `fp32`. Input files are read
        in `encoding`."""
        # one-line range errors
        InferenceOptions(batch_size=batch_size, fp32=fp32, backend=backend, onnx=onnx_file, encoding=encoding)
        if backend == "torch":
            if onnx_file is not None:
                raise BertkitError("--onnx FILE goes with --backend onnx")
            self.model, self.tokenizer, self.model_dir = load_pretrained(model_dir)
        elif backend == "onnx":  # the exported graph runs as it is: fp32 (or int8)
            self.model, self.tokenizer, self.model_dir = load_onnx(model_dir, onnx_file)
        else:
            raise BertkitError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
        self.backend = backend
        self.model.eval()
        self.config = self.model.config
        self.task = task_of(self.config)
        self.task.encoding = encoding
        self.batch_size = batch_size
        self.device = next(self.model.parameters()).device
        self.bf16 = backend == "torch" and use_bf16(self.device, fp32)

    def stream(self, path: str | os.PathLike) -> Iterator[Any]:
        """Examples from a .txt file (one text per line, blank lines included) or a file in the task's training
        format, one at a time: one example per input row, so that every row gets its prediction line."""
        if Path(path).suffix.lower() != ".txt":
            yield from self.task.stream(path)
            return
        empty = True
        for number, text in iter_lines(path, encoding=self.task.encoding):
            empty = empty and not text.strip()
            yield self.task.from_text(text, number)
        if empty:
            raise BertkitError(f"{path}: the file is empty")

    def from_texts(self, texts: list[str]) -> list[Any]:
        return [self.task.from_text(text, number) for number, text in enumerate(texts, start=1)]

    def from_inputs(self, inputs: list[Any]) -> list[Any]:
        """Examples from the Python API's inputs: strings, (text, pair) tuples or question/context dicts."""
        if isinstance(inputs, (str, dict, tuple)) or not isinstance(inputs, list):
            raise BertkitError(f"predict takes a list of inputs, got {type(inputs).__name__}")
        if not inputs:
            raise BertkitError("predict got an empty list; give at least one input")
        examples = [self.task.from_input(item, number) for number, item in enumerate(inputs, start=1)]
        if len({isinstance(item, tuple) for item in inputs}) > 1:
            raise BertkitError("give all inputs as (text, pair) tuples or all as single texts, not a mix")
        return examples

    def predict(self, examples: list[Any]) -> list[dict]:
        """One prediction per example, in order.

        An example that cannot be predicted (an empty text) gets the task's empty prediction and an "error" field,
        e.g. `{"label": null, "score": null, "scores": {}, "error": "empty text"}`, so outputs stay aligned.
        """
        problems = [self.task.problem(example) for example in examples]
        valid = [example for example, problem in zip(examples, problems) if problem is None]
        with torch.inference_mode(), autocast(self.device, self.bf16):
            predicted = iter(self.task.predict(self.model, self.tokenizer, valid, self.batch_size) if valid else [])
        return [next(predicted) if problem is None else {**self.task.empty_prediction, "error": problem}
                for problem in problems]

    def predict_stream(self, examples: Iterable[Any], chunk_size: int = CHUNK_SIZE) -> Iterator[dict]:
        """`bertkit predict` lines: each prediction led by its example's "id" (its line number where it has none),
        in input order, holding at most `chunk_size` examples at a time.

        Each chunk is batched by length inside, as `predict` does; a chunk spans many batches so the sorting pays.
        """
        examples = iter(examples)
        while chunk := list(itertools.islice(examples, chunk_size)):
            for example, prediction in zip(chunk, self.predict(chunk)):
                yield {"id": self.task.example_id(example), **prediction}

    def evaluate(self, data: Any) -> dict[str, Any]:
        """Metrics on labelled data: a path, or rows in memory (see Task.examples)."""
        examples = self.task.examples(data, "data")
        self.task.check_labels(examples, self.config, data if isinstance(data, (str, os.PathLike)) else "data")
        metrics = self.task.score(examples, self.predict(examples), self.config)
        if (prior := prior_metrics(self.task, examples, self.config)) is not None:
            metrics["prior"] = prior  # the majority-class baseline, to read the model's score against
        return metrics


def count_complete_lines(path: Path) -> tuple[int, int]:
    """(lines ending in a newline, the byte offset just past the last of them), read in blocks."""
    lines, end, offset = 0, 0, 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            newlines = block.count(b"\n")
            if newlines:
                lines += newlines
                end = offset + block.rindex(b"\n") + 1
            offset += len(block)
    return lines, end


def predict_file(
    predictor: Predictor,
    input_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Predict every example of `input_path` as JSON lines into `output` (stdout when None), in input order.

    Memory stays bounded by `chunk_size` whatever the file's size, and each chunk is flushed as it is done, so an
    interrupted run leaves only whole lines (and at most one cut line at the end). `resume` keeps the output's
    whole lines, drops a cut last line, and predicts the rest. The output is opened only once the first prediction
    is made, so an error before it leaves no file behind. Returns the number of predictions written now.
    """
    input_path = Path(input_path)
    if resume and output is None:
        raise BertkitError("--resume needs --output FILE: there is no file to continue when writing to stdout")
    if output is not None:
        output = Path(output)
        if output.is_dir():
            raise BertkitError(f"{output}: is a directory; --output wants a file")
        if output.exists() and not (resume or overwrite):
            raise BertkitError(f"{output} exists; pass --resume to continue it or --overwrite to replace it")
    # A first pass parses (and so checks) every example before anything is written: bad input at line 900,000
    # fails now, not after hours of work with the output half-written. It also gives the progress bar its total.
    total = sum(1 for _ in predictor.stream(input_path))
    done, keep_bytes = count_complete_lines(output) if resume and output.exists() else (0, 0)
    if done > total:
        raise BertkitError(f"{output} has {done} predictions but {input_path} has only {total} examples; "
                           "was it written for another input?")
    examples = itertools.islice(predictor.stream(input_path), done, None)
    with tqdm(total=total, initial=done, unit="text", desc="predict", dynamic_ncols=True, disable=None) as bar:
        predictions = predictor.predict_stream(examples, chunk_size)
        first = next(predictions, None)  # made before the output is opened: an error here leaves no file
        if first is None and not done:
            return 0
        predictions = itertools.chain([first] if first is not None else [], predictions)
        if output is None:
            return _write_predictions(predictions, sys.stdout, bar, chunk_size)
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("r+b" if done else "wb") as raw:
            raw.truncate(keep_bytes)  # a cut last line from an interrupted run goes
            raw.seek(keep_bytes)
            with io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as out:
                return _write_predictions(predictions, out, bar, chunk_size)


def _write_predictions(predictions: Iterable[dict], out: TextIO, bar: tqdm, chunk_size: int) -> int:
    written = 0
    for prediction in predictions:
        out.write(json.dumps(prediction, ensure_ascii=False) + "\n")
        written += 1
        bar.update(1)
        if written % chunk_size == 0:  # a chunk is done: its lines reach the disk before the next starts
            out.flush()
    out.flush()
    return written
