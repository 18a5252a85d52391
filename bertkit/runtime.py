"""Where a model runs and in which precision: the one rule shared by training and inference.

bf16 autocast is used only where the hardware runs it natively (CUDA with bf16, a CPU with
AVX512-BF16/AMX); elsewhere it is emulated, many times slower than fp32, and never chosen.
"""

from __future__ import annotations

import contextlib

import torch


def bf16_available(device: torch.device) -> bool:
    """Whether `device` runs bf16 natively: CUDA, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_bf16(device: torch.device, fp32: bool = False) -> bool:
    """The precision rule: bf16 where native, unless the caller opts out with `fp32`."""
    return not fp32 and bf16_available(device)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
