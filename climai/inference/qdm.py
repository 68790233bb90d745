"""The per-cell QDM baseline's prediction (method type ``qdm``, :mod:`climai.models.qdm`).

QDM needs every time step of a cell at once (its quantiles over the train split and the ranks of
the predicted split), so it streams by bands of HR rows, not by time blocks: for each band it
reads the band's HR truth on the train split, interpolates the LR rows that cover the band (with
a halo of LR rows, so the band's bicubic values equal the whole domain's), fits and adjusts, and
holds only ``band_cells`` train cells (plus the band of the predicted split) at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import xarray as xr

from climai.config import CampaignConfig
from climai.data.prepared import PreparedDataset
from climai.models.interpolate import nan_fill, upsample
from climai.models.qdm import choose_group, qdm_cells
from climai.variables import is_non_negative

HALO = 3
"""LR rows on each side of a band: bicubic's 4-tap kernel reaches at most 2."""


def bands(hr_rows: int, scale: int, row_cells: int, budget: int) -> Iterator[tuple[int, int]]:
    """``(lr_start, lr_stop)`` row bands of the LR grid whose HR rows hold at most ``budget`` cells
    of ``row_cells`` each (at least one LR row per band)."""
    lr_rows = hr_rows // scale
    step = max(1, budget // max(1, row_cells * scale))
    for start in range(0, lr_rows, step):
        yield start, min(lr_rows, start + step)


def band_bicubic(lr: np.ndarray, scale: int, start: int, stop: int, kind: str) -> np.ndarray:
    """(T, (stop − start)·scale, W) bicubic of the (T, h, w) LR field on LR rows
    ``[start, stop)``, equal to those rows of the whole field's bicubic (halo rows, the whole
    field's NaN fill)."""
    t = torch.from_numpy(np.ascontiguousarray(lr, np.float32))[:, None]
    fill = nan_fill(t)
    lo, hi = max(0, start - HALO), min(lr.shape[1], stop + HALO)
    out = upsample(t[:, :, lo:hi], scale, "bicubic", fill)[:, 0]
    out = out[:, (start - lo) * scale : (stop - lo) * scale]
    if is_non_negative(kind):
        out = out.clamp(min=0)
    return out.numpy()


def predict(
    prep: PreparedDataset, split: str, cfg: CampaignConfig, method: str
) -> tuple[np.ndarray, dict[str, xr.DataArray]]:
    """(T, V, H, W) QDM prediction of ``split`` (the ``predict`` of method type ``qdm``), fitted
    per cell on the train split band by band; the fit groups as ``group_<var>`` attributes."""
    qcfg = cfg.methods.get(method)
    train, target = prep.split("train"), prep.split(split)
    train_t, target_t = train.times, target.times
    group = choose_group(train_t, target_t, qcfg.min_group_steps, qcfg.group)  # type: ignore[union-attr]
    scale = cfg.scale
    ny, nx = int(target.sizes["y"]), int(target.sizes["x"])
    out = np.empty((len(target_t), len(cfg.variables), ny, nx), np.float32)
    for i, var in enumerate(cfg.variables):
        lr_train = train.lr(var.name).values
        lr_target = target.lr(var.name).values
        multiplicative = is_non_negative(var.kind)
        budget = qcfg.band_cells // max(1, len(train_t))  # type: ignore[union-attr]
        for start, stop in bands(ny, scale, nx, budget):
            rows = slice(start * scale, stop * scale)
            out[:, i, rows] = qdm_cells(
                train.hr(var.name).isel(y=rows).values,
                band_bicubic(lr_train, scale, start, stop, var.kind),
                band_bicubic(lr_target, scale, start, stop, var.kind),
                train_t,
                target_t,
                multiplicative=multiplicative,
                group=group,
                quantiles=qcfg.quantiles,  # type: ignore[union-attr]
                interp=qcfg.interp,  # type: ignore[union-attr]
                dry_threshold=qcfg.dry_threshold if multiplicative else 0.0,  # type: ignore[union-attr]
                seed=cfg.seed + 3 * i,
                row0=start * scale,
            )
    return out, {}
