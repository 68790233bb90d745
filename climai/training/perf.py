"""Throughput helpers for the benchmarks: FLOPs of a training step and a measured conv peak."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def train_step_flops(model: nn.Module, x: torch.Tensor, base: torch.Tensor) -> int:
    """FLOPs of one forward and backward pass of ``model`` on ``(x, base)`` (matmul/conv only)."""
    with FlopCounterMode(display=False) as counter:
        model(x, base).float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_peak_flops(
    device: torch.device,
    bf16: bool,
    channels: int = 256,
    size: int = 64,
    batch: int = 16,
    seconds: float = 2.0,
) -> float:
    """Measured FLOP/s of a large channels_last 3×3 convolution (forward), in the given precision.

    The best of several timed repetitions: the attainable conv2d peak of this machine.
    """
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=gen).to(device)
    w = torch.randn(channels, channels, 3, 3, generator=gen).to(device) * 0.01
    dtype = torch.bfloat16 if bf16 else torch.float32
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    w = w.to(dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * channels * channels * 9 * size * size
    best = 0.0
    with torch.no_grad():
        F.conv2d(x, w, padding=1)  # warm-up (kernel selection)
        synchronize(device)
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            F.conv2d(x, w, padding=1)
            synchronize(device)
            best = max(best, flops / (time.perf_counter() - t0))
    return best
