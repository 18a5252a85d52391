"""Multi-process training under torchrun: the only module besides the trainer that knows about ranks.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them everything runs as one process.
gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (rank, world size, this process's device)."""
    world = world_size()
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world == 1:
        return 0, 1, device
    if not torch_dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        torch_dist.init_process_group(backend="nccl" if cuda else "gloo")
    return torch_dist.get_rank(), world, device


def is_main() -> bool:
    """Whether this process logs and saves: rank 0, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every process when it is True on any one: a decision all ranks must take together."""
    if not torch_dist.is_initialized():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if torch_dist.get_backend() == "nccl" else None
    value = torch.tensor([int(flag)], device=device)
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
    return bool(value.item())
