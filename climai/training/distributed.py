"""One process or many: DDP when launched by ``torchrun`` with a world size above 1.

gloo on CPU, NCCL on GPU; each process uses ``cuda:<local rank>`` when GPUs are present. Only rank 0
writes files. Each process's torch threads are the campaign's ``compute.threads`` (set by the stage
before :func:`setup_distributed`; ``torchrun``'s ``OMP_NUM_THREADS=1`` does not apply).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process runs and which part of the work is its own."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup_distributed() -> DistContext:
    """Initialise the process group from the ``torchrun`` environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, local_world, device)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``t`` over all processes (``t`` itself when alone)."""
    if ctx.distributed:
        t = t.clone()
        dist.all_reduce(t)
    return t


def all_gather_scalar(value: float, ctx: DistContext) -> list[float]:
    """``value`` of every rank, in rank order."""
    if not ctx.distributed:
        return [value]
    out = [torch.zeros((), dtype=torch.float64, device=ctx.device) for _ in range(ctx.world)]
    dist.all_gather(out, torch.tensor(value, dtype=torch.float64, device=ctx.device))
    return [float(t) for t in out]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
