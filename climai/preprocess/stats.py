"""Normalisation statistics from the train split only."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import xarray as xr

from climai.variables import transform_for


def normalisation_stats(hr: xr.DataArray, is_train: xr.DataArray, kind: str) -> dict[str, Any]:
    """Mean and std of the transformed HR field over the train time steps, NaN ignored.

    ``is_train`` is a boolean DataArray along ``time``; val and test steps never enter.
    """
    transform = transform_for(kind)
    train = hr.isel(time=np.flatnonzero(is_train.values))
    t = xr.apply_ufunc(transform.forward, train, dask="parallelized", output_dtypes=[np.float64])
    mean, sq = dask.compute(t.mean(skipna=True), (t.astype(np.float64) ** 2).mean(skipna=True))
    mean_f, var = float(mean), float(sq) - float(mean) ** 2
    std = float(np.sqrt(max(var, 0.0)))
    if not np.isfinite(mean_f) or std == 0.0:
        raise ValueError(
            f"variable {hr.name!r}: the train split has no valid values or no variance "
            f"(mean {mean_f}, std {std}); check the data and the split"
        )
    return {"transform": transform.name, "offset": transform.offset, "mean": mean_f, "std": std}
