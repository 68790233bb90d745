"""Per-cell quantile delta mapping with xsdba: the statistical downscaling baseline of the field.

xsdba (the bias-adjustment library split out of xclim) fits, at every cell, the quantiles of a
model's historical series (``hist``: here the bicubic interpolation of the LR field on the train
split) and of the observed one (``ref``: the HR truth on the train split), grouped by calendar
month or season, and adjusts a series to correct (``sim``: the bicubic of the split to predict)
by quantile delta mapping (QDM, Cannon et al. 2015): each value keeps its rank in its own
period's distribution and receives the ref/hist factor (``kind="*"``, precipitation) or
difference (``kind="+"``, everything else) at that rank, so changes of the predicted period
relative to the train period (trends) are preserved.

Precipitation is zero-inflated: as xsdba's documentation recommends, values below a dry
threshold are replaced by seeded uniform noise below it for the fit (so that ratios of quantiles
are defined), and adjusted values below the threshold are set to 0.

xsdba is imported only when a QDM method runs (it loads numba; ``pip install 'climai[sdba]'``).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

Group = Literal["month", "season", "none"]

_XSDBA_GROUP = {"month": "time.month", "season": "time.season", "none": "time"}


def _labels(times: np.ndarray, group: Group) -> np.ndarray:
    index = pd.DatetimeIndex(times)
    if group == "month":
        return np.asarray(index.month)
    return np.asarray((index.month % 12) // 3)  # DJF 0, MAM 1, JJA 2, SON 3


def choose_group(train_times: np.ndarray, min_steps: int, requested: str = "auto") -> Group:
    """The fit grouping. ``auto``: ``month`` when the train split has at least ``min_steps`` steps
    of every calendar month, else ``season`` on the same rule, else ``none`` (one group): xsdba
    interpolates the adjustment between neighbouring groups, so it needs every group of the
    year. A requested ``month`` or ``season`` that the train split does not cover stops with a
    ValueError naming the missing groups. Only a grouping whose every group is covered is
    chosen, so every time step predicted lies in a fitted group."""
    counts = {
        group: pd.Series(_labels(train_times, group)).value_counts()  # type: ignore[arg-type]
        for group in ("month", "season")
    }
    full = {"month": range(1, 13), "season": range(4)}

    def missing(group: str) -> list[int]:
        return [g for g in full[group] if counts[group].get(g, 0) < min_steps]

    if requested == "auto":
        return next((g for g in ("month", "season") if not missing(g)), "none")  # type: ignore[return-value]
    if requested != "none" and missing(requested):
        raise ValueError(
            f"qdm group {requested!r}: the train split has fewer than min_group_steps="
            f"{min_steps} steps of {requested}s {missing(requested)} "
            f"({len(train_times)} train steps); use group: auto or none"
        )
    return requested  # type: ignore[return-value]


def jitter_dry(values: np.ndarray, threshold: float, seed: int, row0: int = 0) -> np.ndarray:
    """(T, H, W) ``values`` with every finite value below ``threshold`` replaced by uniform noise in
    (0, threshold): xsdba's ``jitter_under_thresh``, reproducible. Each HR row draws from its own
    generator (``seed``, ``row0`` + its index), so a band of rows gets the noise of the whole
    field's rows."""
    if threshold <= 0:
        return values
    out = values.copy()
    low = np.nextafter(np.float32(0), np.float32(1))
    for r in range(out.shape[1]):
        row = out[:, r]
        noise = np.random.default_rng((seed, row0 + r)).uniform(low, threshold, row.shape)
        dry = np.isfinite(row) & (row < threshold)
        row[dry] = noise[dry].astype(out.dtype)
    return out


def qdm_cells(
    ref: np.ndarray,
    hist: np.ndarray,
    sim: np.ndarray,
    train_times: np.ndarray,
    sim_times: np.ndarray,
    *,
    multiplicative: bool,
    group: Group,
    quantiles: int,
    interp: str = "linear",
    dry_threshold: float = 0.0,
    seed: int = 0,
    row0: int = 0,
) -> np.ndarray:
    """``sim`` (T, H, W) adjusted cell by cell by QDM trained on ``ref`` and ``hist`` (T_train, H,
    W), grouped as ``group``. Multiplicative (precipitation) fits see dry values jittered below
    ``dry_threshold`` (noise seeded per HR row: ``row0`` is the first row's index in the whole
    field), and adjusted values below it become 0. NaN cells stay NaN."""
    import xsdba

    # xsdba's units registry redefines pint's units on import: one warning line per unit
    logging.getLogger("pint.util").setLevel(logging.ERROR)

    def wrap(values: np.ndarray, times: np.ndarray) -> xr.DataArray:
        return xr.DataArray(
            np.asarray(values, np.float64),
            dims=("time", "y", "x"),
            coords={"time": times},
            attrs={"units": "1"},
        )

    if multiplicative:
        ref = jitter_dry(ref, dry_threshold, seed, row0)
        hist = jitter_dry(hist, dry_threshold, seed + 1, row0)
        sim = jitter_dry(sim, dry_threshold, seed + 2, row0)
    with xsdba.set_options(extra_output=False):
        model = xsdba.QuantileDeltaMapping.train(
            wrap(ref, train_times),
            wrap(hist, train_times),
            nquantiles=quantiles,
            group=_XSDBA_GROUP[group],
            kind="*" if multiplicative else "+",
        )
        out = model.adjust(wrap(sim, sim_times), interp=interp, extrapolation="constant")
    values = out.transpose("time", "y", "x").values.astype(np.float32)
    if multiplicative:
        values[values < dry_threshold] = 0.0
    values[~np.isfinite(sim)] = np.nan
    return values
