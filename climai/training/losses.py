"""Training objectives in normalised transformed space; missing target cells never count."""

from __future__ import annotations

from collections.abc import Callable

import torch


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite cells of ``target`` (missing data never counts)."""
    valid = torch.isfinite(target)
    diff = torch.where(
        valid, pred.float() - target.nan_to_num(0.0), torch.zeros((), device=pred.device)
    )
    return (diff**2).sum() / valid.sum().clamp(min=1)


def masked_mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the finite cells of ``target`` (missing data never counts)."""
    valid = torch.isfinite(target)
    diff = torch.where(
        valid, pred.float() - target.nan_to_num(0.0), torch.zeros((), device=pred.device)
    )
    return diff.abs().sum() / valid.sum().clamp(min=1)


# Deterministic losses by config name (``methods.<name>.loss``).
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": masked_mse,
    "mae": masked_mae,
}


def fair_crps(members: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fair (unbiased) ensemble CRPS, averaged over the finite cells of ``target``.

    ``members`` is ``(B, M, ...)`` with ``M ≥ 2``, ``target`` ``(B, ...)``::

        CRPS_fair = mean_i |x_i - y| - sum_{i,j} |x_i - x_j| / (2 M (M - 1))
    """
    m = members.shape[1]
    if m < 2:
        raise ValueError(f"the fair CRPS needs at least 2 members, got {m}")
    valid = torch.isfinite(target)
    x = members.float()
    y = target.nan_to_num(0.0).unsqueeze(1)
    skill = (x - y).abs().mean(1)
    spread = torch.zeros_like(skill)
    for i in range(m):
        for j in range(i + 1, m):
            spread = spread + (x[:, i] - x[:, j]).abs()
    crps = skill - spread / (m * (m - 1))  # each unordered pair counted twice in the sum
    crps = torch.where(valid, crps, torch.zeros((), device=crps.device))
    return crps.sum() / valid.sum().clamp(min=1)
