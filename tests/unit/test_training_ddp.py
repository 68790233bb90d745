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
from climai.training.loop import FitResult, Loaders, fit


def _fit(batch: int, ctx: DistContext, nan_box: bool = False) -> FitResult:
    spec, train, val, _ = tiny_sources(nan_box=nan_box)
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
    return fit(cfg, spec, loaders, ctx, log=lambda _m: None)


def _rank(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    queue.put((rank, _fit(2, DistContext(rank, 2, rank, 2)).history))
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
    alone = _fit(4, DistContext()).history
    for rows in ranks.values():
        assert rows[0]["train_loss"] == pytest.approx(alone[0]["train_loss"], rel=1e-4)
        assert rows[0]["val_loss"] == pytest.approx(alone[0]["val_loss"], rel=1e-4)


def _masked_rank(rank: int, port: int, queue) -> None:
    import torch

    torch.manual_seed(0)  # the same initial network on both ranks, as for one process
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    result = _fit(2, DistContext(rank, 2, rank, 2), nan_box=True)
    weights = {k: v.numpy().copy() for k, v in result.state_dict.items()}  # by value, not shm
    queue.put((rank, (result.history, weights)))
    dist.destroy_process_group()


def test_two_ranks_train_the_model_of_one_process_where_targets_are_missing():
    """A target with a missing quarter (as radar masks are): the ranks' batches hold different
    numbers of valid cells. Two ranks of batch 2 train the weights one process of batch 4 trains
    (each rank's mean was weighted equally, so a rank with few valid cells counted as much as
    one with many), and record its train loss."""
    import torch

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(
        _masked_rank, args=(29000 + os.getpid() % 900 + 10, queue), nprocs=2, start_method="spawn"
    )
    ranks = dict(queue.get() for _ in range(2))
    torch.manual_seed(0)
    alone = _fit(4, DistContext(), nan_box=True)
    history, weights = ranks[0]
    assert history[0]["train_loss"] == pytest.approx(alone.history[0]["train_loss"], rel=1e-5)
    for name, w in alone.state_dict.items():
        torch.testing.assert_close(
            torch.from_numpy(weights[name]), w, rtol=1e-4, atol=1e-6, msg=name
        )


def _calibrate(rank: int, port: int, queue) -> None:
    import torch

    from climai.models.unet import ResidualUNet
    from climai.training.guard import guard, noise_weights
    from climai.training.loop import Objective

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    spec, train, val, _ = tiny_sources()
    loaders = Loaders(
        PatchDataset(train, 16, 8, 8, 0),
        PatchDataset(val, 16, 8, 16, 1000),
        Collate(spec),
        2,
        0,
        0,
    )
    torch.manual_seed(0)  # the same network on both ranks, as DDP keeps it
    model = ResidualUNet(spec.in_channels, spec.out_channels, [4, 8], noise_channels=2).eval()
    with torch.no_grad():
        for w in [*noise_weights(model).values(), model.head.weight]:  # zero at the start
            w.normal_(0.0, 0.3)
    records = {}
    for rule in ("noise", "inflation"):
        _, record = guard(
            model, loaders, Objective(spec, 2), DistContext(rank, 2, rank, 2),
            calibrate=True, fallback=False, calibrate_by=rule, members=3, seed=0,
            log=lambda _m: None, max_batches=2,
        )  # fmt: skip
        records[rule] = record["calibration"]
    queue.put((rank, records))
    dist.destroy_process_group()


def test_two_ranks_calibrate_the_ensemble_on_all_their_val_patches_alike():
    """The spread/skill ratio of every calibration trial is summed over both ranks' val
    patches: the ranks find the same factor from the same ratios (each rank's own half gave
    each its own)."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(
        _calibrate, args=(29000 + os.getpid() % 900 + 100, queue), nprocs=2, start_method="spawn"
    )
    ranks = dict(queue.get() for _ in range(2))
    for rule in ("noise", "inflation"):
        assert ranks[0][rule] == ranks[1][rule]
    assert len(ranks[0]["noise"]["trials"]) > 1
    assert all(len(t) > 1 for t in ranks[0]["inflation"]["trials"].values())  # per variable
