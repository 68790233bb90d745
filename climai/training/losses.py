"""Training objectives in normalised transformed space; missing target cells never count."""

from __future__ import annotations

from collections.abc import Callable

import torch

from climai.data.features import FeatureSpec

#: ``loss_space: physical``: transformed values are clipped here before the inverse (log1p of
#: 2,980 offsets: 2,980 mm h-1 for rain), so an early wild prediction cannot overflow the loss.
PHYSICAL_LOG_MAX = 8.0


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


def in_units(z: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """``(..., V, p, p)`` normalised values back in each variable's units over its scale: the
    transform's offset (1 mm h-1 for rain's log1p) or, untransformed, its std
    (``loss_space: physical``: the loss then weighs errors as the RMSE that scores them)."""
    out = []
    for i, v in enumerate(spec.variables):
        zi, t = z[..., i, :, :], spec.transform(v)
        if t.name == "identity":
            out.append(zi)  # (x - mean) / std: already in units of its std
            continue
        s = spec.stats[v]
        zi = zi.clamp(max=(PHYSICAL_LOG_MAX - s["mean"]) / s["std"])
        out.append(spec.denormalise(v, zi) / t.offset)
    return torch.stack(out, -3)


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
