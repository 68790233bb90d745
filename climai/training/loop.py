"""The training loop: one loop from one CPU to many GPUs.

AdamW with linear warm-up and cosine decay, gradient clipping, EMA weights, validation of the EMA
each epoch, early stopping; bf16 autocast where supported, channels_last, optional
``torch.compile``; DDP across processes; atomic checkpoints every N steps and on SIGTERM/SIGUSR1,
resumed by themselves. Deterministic and exactly resumable on CPU given the seed.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from climai.config import EmulatorConfig
from climai.data.dataset import Batch, Collate, EpochSampler, PatchDataset, batches_per_epoch
from climai.data.features import FeatureSpec
from climai.models.constraints import conserve
from climai.plugins import unbindable
from climai.registry import build_network, method_type
from climai.training import TrainingInterrupted
from climai.training.checkpoint import (
    SignalFlags,
    load_latest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from climai.training.distributed import DistContext, all_gather_scalar, all_reduce_sum
from climai.training.ema import EMA
from climai.training.finetune import freeze, load_parent_weights
from climai.training.history import epoch_row
from climai.training.losses import LOSSES, fair_crps, in_units
from climai.training.schedule import warmup_cosine, warmup_warning


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (AVX512-BF16/AMX on CPU; Ampere or newer on GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def build_model(cfg: EmulatorConfig, spec: FeatureSpec) -> nn.Module:
    """The network of ``cfg``'s method type: what its registry ``build(cfg, in_channels,
    out_channels)`` returns (the U-Net types: :func:`climai.models.unet.build_unet`)."""
    model = build_network(cfg.type, cfg, spec.in_channels, spec.out_channels)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"method type {cfg.type!r}: build() returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    # called as net(x, base): a plugin's forward(x) would fail at the first batch
    if (found := unbindable(model.forward, 2)) is not None:
        raise TypeError(
            f"method type {cfg.type!r}: its network's forward must take (x, base) "
            f"(docs/add-an-emulator.md); {type(model).__name__}.forward has the signature "
            f"{found}"
        )
    multiple = int(getattr(model, "multiple", 1))
    if cfg.patch % multiple:
        raise ValueError(f"methods.*.patch={cfg.patch} must be a multiple of {multiple}")
    return model


# ---------------------------------------------------------------------------- objective


def constrain(z: torch.Tensor, lr: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Normalised predictions whose physical block means equal the physical LR ``lr``."""
    phys = torch.stack(
        [spec.denormalise(v, z[:, i].float()) for i, v in enumerate(spec.variables)], 1
    )
    phys = conserve(phys, lr, spec.scale, spec.non_negative)
    return torch.stack([spec.normalise(v, phys[:, i]) for i, v in enumerate(spec.variables)], 1)


@dataclass(frozen=True)
class Objective:
    """What a model is trained on: a masked loss (``LOSSES``), or the fair CRPS over ``members``
    draws."""

    spec: FeatureSpec
    members: int = 1
    constraint: str = "none"
    autocast: bool = False
    loss: str = "mse"
    space: str = "transformed"

    def predict(self, model: nn.Module, batch: Batch, members: int = 1) -> torch.Tensor:
        """``(B, M, V, p, p)`` normalised predictions (``M = members``)."""
        x, base, lr = batch.x, batch.base.nan_to_num(0.0), batch.lr
        if members > 1:
            x = x.repeat_interleave(members, 0)
            base = base.repeat_interleave(members, 0)
            lr = lr.repeat_interleave(members, 0)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            z = model(x, base)
        z = z.float()
        if self.constraint == "conserve":
            z = constrain(z, lr, self.spec)
        return z.reshape(batch.x.shape[0], members, *z.shape[1:])

    def sums(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss × valid cells, valid cells) of a batch: the exact mean across batches and ranks."""
        pred = self.predict(model, batch, self.members)
        count = torch.isfinite(batch.target).sum()
        if self.members > 1:
            loss = fair_crps(pred, batch.target)
        else:
            p, t = pred[:, 0], batch.target
            if self.space == "physical":
                p, t = in_units(p, self.spec), in_units(t, self.spec)
            loss = LOSSES[self.loss](p, t)
        return loss * count.clamp(min=1), count


def make_objective(cfg: EmulatorConfig, spec: FeatureSpec, device: torch.device) -> Objective:
    autocast = cfg.bf16 and bf16_supported(device)
    if method_type(cfg.type).stochastic:  # the fair CRPS over train_members draws
        return Objective(spec, cfg.train_members, cfg.constraint, autocast)  # type: ignore[attr-defined]
    return Objective(spec, 1, cfg.constraint, autocast, cfg.loss, cfg.loss_space)


# ---------------------------------------------------------------------------- data


@dataclass
class Loaders:
    """The train and val datasets, and how to iterate them."""

    train: PatchDataset
    val: PatchDataset
    collate: Collate
    batch: int
    workers: int
    seed: int

    def loader(self, ds: PatchDataset, epoch: int, ctx: DistContext, start: int = 0) -> DataLoader:
        """The batches of ``ds`` this epoch on this rank from batch ``start``: whole batches of
        the training patches; every one of the validation patches (the last batch may be short)."""
        ds.set_epoch(epoch)
        every = ds is self.val
        sampler = EpochSampler(len(ds), self.batch, ctx.rank, ctx.world, start, every)
        gen = torch.Generator().manual_seed(self.seed + epoch)  # never touches the global RNG
        return DataLoader(
            ds,
            batch_size=self.batch,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.workers,
            pin_memory=ctx.device.type == "cuda",
            drop_last=not every,
            generator=gen,
            persistent_workers=False,
            prefetch_factor=4 if self.workers else None,
        )


# ---------------------------------------------------------------------------- state


@dataclass
class TrainState:
    """Everything that moves during training (saved in checkpoints)."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ema: EMA
    step: int = 0
    epoch: int = 0
    batch: int = 0
    best_loss: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    epoch_losses: list[float] = field(default_factory=list)  # this epoch's batch losses so far
    history: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self, config_sha256: str) -> dict[str, Any]:
        return {
            "config_sha256": config_sha256,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "ema": self.ema.state_dict(),
            "rng": rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "best_loss": self.best_loss,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "epoch_losses": self.epoch_losses,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        for key in ("step", "epoch", "batch", "bad_epochs"):
            setattr(self, key, int(state[key]))
        self.best_loss = float(state["best_loss"])
        self.best_state = state["best_state"]
        self.epoch_losses = [float(x) for x in state["epoch_losses"]]
        self.history = list(state["history"])


def init_state(
    cfg: EmulatorConfig, model: nn.Module, steps_per_epoch: int, device: torch.device
) -> TrainState:
    model.to(device=device, memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]  # frozen parts stay out
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_steps, total))
    return TrainState(model, opt, sched, EMA(model, cfg.ema_decay))


# ---------------------------------------------------------------------------- steps


def train_step(
    net: nn.Module,
    state: TrainState,
    batch: Batch,
    objective: Objective,
    grad_clip: float,
    ctx: DistContext | None = None,
) -> float:
    """One optimiser step on ``batch``; returns the step's loss: the mean over the valid target
    cells of every rank's batch. Under DDP, which averages the ranks' gradients, each rank's sum
    is divided by the valid cells of all ranks × the world size, so the step is the one process
    step on all the batches together, also where the ranks' batches hold different numbers of
    valid (non-NaN) cells, as radar batches do."""
    total, count = objective.sums(net, batch)
    if ctx is not None and ctx.distributed:
        sums = all_reduce_sum(torch.stack([total.detach().double(), count.double()]), ctx)
        loss = total * ctx.world / sums[1].clamp(min=1).to(total.dtype)
        mean = float(sums[0] / sums[1].clamp(min=1))
    else:
        loss = total / count.clamp(min=1)
        mean = float(loss.detach())
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
    state.opt.step()
    state.sched.step()
    state.ema.update(state.model)
    state.step += 1
    state.batch += 1
    return mean


@torch.no_grad()
def validate(model: nn.Module, loaders: Loaders, objective: Objective, ctx: DistContext) -> float:
    """Mean val loss of ``model`` over the fixed val windows, exact across ranks."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for batch in loaders.loader(loaders.val, 0, ctx):
        s, c = objective.sums(model, batch.to(ctx.device))
        total += torch.stack([s.double(), c.double()])
    total = all_reduce_sum(total, ctx)
    if total[1] == 0:
        raise ValueError(
            f"validation: the {len(loaders.val)} val patches hold no valid target cell; "
            "a model cannot be selected: give the val split more time steps (config key split.val)"
            " or raise methods.<name>.patches_per_step"
        )
    return float(total[0] / total[1])


def _stop_requested(flags: SignalFlags, ctx: DistContext) -> tuple[bool, bool]:
    """(save, stop), agreed by every rank so that they checkpoint and stop at the same step."""
    if not ctx.distributed:
        return flags.save, flags.stop
    t = all_reduce_sum(torch.tensor([float(flags.save), float(flags.stop)], device=ctx.device), ctx)
    return bool(t[0] > 0), bool(t[1] > 0)


# ---------------------------------------------------------------------------- fit


@torch.no_grad()
def validation_scores(
    model: nn.Module, loaders: Loaders, objective: Objective, ctx: DistContext
) -> dict[str, dict[str, float]]:
    """Per variable RMSE and MAE in physical units over the fixed val patches.

    Unlike the val loss (in normalised transformed space, in the units of the loss) these compare
    models trained with different losses, learning rates or data: the sweep ranks on them. An
    ensemble is scored by the mean of ``objective.members`` draws. ``bicubic_rmse`` is the
    interpolation baseline on the same cells (cells without an LR value are left out).
    """
    model.eval()
    spec = objective.spec
    # per variable: squared and absolute error of the model, squared error of bicubic, cells
    sums = torch.zeros(len(spec.variables), 4, dtype=torch.float64, device=ctx.device)
    for batch in loaders.loader(loaders.val, 0, ctx):
        batch = batch.to(ctx.device)
        pred = objective.predict(model, batch, objective.members).mean(1)
        for i, v in enumerate(spec.variables):
            truth = spec.denormalise(v, batch.target[:, i].float())
            valid = torch.isfinite(truth) & torch.isfinite(batch.base[:, i])
            diff = (spec.denormalise(v, pred[:, i]) - truth)[valid].double()
            base = (spec.denormalise(v, batch.base[:, i].float()) - truth)[valid].double()
            sums[i] += torch.stack(
                [diff.square().sum(), diff.abs().sum(), base.square().sum(), valid.sum().double()]
            )
    sums = all_reduce_sum(sums, ctx)
    n = sums[:, 3].clamp(min=1)
    return {
        v: {
            "rmse": math.sqrt(float(sums[i, 0] / n[i])),
            "mae": float(sums[i, 1] / n[i]),
            "bicubic_rmse": math.sqrt(float(sums[i, 2] / n[i])),
            "cells": int(sums[i, 3]),
        }
        for i, v in enumerate(spec.variables)
    }


@dataclass
class FitResult:
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)


def start_model(
    cfg: EmulatorConfig, spec: FeatureSpec, init: dict[str, torch.Tensor] | None
) -> tuple[nn.Module, list[str]]:
    """A new model, loaded with ``init`` (fine-tuning) and with ``cfg.freeze`` parts frozen.

    Fine-tuning needs a weight layout (registry ``layout``: the config refuses ``init_from``
    without one); freezing by level is the U-Nets' (their ``freeze`` key)."""
    model = build_model(cfg, spec)
    if init is not None:
        load_parent_weights(model, init)
    parts = list(getattr(cfg, "freeze", []))
    return model, freeze(model, len(cfg.channels), parts) if parts else []  # type: ignore[attr-defined]


def fit(
    cfg: EmulatorConfig,
    spec: FeatureSpec,
    loaders: Loaders,
    ctx: DistContext,
    checkpoint_dir: Path | None = None,
    config_sha256: str = "",
    log: Callable[[str], None] = print,
    init: dict[str, torch.Tensor] | None = None,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
    identity: dict[str, str] | None = None,
) -> FitResult:
    """Train from scratch, from ``init`` weights (fine-tuning) or from the latest checkpoint of
    the same config and ``identity`` (data and parent checksums, :func:`load_latest`);
    return the best EMA weights, the history and the validation scores of those weights.
    ``on_epoch(history)`` is called on the main process after each epoch."""
    torch.manual_seed(loaders.seed)
    spe = batches_per_epoch(len(loaders.train), loaders.batch, ctx.world)
    if spe == 0:
        raise ValueError(
            f"one epoch holds {len(loaders.train)} patches: fewer than batch={loaders.batch} "
            f"per process; raise patches_per_step or lower batch"
        )
    model, frozen = start_model(cfg, spec, init)
    if frozen:
        log(f"frozen: {', '.join(cfg.freeze)} ({len(frozen)} parameter tensors)")
    state = init_state(cfg, model, spe, ctx.device)
    if warning := warmup_warning(cfg.warmup_steps, cfg.epochs * spe, cfg.lr):
        log(warning)
    key = {"config_sha256": config_sha256, **(identity or {})}
    if checkpoint_dir is not None and (ckpt := load_latest(checkpoint_dir, key, log)):
        state.load_state_dict(ckpt)
        log(f"resumed from step {state.step} (epoch {state.epoch + 1}, batch {state.batch})")
    net: nn.Module = state.model
    if ctx.distributed:
        net = DistributedDataParallel(
            net, device_ids=[ctx.device.index] if ctx.device.index is not None else None
        )
    if cfg.compile:
        net = torch.compile(net)
    objective = make_objective(cfg, spec, ctx.device)

    def checkpoint() -> None:
        if checkpoint_dir is not None and ctx.is_main:
            save_checkpoint(checkpoint_dir, {**state.state_dict(config_sha256), "identity": key})

    with SignalFlags() as flags:
        while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
            run_epoch(net, state, loaders, objective, cfg, ctx, flags, checkpoint, spe)
            end_epoch(state, loaders, objective, ctx, log, cfg.epochs)
            if on_epoch is not None and ctx.is_main:
                on_epoch(state.history)
            state.epoch += 1
            state.batch = 0
            save, stop = _stop_requested(flags, ctx)
            if save or stop:
                checkpoint()
                flags.save = False
            if stop:
                raise TrainingInterrupted(f"stopped by SIGTERM at step {state.step}")
    best = state.best_state if state.best_state is not None else state.ema.shadow.state_dict()
    state.ema.shadow.load_state_dict(best)
    scores = validation_scores(state.ema.shadow, loaders, objective, ctx)
    log("validation: " + ", ".join(f"{v} RMSE {s['rmse']:.4g}" for v, s in scores.items()))
    return FitResult(best, state.history, scores, frozen)


def run_epoch(
    net: nn.Module,
    state: TrainState,
    loaders: Loaders,
    objective: Objective,
    cfg: EmulatorConfig,
    ctx: DistContext,
    flags: SignalFlags,
    checkpoint: Callable[[], None],
    spe: int,
) -> None:
    """The optimiser steps of one epoch, from the sampler position in ``state``."""
    net.train()
    t0 = time.perf_counter()
    start = state.batch
    bar = tqdm(
        total=spe,
        initial=start,
        desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
        file=sys.stderr,
        disable=None if ctx.is_main else True,  # None: off when stderr is not a terminal
        mininterval=10.0,
        ascii=True,
        dynamic_ncols=False,
    )
    for batch in loaders.loader(loaders.train, state.epoch, ctx, start):
        state.epoch_losses.append(
            train_step(net, state, batch.to(ctx.device), objective, cfg.grad_clip, ctx)
        )
        bar.update(1)
        save, stop = _stop_requested(flags, ctx)
        if save or stop or state.step % cfg.checkpoint_every == 0:
            checkpoint()
            flags.save = False
        if stop:
            bar.close()
            raise TrainingInterrupted(f"stopped by SIGTERM at step {state.step}")
    bar.close()
    seconds = time.perf_counter() - t0
    done = (state.batch - start) * loaders.batch * ctx.world
    losses, state.epoch_losses = state.epoch_losses, []
    lr = state.sched.get_last_lr()[0]
    state.history.append(epoch_row(state.epoch + 1, losses, lr, done, seconds))


def end_epoch(
    state: TrainState,
    loaders: Loaders,
    objective: Objective,
    ctx: DistContext,
    log: Callable[[str], None],
    epochs: int,
) -> None:
    """Validate the EMA weights, keep the best, count epochs without improvement."""
    t0 = time.perf_counter()
    val_loss = validate(state.ema.shadow, loaders, objective, ctx)
    row = state.history[-1]
    row["val_loss"] = val_loss
    row["val_seconds"] = time.perf_counter() - t0
    if val_loss < state.best_loss:
        state.best_loss, state.bad_epochs = val_loss, 0
        state.best_state = {k: v.detach().clone() for k, v in state.ema.shadow.state_dict().items()}
    else:
        state.bad_epochs += 1
    log(
        f"epoch {row['epoch']}/{epochs} train {row['train_loss']:.4f} val {val_loss:.4f} "
        f"lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s"
    )
    if ctx.distributed:
        checksum = float(sum(p.detach().double().sum() for p in state.model.parameters()))
        sums = all_gather_scalar(checksum, ctx)
        log(
            f"epoch {row['epoch']} parameter checksums per rank: {' '.join(f'{s:.12e}' for s in sums)}"
        )
