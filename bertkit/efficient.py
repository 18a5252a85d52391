"""Parameter-efficient fine-tuning: freezing, BitFit, LoRA (through `peft`) and Houlsby bottleneck adapters.

`preparer(options)` gives the `prepare_model` hook of `finetune`: it takes a bertkit task model (heads.py) and
returns it with only the chosen parameters trainable. The task head (every module beside `bert`) is always
trained, and always saved with the adapter.

What is saved:
- freeze and BitFit change which weights train, not the model: the result is a plain model directory.
- LoRA and Houlsby adapters save an adapter directory: the adapter weights (`adapter_model.safetensors`;
  for LoRA in PEFT's key format, with PEFT's `adapter_config.json`), the head (`head.safetensors`), the
  tokenizer, and `config.json` with the task, labels and `bertkit_adapter`: the method, its settings, the base
  model's path and a digest of its weights. Such a directory predicts and serves as it is (loading it loads the
  base, then the adapter). LoRA adapters are on bertkit's fused `attention.qkv`, so they apply to bertkit's
  model, not to transformers' separate query/key/value layers; `merge` folds them into a plain checkpoint that
  transformers loads.
- Houlsby adapters cannot be merged: each is `h + up(gelu(down(h)))`, a nonlinear function of the layer's
  output, which no change of the existing weights reproduces.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.model import FeedForward, SelfAttention
from bertkit.ops import ACTIVATIONS
from bertkit.options import Options, option

ADAPTER_KEY = "bertkit_adapter"  # in config.json: marks an adapter directory
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_WEIGHTS = "head.safetensors"
PEFT_METHODS = ("lora", "bitfit", "adapter")
DEFAULT_LORA_TARGETS = "attention.qkv,attention.out"
_LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")


@dataclass
class EfficientOptions(Options):
    """The options of every `finetune` task that choose what is trained."""

    freeze: str | None = option(None, "encoder: train the task head only; N: freeze the embeddings and the lowest "
                                      "N layers", metavar="encoder|N")
    peft: str | None = option(None, "lora: low-rank updates (peft); bitfit: biases only; adapter: Houlsby "
                                    "bottleneck adapters", choices=PEFT_METHODS)
    lora_rank: int = option(8, "with --peft lora: the rank r", min=1)
    lora_alpha: float = option(16.0, "with --peft lora: the scale alpha (updates are scaled by alpha/r)", above=0)
    lora_dropout: float = option(0.1, "with --peft lora: dropout on the LoRA input", min=0, max=0.9)
    lora_targets: str = option(DEFAULT_LORA_TARGETS, "with --peft lora: comma-separated Linear layers, matched as "
                                                     "name suffixes (attention.qkv, attention.out, ffn.up, ffn.down, "
                                                     "pooler.dense)", metavar="NAMES")
    adapter_size: int = option(64, "with --peft adapter: the bottleneck width", min=1)

    def __post_init__(self) -> None:
        if isinstance(self.freeze, int) and not isinstance(self.freeze, bool):
            self.freeze = str(self.freeze)  # freeze=3 from Python
        super().__post_init__()
        if self.freeze is not None and self.freeze != "encoder" and not self.freeze.isdigit():
            raise BertkitError(f"--freeze {self.freeze!r}: give encoder or a number of layers")
        if self.freeze is not None and self.peft is not None:
            raise BertkitError("give --freeze or --peft, not both")
        defaults = EfficientOptions.__dataclass_fields__
        changed = [name for name in _LORA_FIELDS if getattr(self, name) != defaults[name].default]
        if changed and self.peft != "lora":
            raise BertkitError(f"--{changed[0].replace('_', '-')} goes with --peft lora")
        if self.adapter_size != defaults["adapter_size"].default and self.peft != "adapter":
            raise BertkitError("--adapter-size goes with --peft adapter")


# -- which parameters train ------------------------------------------------------------------------------------


def _train_only(model: nn.Module, trainable: Callable[[str], bool]) -> None:
    """Train the parameters whose names `trainable` accepts, and the task head always."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith("bert.") or trainable(name)


def freeze(model: nn.Module, spec: str) -> nn.Module:
    """`spec` "encoder": the whole encoder (pooler included) is frozen; "N": the embeddings and layers 0..N-1."""
    if spec == "encoder":
        _train_only(model, lambda name: False)
        return model
    if not spec.isdigit():
        raise BertkitError(f"--freeze {spec!r}: give encoder or a number of layers")
    count, layers = int(spec), model.config.num_hidden_layers
    if count > layers:
        raise BertkitError(f"--freeze {count}: the model has only {layers} layers")
    frozen = ("bert.embeddings.",) + tuple(f"bert.layers.{i}." for i in range(count))
    _train_only(model, lambda name: not name.startswith(frozen))
    return model


def bitfit(model: nn.Module) -> nn.Module:
    """BitFit (Ben Zaken et al. 2022): every bias term of the encoder, LayerNorm biases included."""
    _train_only(model, lambda name: name.endswith(".bias"))
    return model


# -- LoRA ---------------------------------------------------------------------------------------------------


def _encoder_linears(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if name.startswith("bert.") and isinstance(module, nn.Linear)]


def lora_config(rank: int, alpha: float, dropout: float, targets: str | list[str], model: nn.Module):
    """PEFT's LoraConfig, with every target pattern checked against the encoder's Linear layers.

    A pattern is a name suffix, as PEFT matches it. PEFT fails only when no pattern matches anything
    (peft #377 was the silent no-op); a typo in one of several targets would still pass there, so each
    pattern is checked here, and the head, which is trained in full, is not a target.
    """
    from peft import LoraConfig

    patterns = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else list(targets)
    linears = _encoder_linears(model)

    def matches(name: str, pattern: str) -> bool:
        return name == pattern or name.endswith("." + pattern)

    for pattern in patterns:
        if not pattern or not any(matches(name, pattern) for name in linears):
            known = sorted({re.sub(r"^bert\.(layers\.\d+\.)?", "", name) for name in linears})
            raise BertkitError(f"--lora-targets {pattern!r} matches no layer of the encoder (its Linear layers: "
                               f"{', '.join(known)})")
    # Full names, so that no pattern reaches into the head, and adapter_config.json says exactly what is adapted.
    matched = [name for name in linears if any(matches(name, p) for p in patterns)]
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=matched, bias="none")


def _inject_lora(model: nn.Module, config):
    """Put LoRA layers into `model` in place; returns PEFT's tuner, whose merge_and_unload folds them."""
    from peft.tuners.lora import LoraModel

    tuner = LoraModel(model, config, "default")
    _train_only(model, lambda name: ".lora_" in name)
    return tuner


def lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.1,
         targets: str | list[str] = DEFAULT_LORA_TARGETS) -> nn.Module:
    config = lora_config(rank, alpha, dropout, targets, model)
    _inject_lora(model, config)
    model.bertkit_adapter = {"method": "lora", "lora_rank": rank, "lora_alpha": alpha, "lora_dropout": dropout,
                             "lora_targets": targets if isinstance(targets, str) else ",".join(targets)}
    model.bertkit_lora_config = config
    return model


# -- Houlsby adapters ----------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """h + up(act(down(h))). The up-projection starts at zero, so a fresh adapter is exactly the identity."""

    def __init__(self, config: BertConfig, size: int) -> None:
        super().__init__()
        self.down = nn.Linear(config.hidden_size, size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.up = nn.Linear(size, config.hidden_size)
        nn.init.normal_(self.down.weight, std=config.initializer_range)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


class Adapted(nn.Module):
    """A sublayer's output projection followed by its adapter, before the residual and LayerNorm (Houlsby)."""

    def __init__(self, linear: nn.Linear, adapter: Bottleneck) -> None:
        super().__init__()
        self.linear = linear
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.linear(x))


def _is_houlsby_weight(name: str) -> bool:
    """What a Houlsby adapter directory holds of the encoder: the adapters and, as the paper trains them, the LayerNorms."""
    return name.startswith("bert.") and (".adapter." in name or ".norm." in name)


def bottleneck_adapters(model: nn.Module, size: int = 64) -> nn.Module:
    """Houlsby et al. 2019: an adapter after the attention output and one after the feed-forward output of every
    layer. As in the paper, the adapters, the LayerNorms and the head train; the rest stays frozen."""
    for module in list(model.bert.modules()):
        if isinstance(module, SelfAttention):
            module.out = Adapted(module.out, Bottleneck(model.config, size))
        elif isinstance(module, FeedForward):
            module.down = Adapted(module.down, Bottleneck(model.config, size))
    _train_only(model, _is_houlsby_weight)
    model.bertkit_adapter = {"method": "adapter", "adapter_size": size}
    return model


# -- the prepare_model hook -----------------------------------------------------------------------------------


def trainable_summary(model: nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"training {trainable:,} of {total:,} parameters ({100 * trainable / total:.3g}%)"


def prepare(model: nn.Module, options: EfficientOptions) -> nn.Module:
    if options.freeze is not None:
        freeze(model, options.freeze)
    elif options.peft == "bitfit":
        bitfit(model)
    elif options.peft == "lora":
        lora(model, options.lora_rank, options.lora_alpha, options.lora_dropout, options.lora_targets)
    elif options.peft == "adapter":
        bottleneck_adapters(model, options.adapter_size)
    print(trainable_summary(model), file=sys.stderr)
    return model


def preparer(options: EfficientOptions, then: Callable[[nn.Module], nn.Module] | None = None
             ) -> Callable[[nn.Module], nn.Module] | None:
    """The `prepare_model` hook for these options, followed by the caller's own hook `then`; None when neither
    changes anything (everything trains)."""
    if options.freeze is None and options.peft is None:
        return then
    if then is None:
        return lambda model: prepare(model, options)
    return lambda model: then(prepare(model, options))


# -- adapter directories -----------------------------------------------------------------------------------


def is_adapter_dir(config: BertConfig) -> bool:
    return ADAPTER_KEY in config.extra


def refuse_adapter_dir(directory: Path, config: BertConfig) -> None:
    """For commands that take plain model directories only (export): a one-line error pointing to `merge`."""
    method = config.extra.get(ADAPTER_KEY, {}).get("method")
    if method == "lora":
        raise BertkitError(f"{directory} is a LoRA adapter directory; fold it into a plain model with "
                           f"`bertkit merge --model {directory} --out NEW_DIR` and export that")
    if method is not None:
        raise BertkitError(f"{directory} is a Houlsby adapter directory, which cannot be merged into a plain model "
                           "or exported; it predicts and serves as it is")


def check_base(model: nn.Module, base_dir: Path | None) -> None:
    """An adapter is saved with the path of its base model, so the base must be a directory that stays."""
    if getattr(model, "bertkit_adapter", None) is not None and base_dir is None:
        raise BertkitError("with --peft lora or adapter, model= must be a model directory or hub id: the adapter "
                           "directory refers to its base model by path")


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from bertkit.fileio import atomic_path

    with atomic_path(path) as tmp:
        save_file(_tensors(state), str(tmp), metadata={"format": "pt"})


def save_trained(model: nn.Module, out_dir: Path, base_dir: Path | None) -> None:
    """Save a fine-tuned model: an adapter directory when it carries adapters, a plain model directory otherwise."""
    from bertkit.checkpoint import save_model
    from bertkit.export import weights_digest
    from bertkit.fileio import atomic_write_text, remove_debris

    info = getattr(model, "bertkit_adapter", None)
    if info is None:
        save_model(model, out_dir)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_debris(out_dir)
    if info["method"] == "lora":
        from peft.utils import get_peft_model_state_dict

        adapter = get_peft_model_state_dict(model)
        model.bertkit_lora_config.save_pretrained(str(out_dir))  # adapter_config.json
    else:
        adapter = {k: v for k, v in model.state_dict().items() if _is_houlsby_weight(k)}
    _save_safetensors(adapter, out_dir / ADAPTER_WEIGHTS)
    _save_safetensors({k: v for k, v in model.state_dict().items() if not k.startswith("bert.")}, out_dir / HEAD_WEIGHTS)
    base = base_dir.resolve()
    extra = {**model.config.extra, ADAPTER_KEY: {**info, "base_model": str(base), "base_digest": weights_digest(base)}}
    config = dataclasses.replace(model.config, architectures=[type(model).__name__], extra=extra)
    atomic_write_text(out_dir / "config.json", json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n")


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BertkitError(f"{path}: missing from the adapter directory")
    try:
        return load_file(path)
    except Exception as exc:  # a damaged file fails in many ways
        raise BertkitError(f"{path}: cannot read weights ({type(exc).__name__})") from None


@dataclass
class _SharedBase:
    directory: Path
    digest: str
    encoder: dict[str, torch.Tensor] = field(default_factory=dict)  # bert.* tensors by name, as first loaded


_SHARED: contextvars.ContextVar[_SharedBase | None] = contextvars.ContextVar("bertkit_shared_base", default=None)


@contextlib.contextmanager
def shared_base(base_dir: str | os.PathLike) -> Iterator[None]:
    """Adapter directories loaded inside this block run on the base model in `base_dir`, one copy of its weights
    in memory for all of them (each adapter keeps its own adapter weights, LayerNorms and head). An adapter
    trained on other base weights is a one-line error."""
    from bertkit.checkpoint import resolve_model_dir
    from bertkit.export import weights_digest

    directory = resolve_model_dir(base_dir)
    token = _SHARED.set(_SharedBase(directory, weights_digest(directory)))
    try:
        yield
    finally:
        _SHARED.reset(token)


def _base_of(adapter_dir: Path, info: dict) -> Path:
    """The base model directory to load under an adapter, checked against the weights it was trained on."""
    from bertkit.export import weights_digest

    shared = _SHARED.get()
    if shared is not None:
        if shared.digest != info.get("base_digest"):
            raise BertkitError(f"{adapter_dir}: the adapter was trained on other base weights "
                               f"({info.get('base_model')}) than those in {shared.directory}")
        return shared.directory
    base = Path(info.get("base_model", ""))
    if not (base / "config.json").is_file():
        raise BertkitError(f"{adapter_dir}: its base model {base} is not there; the adapter needs it")
    if weights_digest(base) != info.get("base_digest"):
        raise BertkitError(f"{adapter_dir}: the weights in its base model {base} changed since the adapter was trained")
    return base


def load_adapted(adapter_dir: Path, config: BertConfig, keep_tuner: bool = False):
    """The base model with the adapter and head of `adapter_dir` (a model; with `keep_tuner`, (model, PEFT tuner))."""
    from bertkit.checkpoint import load_model

    info = config.extra[ADAPTER_KEY]
    base_config = dataclasses.replace(config, extra={k: v for k, v in config.extra.items() if k != ADAPTER_KEY})
    base = _base_of(adapter_dir, info)
    model, _ = load_model(base, (config.architectures or [None])[0], base_config)
    if (shared := _SHARED.get()) is not None:  # the frozen base weights: the first adapter's tensors, for all
        encoder = model.bert.state_dict()
        for name, tensor in encoder.items():
            shared.encoder.setdefault(name, tensor)
        model.bert.load_state_dict({name: shared.encoder[name] for name in encoder}, assign=True)
    tuner = None
    if info.get("method") == "lora":
        from peft import LoraConfig
        from peft.utils import set_peft_model_state_dict

        lora_settings = LoraConfig.from_pretrained(str(adapter_dir))
        tuner = _inject_lora(model, lora_settings)
        result = set_peft_model_state_dict(model, _read(adapter_dir / ADAPTER_WEIGHTS))
        if result.unexpected_keys or any(".lora_" in k for k in result.missing_keys):
            raise BertkitError(f"{adapter_dir / ADAPTER_WEIGHTS}: does not fit the adapter_config.json beside it")
        model.bertkit_lora_config = lora_settings
    elif info.get("method") == "adapter":
        bottleneck_adapters(model, int(info["adapter_size"]))
        _load_exactly(model, _read(adapter_dir / ADAPTER_WEIGHTS), adapter_dir / ADAPTER_WEIGHTS, _is_houlsby_weight)
    else:
        raise BertkitError(f"{adapter_dir}: unknown adapter method {info.get('method')!r}")
    _load_exactly(model, _read(adapter_dir / HEAD_WEIGHTS), adapter_dir / HEAD_WEIGHTS, lambda k: not k.startswith("bert."))
    model.bertkit_adapter = {**{k: v for k, v in info.items() if k != "base_digest"}, "base_model": str(base)}
    model.config = config
    return (model, tuner) if keep_tuner else model


def _load_exactly(model: nn.Module, state: dict[str, torch.Tensor], path: Path, belongs: Callable[[str], bool]) -> None:
    """Load `state` into the keys of `model` that `belongs` picks: all of them, no other, each of its shape.

    The tensors are assigned, not copied in, so a base weight shared with other adapters (`shared_base`) is
    replaced in this model only."""
    expected = {k: v.shape for k, v in model.state_dict().items() if belongs(k)}
    if set(state) != set(expected) or any(state[k].shape != shape for k, shape in expected.items()):
        raise BertkitError(f"{path}: its weights do not fit the model in config.json")
    model.load_state_dict(state, strict=False, assign=True)


@dataclass
class MergeOptions(Options):
    """`bertkit merge`: each field a flag."""

    model_dir: str = option(help="the adapter directory (from finetune --peft lora)", flag="--model", metavar="DIR")
    out: str = option(help="the new, plain model directory", metavar="DIR")
    overwrite: bool = option(False, "replace a model already in --out")


def merge(model_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fold a LoRA adapter directory into a plain model directory (transformers, serve, export and predict use it).

    The model is written to a temporary directory beside `out` and renamed, so `out` never holds half of it."""
    from bertkit.checkpoint import load_config, refuse_to_replace_model, resolve_model_dir, save_model
    from bertkit.fileio import TEMP_PREFIX
    from bertkit.tokenizer import BertTokenizer

    MergeOptions(str(model_dir), str(out), overwrite)
    directory = resolve_model_dir(model_dir)
    config = load_config(directory)
    info = config.extra.get(ADAPTER_KEY)
    if info is None:
        raise BertkitError(f"{directory}: not an adapter directory (nothing to merge)")
    if info.get("method") != "lora":
        raise BertkitError(f"{directory}: Houlsby adapters cannot be merged into the weights (each is a small "
                           "nonlinear network); the adapter directory predicts and serves as it is")
    target = Path(out)
    refuse_to_replace_model(target, overwrite, resume=None)
    if target.exists() and not target.is_dir():
        raise BertkitError(f"{target}: is a file; --out is a directory")
    tokenizer = BertTokenizer.from_pretrained(directory)
    _, tuner = load_adapted(directory, config, keep_tuner=True)
    merged = tuner.merge_and_unload(safe_merge=True)  # safe_merge: fail on NaN rather than write it
    merged.config = dataclasses.replace(config, extra={k: v for k, v in config.extra.items() if k != ADAPTER_KEY})
    del merged.bertkit_adapter, merged.bertkit_lora_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{TEMP_PREFIX}{target.name}-"))
    try:
        save_model(merged, staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
