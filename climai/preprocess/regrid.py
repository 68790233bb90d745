"""An independent coarse source (``data.input``) onto the exact LR grid, through xarray-regrid.

The LR grid is the block-centre grid of the HR target (``scale`` × ``scale`` HR cells per LR
cell). A source finer than the LR grid is aggregated conservatively (area-weighted means, NaN-aware
with the same ``min_valid_fraction`` as the block mean); a source as coarse or coarser is
interpolated bilinearly. The source must carry ``y``/``x`` coordinates in the target's CRS (the
ingest stage reprojects it); time is left as it is.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr
import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

from climai.grids import GridError

RegridMethod = Literal["auto", "conservative", "bilinear"]


def lr_grid(target: xr.Dataset | xr.DataArray, scale: int) -> xr.Dataset:
    """The LR grid of ``target``: block centres of ``scale`` × ``scale`` HR cells (``y``, ``x``)."""
    ny, nx = target.sizes["y"], target.sizes["x"]
    if ny % scale or nx % scale:
        raise GridError(f"target: HR grid {ny}×{nx} is not a multiple of scale={scale}")
    return xr.Dataset(
        coords={
            "y": ("y", target["y"].values.reshape(-1, scale).mean(axis=1), target["y"].attrs),
            "x": ("x", target["x"].values.reshape(-1, scale).mean(axis=1), target["x"].attrs),
        }
    )


def _spacing(coord: xr.DataArray, name: str) -> float:
    values = np.asarray(coord.values, np.float64)
    if values.size < 2:
        raise GridError(f"{name}: needs at least 2 cells along {coord.name!r} to regrid")
    steps = np.diff(values)
    if not np.allclose(steps, steps[0], rtol=1e-6):
        raise GridError(f"{name}: coordinate {coord.name!r} is not regularly spaced")
    return abs(float(steps[0]))


def choose_method(source: xr.Dataset | xr.DataArray, grid: xr.Dataset) -> str:
    """``conservative`` when the source is finer than ``grid`` along both axes, else ``bilinear``."""
    finer = all(
        _spacing(source[ax], "data.input") < _spacing(grid[ax], "LR grid") * (1 - 1e-9)
        for ax in ("y", "x")
    )
    return "conservative" if finer else "bilinear"


def regrid_to_lr(
    source: xr.Dataset | xr.DataArray,
    grid: xr.Dataset,
    method: RegridMethod = "auto",
    min_valid_fraction: float = 0.5,
) -> xr.Dataset | xr.DataArray:
    """``source`` on ``grid`` (from :func:`lr_grid`), lazily for dask arrays.

    ``conservative``: the area-weighted mean of the overlapping source cells; an LR cell is NaN
    when less than ``min_valid_fraction`` of its area is covered by valid source cells.
    ``bilinear``: linear in ``y`` and ``x``. The source must cover the grid (an LR cell outside the
    source is an error, not a silent NaN).
    """
    for ax in ("y", "x"):
        if ax not in source.coords:
            raise GridError(f"data.input: has no {ax!r} coordinate (dims {dict(source.sizes)})")
        lo, hi = float(source[ax].min()), float(source[ax].max())
        half = _spacing(source[ax], "data.input") / 2
        g_lo, g_hi = float(grid[ax].min()), float(grid[ax].max())
        if g_lo < lo - half or g_hi > hi + half:
            raise GridError(
                f"data.input: covers {ax} {lo - half:g}..{hi + half:g} but the LR grid spans "
                f"{g_lo:g}..{g_hi:g}"
            )
    if method == "auto":
        method = choose_method(source, grid)  # type: ignore[assignment]
    if method == "conservative":
        out = source.regrid.conservative(
            grid,
            time_dim="time" if "time" in source.dims else None,
            skipna=True,
            nan_threshold=1.0 - min_valid_fraction,
        )
    elif method == "bilinear":
        out = source.regrid.linear(grid, time_dim="time" if "time" in source.dims else None)
    else:
        raise ValueError(f"unknown regrid method {method!r}; use auto, conservative or bilinear")
    out = out.assign_coords(y=grid["y"], x=grid["x"])
    return out.assign_attrs({**source.attrs, "regrid_method": method})
