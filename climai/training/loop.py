"""The training loop: AdamW, warm-up + cosine schedule, masked loss, bf16 autocast, best-on-val."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from climai.config import UNetConfig
from climai.data.features import SplitTensors
from climai.data.patches import patch_batches
from climai.models.unet import ResidualUNet


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite cells of ``target`` (missing data never counts)."""
    valid = torch.isfinite(target)
    diff = torch.where(
        valid, pred.float() - target.nan_to_num(0.0), torch.zeros((), device=pred.device)
    )
    return (diff**2).sum() / valid.sum().clamp(min=1)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (AVX512-BF16/AMX on CPU; Ampere or newer on GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up for ``warmup`` steps, then cosine decay to 0.05."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def predict_normalised(
    model: ResidualUNet, split: SplitTensors, batch: int, autocast: bool
) -> torch.Tensor:
    """Normalised predictions for every time step of ``split`` on its full domain."""
    model.eval()
    out = []
    for i in range(0, split.x.shape[0], batch):
        x = split.x[i : i + batch].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out.append(model(x, split.base[i : i + batch].nan_to_num(0.0)).float())
    pred = torch.cat(out)
    return pred.masked_fill(torch.isnan(split.base), float("nan"))


def train_model(
    cfg: UNetConfig,
    in_channels: int,
    out_channels: int,
    train: SplitTensors,
    val: SplitTensors,
    scale: int,
    seed: int,
    log: Callable[[str], None] = print,
) -> tuple[ResidualUNet, list[dict[str, Any]]]:
    """Train a residual U-Net; return the weights with the best validation loss and the history."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ResidualUNet(in_channels, out_channels, cfg.channels).to(
        memory_format=torch.channels_last
    )
    if cfg.patch % model.multiple:
        raise ValueError(f"methods.unet.patch={cfg.patch} must be a multiple of {model.multiple}")
    steps_per_epoch = max(1, train.x.shape[0] * cfg.patches_per_step // cfg.batch)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_steps, total))
    autocast = cfg.bf16 and bf16_supported(torch.device("cpu"))
    best: tuple[float, dict[str, torch.Tensor]] = (math.inf, copy.deepcopy(model.state_dict()))
    history: list[dict[str, Any]] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, losses, samples = time.perf_counter(), [], 0
        for x, base, target in patch_batches(
            train, cfg.patch, cfg.batch, cfg.patches_per_step, scale, rng
        ):
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                pred = model(x, base.nan_to_num(0.0))
            loss = masked_mse(pred, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            samples += x.shape[0]
        seconds = time.perf_counter() - t0
        assert val.target is not None
        val_loss = masked_mse(
            predict_normalised(model, val, cfg.batch, autocast), val.target
        ).item()
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "val_loss": val_loss,
            "lr": sched.get_last_lr()[0],
            "samples_per_s": samples / seconds if seconds > 0 else math.nan,
            "seconds": seconds,
        }
        history.append(row)
        log(
            f"epoch {epoch}/{cfg.epochs} train {row['train_loss']:.4f} val {val_loss:.4f} "
            f"lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s"
        )
        if val_loss < best[0]:
            best = (val_loss, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[1])
    return model, history
