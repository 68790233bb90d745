"""LR fields from HR fields by NaN-aware block mean."""

from __future__ import annotations

import numpy as np
import xarray as xr

from climai.grids import GridError


def _block_mean(values: np.ndarray, scale: int, min_valid_fraction: float) -> np.ndarray:
    *lead, ny, nx = values.shape
    blocks = values.reshape(*lead, ny // scale, scale, nx // scale, scale)
    valid = np.isfinite(blocks)
    count = valid.sum(axis=(-3, -1))
    total = np.where(valid, blocks, 0).sum(axis=(-3, -1), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    mean[count < min_valid_fraction * scale * scale] = np.nan
    return mean.astype(values.dtype)


def coarsen_block_mean(
    da: xr.DataArray, scale: int, min_valid_fraction: float = 0.5
) -> xr.DataArray:
    """Block mean over ``scale`` × ``scale`` HR cells along ``y``/``x``, lazily for dask arrays.

    An LR cell is the mean of its valid (finite) HR cells and is NaN when fewer than
    ``min_valid_fraction`` of them are valid. The LR coordinates ``y``/``x`` are block centres.

    Examples
    --------
    >>> da = xr.DataArray(np.arange(16.0).reshape(4, 4), dims=("y", "x"),
    ...                   coords={"y": np.arange(4.0), "x": np.arange(4.0)})
    >>> coarsen_block_mean(da, 2).values
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    ny, nx = da.sizes["y"], da.sizes["x"]
    if ny % scale or nx % scale:
        raise GridError(f"{da.name!r}: HR grid {ny}×{nx} is not a multiple of scale={scale}")
    da = da.transpose(..., "y", "x")
    if da.chunks is not None:
        da = da.chunk({"y": -1, "x": -1})
    out = xr.apply_ufunc(
        _block_mean,
        da,
        kwargs={"scale": scale, "min_valid_fraction": min_valid_fraction},
        input_core_dims=[["y", "x"]],
        output_core_dims=[["y_lr", "x_lr"]],
        dask="parallelized",
        dask_gufunc_kwargs={"output_sizes": {"y_lr": ny // scale, "x_lr": nx // scale}},
        output_dtypes=[da.dtype],
        keep_attrs=True,
    )
    out = out.rename({"y_lr": "y", "x_lr": "x"})
    return out.assign_coords(
        y=da["y"].values.reshape(-1, scale).mean(axis=1),
        x=da["x"].values.reshape(-1, scale).mean(axis=1),
    )
