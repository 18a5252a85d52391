"""`bertkit export onnx`: a model directory to one self-contained ONNX file, checked against PyTorch.

The graph takes `input_ids`, `attention_mask` and `token_type_ids` (int64, batch x sequence, both axes
dynamic) and returns the model's output tensors under their field names: `logits` for classification
and tagging, `start_logits` and `end_logits` for QA, `last_hidden_state` and `pooler_output` for a bare
encoder. It is exported from the padded reference path: the unpadded path sizes its tensors from the
mask's contents, which a graph with dynamic shapes cannot express.

Convention: the file goes to DIR/model.onnx unless told otherwise, and `--backend onnx` looks for it
there; the config and tokenizer stay in DIR, where both backends read them. The file records a digest
of the weights it came from, so a model fine-tuned again in the same directory is not silently
predicted with its old graph.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit.checkpoint import load_config, load_model, resolve_model_dir
from bertkit.efficient import refuse_adapter_dir
from bertkit.errors import BertkitError
from bertkit.fileio import atomic_path, temp_path
from bertkit.config import BertConfig
from bertkit.model import BertModel, EncoderOutput
from bertkit.options import Options, option

ONNX_FILE = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
QUANTIZATIONS = ("int8",)
TOLERANCE = 1e-4  # largest |onnx - torch| accepted on the check batch (fp32)
DIGEST_KEY = "bertkit.weights_sha256"
QUANTIZE_KEY = "bertkit.quantize"
# The weight files a digest covers: every layout that checkpoint.load_hf_state reads, shards included.
_WEIGHT_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                    "pytorch_model.bin.index.json")
_EXAMPLE_SHAPE = (2, 8)  # (batch, seq) of the traced example; the check batch has a different shape
_CHECK_SHAPE = (3, 13)


@dataclass
class ExportResult:
    path: Path
    outputs: list[str]
    max_abs_diff: float  # fp32 graph vs PyTorch on the check batch
    quantize: str | None
    int8_max_abs_diff: float | None  # the quantized graph vs PyTorch, for information only
    size_bytes: int


class _PaddedEncoder(nn.Module):
    """The encoder with the padded path forced, whatever the head calling it asks for."""

    def __init__(self, encoder: BertModel) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, unpad: bool = True,
                output_positions: torch.Tensor | None = None) -> EncoderOutput:
        return self.encoder(input_ids, attention_mask, token_type_ids, unpad=False, output_positions=output_positions)


class _Exportable(nn.Module):
    """Plain tensors in and out: the named output fields of the model's output dataclass, in order."""

    def __init__(self, model: nn.Module, output_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        output = self.model(input_ids, attention_mask, token_type_ids)
        return tuple(getattr(output, name) for name in self.output_names)


def _padded(model: nn.Module) -> nn.Module:
    """The model (changed in place) running the padded reference path in its encoder."""
    if isinstance(model, BertModel):
        return _PaddedEncoder(model)
    model.bert = _PaddedEncoder(model.bert)
    return model


def weights_digest(model_dir: Path) -> str:
    """SHA-256 of a model directory's weight files: ties an exported graph to the weights it came from."""
    digest = hashlib.sha256()
    files = sorted({path for pattern in _WEIGHT_PATTERNS for path in model_dir.glob(pattern) if path.is_file()})
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def random_batch(config: BertConfig, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random right-padded inputs: the first row full length, the others shorter, two segments each."""
    generator = torch.Generator().manual_seed(seed)
    seq = min(seq, config.max_position_embeddings)
    lengths = torch.randint(1, seq + 1, (batch,), generator=generator)
    lengths[0] = seq
    positions = torch.arange(seq)[None, :]
    attention_mask = (positions < lengths[:, None]).long()
    input_ids = torch.randint(0, config.vocab_size, (batch, seq), generator=generator) * attention_mask
    second_segment = positions >= (lengths[:, None] + 1) // 2
    token_type_ids = (second_segment & attention_mask.bool()).long()
    if config.type_vocab_size == 1:
        token_type_ids.zero_()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def open_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with as many intra-op threads as torch uses (by default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a damaged or foreign file: ONNX Runtime's own words, on one line
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BertkitError(f"{path}: ONNX Runtime cannot load it ({detail})") from None


def run_session(session: Any, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Outputs by name for a batch of torch tensors, feeding only the inputs the graph declares."""
    feeds = {i.name: batch[i.name].numpy().astype(np.int32 if i.type == "tensor(int32)" else np.int64, copy=False)
             for i in session.get_inputs()}
    return dict(zip((o.name for o in session.get_outputs()), session.run(None, feeds)))


def _max_abs_diff(ours: dict[str, np.ndarray], reference: dict[str, torch.Tensor]) -> float:
    """Largest |ours - reference| over every output; infinite where a shape differs."""
    diffs = [float(np.max(np.abs(ours[name].astype(np.float64) - expected.double().numpy())))
             if ours[name].shape == tuple(expected.shape) else float("inf")
             for name, expected in reference.items()]
    return max(diffs)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter warns about optional packages (torchvision) and its own internals: not the user's business."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@dataclass
class ExportOptions(Options):
    """`bertkit export onnx`: each field a flag."""

    model_dir: str = option(help="model directory (fine-tuned, or a bare encoder)", flag="--model", metavar="MODEL")
    out: str | None = option(None, "the .onnx file to write (default: DIR/model.onnx, where --backend onnx looks)")
    quantize: str | None = option(None, "write the int8 graph (dynamically quantized weights) instead of the fp32 one",
                                  choices=QUANTIZATIONS)
    opset: int | None = option(None, "ONNX opset (default: the exporter's)", min=7)
    overwrite: bool = option(False, "replace an existing --out file")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise BertkitError(f"{out}: is a directory; --out is the .onnx file to write")
    if out.exists() and not overwrite:
        raise BertkitError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise BertkitError(f"{out.parent}: no such directory")


def export_onnx(
    model_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    quantize: str | None = None,
    opset: int | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export a model directory to ONNX at `out` (default DIR/model.onnx) and check it against PyTorch.

    The fp32 graph must match PyTorch within TOLERANCE on a random padded batch of another batch size
    and length than the traced example. With quantize="int8" the file written is the dynamically
    quantized graph (int8 weights, activations quantized per batch at run time); the fp32 graph is
    checked first and not kept. The file appears under its name only once it has passed, and replaces an
    existing file only with `overwrite`.
    """
    ExportOptions(str(model_dir), None if out is None else str(out), quantize, opset, overwrite)
    directory = resolve_model_dir(model_dir)
    out_path = Path(out) if out is not None else directory / ONNX_FILE
    _check_out(out_path, overwrite)
    refuse_adapter_dir(directory, load_config(directory))
    model, _ = load_model(directory)
    config = model.config
    model = _padded(model.eval())
    example = random_batch(config, *_EXAMPLE_SHAPE, seed=0)
    check = random_batch(config, *_CHECK_SHAPE, seed=1)
    with torch.no_grad():
        probe = model(**example)
    output_names = [f.name for f in dataclasses.fields(probe) if isinstance(getattr(probe, f.name), torch.Tensor)]
    exportable = _Exportable(model, output_names).eval()
    with torch.no_grad():
        reference = dict(zip(output_names, exportable(**check)))

    try:
        # With int8 the checked fp32 graph goes to a scratch file, and only the quantized one is kept.
        with atomic_path(out_path) as final, temp_path(out_path.parent, f"{out_path.name}.fp32") as scratch:
            fp32 = scratch if quantize == "int8" else final
            metadata = {DIGEST_KEY: weights_digest(directory), QUANTIZE_KEY: "none"}
            _export_graph(exportable, example, config.max_position_embeddings, fp32, opset, metadata)
            diff = _max_abs_diff(run_session(open_session(fp32), check), reference)
            if not diff <= TOLERANCE:  # `not <=` also catches NaN
                raise BertkitError(f"the ONNX graph differs from PyTorch by {diff:.2e} (more than {TOLERANCE:g}); "
                                   "nothing written")
            int8_diff = None
            if quantize == "int8":
                _quantize_int8(fp32, final)
                int8_diff = _max_abs_diff(run_session(open_session(final), check), reference)
                if not np.isfinite(int8_diff):
                    raise BertkitError("the int8 graph gives non-finite outputs; nothing written")
    except OSError as exc:
        raise BertkitError(f"{out_path}: cannot write ({exc.strerror or exc})") from None
    return ExportResult(out_path, output_names, diff, quantize, int8_diff, out_path.stat().st_size)


def _export_graph(model: _Exportable, example: dict[str, torch.Tensor], max_length: int, path: Path,
                  opset: int | None, metadata: dict[str, str]) -> None:
    """torch.export (the dynamo exporter) to one file, weights inside, batch and sequence axes dynamic."""
    import onnx

    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=max_length)
    dynamic = {name: {0: batch, 1: sequence} for name in INPUT_NAMES}
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model, (), kwargs=example, input_names=list(INPUT_NAMES), output_names=model.output_names,
                opset_version=opset, dynamic_shapes=dynamic, dynamo=True, verbose=False,
            )
    except Exception as exc:  # the exporter fails in many ways (an unsupported op, an opset it cannot reach)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BertkitError(f"ONNX export failed: {detail}") from None
    for node in program.model.graph:  # debugging notes (source paths, stack traces): half a small model's file
        node.metadata_props.clear()
    program.model.metadata_props.update(metadata)
    program.save(path, external_data=False)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise BertkitError(f"the exported graph is not valid ONNX: {str(exc).splitlines()[0]}") from None


def _quantize_int8(source: Path, target: Path) -> None:
    """Dynamic quantization: int8 weights for MatMul and Gather, activations quantized (uint8) per batch at run time.

    Weights are scaled per output channel: on all-MiniLM-L6-v2 that keeps the mean-pooled sentence
    embeddings at cosine 0.993 of fp32 (0.955 with one scale per matrix), at the same speed.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    # The quantizer turns Gemm into MatMul with a transposed weight; the exporter's recorded shapes would
    # then contradict it, so they go, and are inferred again.
    del model.graph.value_info[:]
    for prop in model.metadata_props:
        if prop.key == QUANTIZE_KEY:
            prop.value = "int8"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises pre-processing, which changes nothing measurable here
    try:
        quantize_dynamic(model, target, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
