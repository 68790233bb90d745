"""Interpolation from the LR grid to the HR grid (cell-centred blocks of ``scale`` × ``scale``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample(
    lr: torch.Tensor, scale: int, mode: str = "bicubic", fill: torch.Tensor | None = None
) -> torch.Tensor:
    """Upsample ``(N, C, h, w)`` LR fields to ``(N, C, h*scale, w*scale)``.

    Cell-centred (``align_corners=False``), edges replicated. NaN cells are filled with ``fill``
    (``(N, C, 1, 1)``; default: the mean of the valid cells of each field) before interpolating and
    are NaN again over their HR footprint. A tile passes the fill of the whole domain, so its
    interpolation equals the domain's.
    """
    if mode not in ("bicubic", "bilinear", "nearest"):
        raise ValueError(f"unknown interpolation {mode!r}; use bicubic, bilinear or nearest")
    missing = torch.isnan(lr)
    if missing.any():
        if fill is None:
            fill = nan_fill(lr)
        lr = torch.where(missing, fill.expand_as(lr), lr)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(lr, scale_factor=scale, mode=mode, **kwargs)
    if missing.any():
        out = out.masked_fill(F.interpolate(missing.float(), scale_factor=scale) > 0, float("nan"))
    return out


def nan_fill(lr: torch.Tensor) -> torch.Tensor:
    """``(N, C, 1, 1)`` mean of the valid cells of each field (0 where none is valid)."""
    return torch.nanmean(lr, dim=(-2, -1), keepdim=True).nan_to_num(0.0)
