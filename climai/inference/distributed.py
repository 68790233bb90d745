"""Inference on every GPU of a job: the ranks of a ``torchrun`` launch share the time chunks.

``climai infer`` relaunches itself under ``torchrun`` in a job with several GPUs (see
:mod:`climai.launch`). Each rank then runs the model on its own device (``cuda:<local rank>``) over
a contiguous share of the output's time chunks, and all ranks write into one zarr store
(:func:`climai.io.shared_streamed_store`): a time chunk belongs to exactly one rank, so no two
ranks ever write the same zarr chunk. The ranks only coordinate (store path, success or failure),
as UTF-8 bytes in uint8 tensors (never pickled objects): a gloo process group on the CPU serves
both CPU and GPU jobs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

#: How long a rank waits for the others at a collective: the ranks' shares differ by at most one
#: chunk, but that chunk may be long; a crashed rank is noticed by torchrun, which stops the rest.
COLLECTIVE_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class InferRanks:
    """This process's place among the ranks of the job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def broadcast(self, obj: str | None) -> str | None:
        """Rank 0's ``obj``, on every rank (a tensor broadcast of its UTF-8 bytes)."""
        if self.world == 1:
            return obj
        data = _encode(obj) if self.rank == 0 else torch.zeros(0, dtype=torch.uint8)
        size = torch.tensor([data.numel()], dtype=torch.int64)
        dist.broadcast(size, src=0)
        if self.rank != 0:
            data = torch.zeros(int(size.item()), dtype=torch.uint8)
        dist.broadcast(data, src=0)
        return _decode(data)

    def gather(self, obj: str | None) -> list[str | None]:
        """Every rank's ``obj`` in rank order, on every rank (tensors, padded to the longest)."""
        if self.world == 1:
            return [obj]
        data = _encode(obj)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64))
        longest = max(int(s.item()) for s in sizes)
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: data.numel()] = data
        parts = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return [_decode(p[: int(s.item())]) for p, s in zip(parts, sizes, strict=True)]


MAX_MESSAGE = 1 << 16
"""The most bytes a rank sends (a store path or an error message; longer ones are cut)."""


def _encode(obj: str | None) -> torch.Tensor:
    """``obj`` as a uint8 tensor: a flag byte (0: None, 1: a string), then its UTF-8 bytes.

    The ranks exchange only such tensors, never pickled objects: a peer on the rendezvous
    cannot make another rank unpickle (run) anything.
    """
    if obj is None:
        return torch.zeros(1, dtype=torch.uint8)
    raw = str(obj).encode("utf-8", errors="replace")[:MAX_MESSAGE]
    return torch.tensor([1, *raw], dtype=torch.uint8)


def _decode(data: torch.Tensor) -> str | None:
    """The string (or None) that :func:`_encode` turned into ``data``."""
    if data.numel() == 0 or int(data[0]) == 0:
        return None
    return bytes(data[1:].tolist()).decode("utf-8", errors="replace")


SINGLE = InferRanks()


def setup_ranks() -> InferRanks:
    """The ranks from the ``torchrun`` environment, with a gloo group joined when there are several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ranks = InferRanks(
        int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))
    )
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    return ranks


def teardown_ranks(ranks: InferRanks) -> None:
    """Leave the process group joined by :func:`setup_ranks`."""
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, ranks: InferRanks) -> torch.device:
    """``device`` for this rank: ``cuda:<local rank>`` for CUDA (one GPU per rank), else itself."""
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if ranks.local_rank >= count:
        raise ValueError(
            f"rank {ranks.rank} has LOCAL_RANK={ranks.local_rank} but torch sees {count} CUDA "
            "device(s): launch at most one process per GPU (torchrun --nproc_per_node)"
        )
    torch.cuda.set_device(ranks.local_rank)
    return torch.device("cuda", ranks.local_rank)


def chunk_share(steps: int, chunk: int, ranks: InferRanks) -> list[tuple[int, slice]]:
    """This rank's ``(chunk index, time steps)``: a contiguous run of whole time chunks.

    ``steps`` time steps in chunks of ``chunk`` (the last one possibly shorter) are dealt to the
    ranks in contiguous runs whose lengths differ by at most one chunk; a rank may get none.
    """
    n = -(-steps // chunk)
    first, last = ranks.rank * n // ranks.world, (ranks.rank + 1) * n // ranks.world
    return [(k, slice(k * chunk, min(steps, (k + 1) * chunk))) for k in range(first, last)]


def chunk_seed(seed: int, chunk: int) -> int:
    """The random seed of time chunk ``chunk``: the same whichever rank draws it, and
    independent of the other chunks' seeds (``SeedSequence`` mixing, not ``seed + chunk``)."""
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1, np.uint64)[0] >> 1)
