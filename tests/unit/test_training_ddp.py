"""Training under DDP (two CPU processes, gloo) records what one process records."""

from __future__ import annotations

import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from climai.config import UNetConfig
from climai.data.dataset import Collate, PatchDataset
from climai.testing import tiny_sources
from climai.training.distributed import DistContext
from climai.training.loop import Loaders, fit


def _fit(batch: int, ctx: DistContext) -> list[dict]:
    spec, train, val, _ = tiny_sources()
    loaders = Loaders(
        PatchDataset(train, 16, 8, 16, 0),
        PatchDataset(val, 16, 8, 8, 1000),
        Collate(spec),
        batch,
        0,
        0,
    )
    cfg = UNetConfig(
        epochs=1, patch=16, batch=batch, channels=[4, 8], bf16=False, warmup_steps=1, ema_decay=0
    )
    return fit(cfg, spec, loaders, ctx, log=lambda _m: None).history


def _rank(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    queue.put((rank, _fit(2, DistContext(rank, 2, rank, 2))))
    dist.destroy_process_group()


def test_two_ranks_record_the_train_loss_of_all_their_patches():
    """Two ranks of batch 2 see the patches one process of batch 4 sees: the same train loss
    (the mean over the ranks, not rank 0's half) and val loss, on every rank."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(
        _rank, args=(29000 + os.getpid() % 900 + 50, queue), nprocs=2, start_method="spawn"
    )
    ranks = dict(queue.get() for _ in range(2))
    alone = _fit(4, DistContext())
    for rows in ranks.values():
        assert rows[0]["train_loss"] == pytest.approx(alone[0]["train_loss"], rel=1e-4)
        assert rows[0]["val_loss"] == pytest.approx(alone[0]["val_loss"], rel=1e-4)
