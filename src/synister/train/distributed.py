"""Multi-GPU training through torchrun: one process per GPU, rank 0 writes all files.

``torchrun --nproc_per_node=N -m synister.train NUM_ITERATIONS --setup DIR`` sets WORLD_SIZE,
RANK and LOCAL_RANK; without them training runs as one plain process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a (possibly one-process) training job."""

    enabled: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def _env_int(name: str) -> int:
    value = os.environ.get(name, "0")
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from err


def init_distributed(device: torch.device | None) -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun; choose this process's device.

    NCCL on GPUs, gloo on CPU (so the same code path runs, slowly, without a GPU).
    """
    if not launched_by_torchrun():
        if device is None:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Distributed(), torch.device(device)
    local_rank = _env_int("LOCAL_RANK")
    if device is None:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    ctx = Distributed(
        enabled=True, rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size()
    )
    return ctx, device


def any_rank(flag: bool, ctx: Distributed, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. one rank got Ctrl-C)."""
    if not ctx.enabled:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier(ctx: Distributed) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: Distributed) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
