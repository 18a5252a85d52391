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

import dataclasses
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from bertkit.errors import BertkitError
from bertkit.config import BertConfig
from bertkit.model import FeedForward, SelfAttention
from bertkit.ops import ACTIVATIONS

ADAPTER_KEY = "bertkit_adapter"  # in config.json: marks an adapter directory
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_WEIGHTS = "head.safetensors"
PEFT_METHODS = ("lora", "bitfit", "adapter")
DEFAULT_LORA_TARGETS = "attention.qkv,attention.out"


@dataclass
class EfficientOptions:
    """The options of every `finetune` task that choose what is trained."""

    freeze: str | None = field(default=None, metadata={
        "help": "encoder: train the head only; N: freeze the embeddings and the lowest N layers"})
    peft: str | None = field(default=None, metadata={
        "choices": PEFT_METHODS,
        "help": "lora: low-rank updates (peft); bitfit: biases only; adapter: Houlsby bottleneck adapters"})
    lora_rank: int = field(default=8, metadata={"min": 1, "help": "with --peft lora: the rank r"})
    lora_alpha: float = field(default=16.0, metadata={"min": 0.0, "help": "with --peft lora: scale alpha (update x alpha/r)"})
    lora_dropout: float = field(default=0.1, metadata={"min": 0.0, "max": 0.99, "help": "with --peft lora: dropout on the LoRA input"})
    lora_targets: str = field(default=DEFAULT_LORA_TARGETS, metadata={
        "help": "with --peft lora: comma-separated Linear names, matched as name suffixes "
                "(attention.qkv, attention.out, ffn.up, ffn.down, pooler.dense)"})
    adapter_size: int = field(default=64, metadata={"min": 1, "help": "with --peft adapter: bottleneck width"})

    def __post_init__(self) -> None:
        if self.freeze is not None and self.peft is not None:
            raise BertkitError("give --freeze or --peft, not both")
        if self.peft is not None and self.peft not in PEFT_METHODS:
            raise BertkitError(f"unknown --peft {self.peft!r} (choose from {', '.join(PEFT_METHODS)})")
        for name in ("lora_rank", "lora_alpha", "lora_dropout", "adapter_size"):
            meta, value = EfficientOptions.__dataclass_fields__[name].metadata, getattr(self, name)
            if value < meta["min"] or value > meta.get("max", math.inf):
                raise BertkitError(f"--{name.replace('_', '-')} {value} is out of range")


# -- which parameters train ------------------------------------------------------------------------------------


def _train_only(model: nn.Module, trainable: Callable[[str], bool]) -> None:
    """Train the parameters whose names `trainable` accepts, and the task head always."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith("bert.") or trainable(name)


def freeze(model: nn.Module, spec: str) -> nn.Module:
    """`spec` "encoder": the whole encoder (pooler included) is frozen; "N": the embeddings and layers 0..N-1."""
    layers = model.config.num_hidden_layers
    if spec == "encoder":
        _train_only(model, lambda name: False)
        return model
    if not spec.isdigit():
        raise BertkitError(f"--freeze {spec!r}: give encoder or a number of layers")
    count = int(spec)
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
    for pattern in patterns:
        if not pattern or not any(name == pattern or name.endswith("." + pattern) for name in linears):
            known = sorted({name.split(".", 3)[-1] for name in linears})
            raise BertkitError(f"--lora-targets {pattern!r} matches no layer of the encoder (its Linear layers: "
                               f"{', '.join(known)})")
    # Full names, so that no pattern reaches into the head, and adapter_config.json says exactly what is adapted.
    matched = [name for name in linears if any(name == p or name.endswith("." + p) for p in patterns)]
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


def bottleneck_adapters(model: nn.Module, size: int = 64) -> nn.Module:
    """Houlsby et al. 2019: an adapter after the attention output and one after the feed-forward output of every
    layer. As in the paper, the adapters, the LayerNorms and the head train; the rest stays frozen."""
    for module in list(model.bert.modules()):
        if isinstance(module, SelfAttention):
            module.out = Adapted(module.out, Bottleneck(model.config, size))
        elif isinstance(module, FeedForward):
            module.down = Adapted(module.down, Bottleneck(model.config, size))
    _train_only(model, lambda name: ".adapter." in name or ".norm." in name)
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


def preparer(options: EfficientOptions) -> Callable[[nn.Module], nn.Module] | None:
    """The `prepare_model` hook for these options; None when everything trains."""
    if options.freeze is None and options.peft is None:
        return None
    return lambda model: prepare(model, options)


# -- adapter directories -----------------------------------------------------------------------------------


def _head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("bert.")}


def save_trained(model: nn.Module, out_dir: Path, base_dir: Path) -> None:
    """Save a fine-tuned model: an adapter directory when it carries adapters, a plain model directory otherwise."""
    from bertkit.checkpoint import atomic_write_text, save_model, save_safetensors
    from bertkit.export import weights_digest

    info = getattr(model, "bertkit_adapter", None)
    if info is None:
        save_model(model, out_dir)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    if info["method"] == "lora":
        from peft.utils import get_peft_model_state_dict

        adapter = get_peft_model_state_dict(model)
        model.bertkit_lora_config.save_pretrained(str(out_dir))  # adapter_config.json
    else:
        adapter = {k: v for k, v in model.state_dict().items() if k.startswith("bert.") and (".adapter." in k or ".norm." in k)}
    save_safetensors({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, out_dir / ADAPTER_WEIGHTS)
    save_safetensors(_head_state(model), out_dir / HEAD_WEIGHTS)
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


def load_adapted(adapter_dir: Path, config: BertConfig, keep_tuner: bool = False):
    """The base model with the adapter and head of `adapter_dir` (a model; with `keep_tuner`, (model, PEFT tuner))."""
    from bertkit.checkpoint import load_model
    from bertkit.export import weights_digest

    info = config.extra[ADAPTER_KEY]
    base = Path(info.get("base_model", ""))
    if not (base / "config.json").is_file():
        raise BertkitError(f"{adapter_dir}: its base model {base} is not there; the adapter needs it")
    if weights_digest(base) != info.get("base_digest"):
        raise BertkitError(f"{adapter_dir}: the weights in its base model {base} changed since the adapter was trained")
    base_config = dataclasses.replace(config, extra={k: v for k, v in config.extra.items() if k != ADAPTER_KEY})
    model, _ = load_model(base, (config.architectures or [None])[0], base_config)
    tuner = None
    if info["method"] == "lora":
        from peft import LoraConfig
        from peft.utils import set_peft_model_state_dict

        lora_settings = LoraConfig.from_pretrained(str(adapter_dir))
        tuner = _inject_lora(model, lora_settings)
        result = set_peft_model_state_dict(model, _read(adapter_dir / ADAPTER_WEIGHTS))
        if result.unexpected_keys or any(".lora_" in k for k in result.missing_keys):
            raise BertkitError(f"{adapter_dir / ADAPTER_WEIGHTS}: does not fit the adapter_config.json beside it")
        model.bertkit_lora_config = lora_settings
    elif info["method"] == "adapter":
        bottleneck_adapters(model, int(info["adapter_size"]))
        _load_exactly(model, _read(adapter_dir / ADAPTER_WEIGHTS), adapter_dir / ADAPTER_WEIGHTS,
                      lambda k: ".adapter." in k or ".norm." in k)
    else:
        raise BertkitError(f"{adapter_dir}: unknown adapter method {info['method']!r}")
    _load_exactly(model, _read(adapter_dir / HEAD_WEIGHTS), adapter_dir / HEAD_WEIGHTS, lambda k: not k.startswith("bert."))
    model.bertkit_adapter = {k: v for k, v in info.items() if k not in ("base_model", "base_digest")}
    model.config = config
    return (model, tuner) if keep_tuner else model


def _load_exactly(model: nn.Module, state: dict[str, torch.Tensor], path: Path, belongs: Callable[[str], bool]) -> None:
    """Load `state` into the keys of `model` that `belongs` picks: all of them, no other, each of its shape."""
    expected = {k: v.shape for k, v in model.state_dict().items() if belongs(k)}
    if set(state) != set(expected) or any(state[k].shape != shape for k, shape in expected.items()):
        raise BertkitError(f"{path}: its weights do not fit the model in config.json")
    model.load_state_dict(state, strict=False)


def merge(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold a LoRA adapter directory into a plain model directory (transformers, serve, export and predict use it)."""
    from bertkit.checkpoint import load_config, resolve_model_dir, save_model
    from bertkit.tokenizer import BertTokenizer

    directory = resolve_model_dir(adapter_dir)
    config = load_config(directory)
    info = config.extra.get(ADAPTER_KEY)
    if info is None:
        raise BertkitError(f"{directory}: not an adapter directory (nothing to merge)")
    if info["method"] != "lora":
        raise BertkitError(f"{directory}: Houlsby adapters cannot be merged into the weights (each is a small "
                           "nonlinear network); the adapter directory predicts and serves as it is")
    out = Path(out_dir)
    if (out / "config.json").exists():
        raise BertkitError(f"{out} already holds a model; choose another --out")
    tokenizer = BertTokenizer.from_pretrained(directory)
    model, tuner = load_adapted(directory, config, keep_tuner=True)
    merged = tuner.merge_and_unload(safe_merge=True)  # safe_merge: fail on NaN rather than write it
    merged.config = dataclasses.replace(config, extra={k: v for k, v in config.extra.items() if k != ADAPTER_KEY})
    del merged.bertkit_adapter, merged.bertkit_lora_config
    save_model(merged, out)
    tokenizer.save_pretrained(out)
    return out
