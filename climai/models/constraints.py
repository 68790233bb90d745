"""Hard constraints on HR predictions: the block mean of the output equals the LR input.

Additive for unbounded variables (``y + up(lr - blockmean(y))``), multiplicative for non-negative
ones (``y * up(lr / blockmean(y))``, so precipitation stays ≥ 0; a block whose prediction is all
zero takes the LR value uniformly). Works in physical units on ``(N, V, H, W)`` tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def block_mean(y: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean over ``scale`` × ``scale`` blocks: ``(N, V, H, W)`` → ``(N, V, H/scale, W/scale)``.

    The only torch block mean. It cannot share the numpy one
    (:func:`climai.preprocess.coarsen.block_mean_numpy`): :func:`conserve` runs inside the
    model's forward pass, on the model's device and under autograd, which a numpy round trip
    would break. It is not NaN-aware: network outputs have no missing cells.
    """
    return F.avg_pool2d(y, scale)


def conserve(
    y: torch.Tensor, lr: torch.Tensor, scale: int, non_negative: list[bool]
) -> torch.Tensor:
    """``y`` corrected so that every block mean equals ``lr``; NaN LR blocks are left unchanged."""
    if y.shape[1] != len(non_negative) or lr.shape[1] != y.shape[1]:
        raise ValueError(
            f"conserve: prediction has {y.shape[1]} variables, LR {lr.shape[1]}, "
            f"kinds {len(non_negative)}"
        )
    y64 = y.double()
    lr64 = lr.double()
    mean = block_mean(y64, scale)
    out = []
    for v, nonneg in enumerate(non_negative):
        yv, mv, lv = y64[:, v : v + 1], mean[:, v : v + 1], lr64[:, v : v + 1]
        ok = torch.isfinite(lv)
        if nonneg:
            lv = lv.clamp(min=0)
            positive = mv > 0
            ratio = torch.where(positive, lv / torch.where(positive, mv, 1.0), 1.0)
            fixed = torch.where(
                _up(positive, scale), yv * _up(ratio, scale), _up(lv, scale).expand_as(yv)
            )
        else:
            fixed = yv + _up(lv - mv, scale)
        out.append(torch.where(_up(ok, scale), fixed, yv))
    return torch.cat(out, dim=1).to(y.dtype)


def _up(t: torch.Tensor, scale: int) -> torch.Tensor:
    return t.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
