"""The per-cell QDM baseline (method type ``qdm``, :mod:`climai.models.qdm`) as the engine applies it.

QDM needs every time step of a cell at once (its quantiles over the train split and the ranks of
the predicted split), so it takes the whole predicted split in one block and fits by bands of HR
rows instead: for each band it reads the band's HR truth on the train split, interpolates the LR
rows that cover the band (with a halo of LR rows, so the band's bicubic values equal the whole
domain's), fits and adjusts, holding ``band_cells`` train cells at a time. Its output block is
the predicted split's HR fields (the one baseline whose memory grows with the split).
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


class QDM:
    """Per-cell QDM of a campaign, fitted on its train split, as the inference engine applies a
    baseline (:mod:`climai.inference.baselines`): ``qdm(lr, times)`` maps ``(T, V, h, w)`` LR
    fields of the steps ``times`` to ``(T, V, H, W)`` HR fields. Each cell's ranks are taken over
    the whole predicted series, so the engine hands it the whole split at once
    (``whole_series``) and the whole domain (``margin`` None); it bounds its own memory by
    fitting bands of HR rows (``band_cells``)."""

    margin = None
    whole_series = True
    needs_times = True

    def __init__(self, prep: PreparedDataset, cfg: CampaignConfig, method: str) -> None:
        self.prep, self.cfg, self.method = prep, cfg, method
        self.extra: dict[str, xr.DataArray] = {}

    def __call__(self, lr: np.ndarray, times: np.ndarray) -> np.ndarray:
        cfg, qcfg = self.cfg, self.cfg.methods.get(self.method)
        train = self.prep.split("train")
        train_t = train.times
        group = choose_group(train_t, qcfg.min_group_steps, qcfg.group)  # type: ignore[union-attr]
        scale = cfg.scale
        steps, nv, h, w = lr.shape
        ny, nx = h * scale, w * scale
        out = np.empty((steps, nv, ny, nx), np.float32)
        budget = qcfg.band_cells // max(1, len(train_t))  # type: ignore[union-attr]
        for i, var in enumerate(cfg.variables):
            lr_train = train.lr(var.name).values
            multiplicative = is_non_negative(var.kind)
            for start, stop in bands(ny, scale, nx, budget):
                rows = slice(start * scale, stop * scale)
                out[:, i, rows] = qdm_cells(
                    train.hr(var.name).isel(y=rows).values,
                    band_bicubic(lr_train, scale, start, stop, var.kind),
                    band_bicubic(lr[:, i], scale, start, stop, var.kind),
                    train_t,
                    np.asarray(times),
                    multiplicative=multiplicative,
                    group=group,
                    quantiles=qcfg.quantiles,  # type: ignore[union-attr]
                    interp=qcfg.interp,  # type: ignore[union-attr]
                    dry_threshold=qcfg.dry_threshold if multiplicative else 0.0,  # type: ignore[union-attr]
                    seed=cfg.seed + 3 * i,
                    row0=start * scale,
                )
        return out


def predict(prep: PreparedDataset, cfg: CampaignConfig, method: str) -> QDM:
    """The ``predict`` of method type ``qdm``: the campaign's QDM, applied by the engine."""
    return QDM(prep, cfg, method)
