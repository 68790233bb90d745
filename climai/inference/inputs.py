"""Checks of what ``climai downscale`` is given: the input's calendar and grid, the output's
suffix. Pure functions; each error names the file or option and what is expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

#: Relative tolerance of an evenly spaced axis: steps may differ by this fraction of the first one
#: (or, for float32 coordinates, by a few units in the last place of the coordinates).
SPACING_RTOL = 1e-4


def check_regular_axis(coord: xr.DataArray, axis: str, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` unless ``coord`` is evenly spaced: every step within
    :data:`SPACING_RTOL` of the first (plus two float ulps of the largest coordinate, so that
    float32 coordinates of a regular grid pass)."""
    values = np.asarray(coord.values)
    if values.size < 3:
        return
    steps = np.diff(values.astype(np.float64))
    tol = SPACING_RTOL * abs(steps[0])
    if np.issubdtype(values.dtype, np.floating):
        tol += 2 * float(np.spacing(np.abs(values).max().astype(values.dtype)))
    if steps[0] == 0 or np.abs(steps - steps[0]).max() > tol:
        bad = int(np.argmax(np.abs(steps - steps[0])))
        raise ValueError(
            f"input {source!r}: LR axis {axis!r} is not evenly spaced (steps from "
            f"{steps.min():g} to {steps.max():g}; step {bad} is {steps[bad]:g}, step 0 is "
            f"{steps[0]:g}); climai downscale needs a regular grid: regrid the input first"
        )


def check_calendar(lr: xr.Dataset, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` unless ``lr``'s time coordinate holds datetime64
    dates (a standard calendar): cftime dates (noleap, 360_day...) cannot be streamed."""
    time = lr["time"]
    if np.issubdtype(time.dtype, np.datetime64):
        return
    try:
        calendar = str(time.dt.calendar)
    except (AttributeError, TypeError):
        calendar = ""
    if calendar:
        raise ValueError(
            f"input {source!r}: its time coordinate uses the {calendar!r} calendar; the model "
            "needs a standard (proleptic_gregorian/gregorian) calendar: convert the input first, "
            "e.g. ds.convert_calendar('standard', align_on='date')"
        )
    raise ValueError(
        f"input {source!r}: its time coordinate is not dates (dtype {time.dtype}); the model "
        "needs times in a standard (proleptic_gregorian/gregorian) calendar"
    )


#: ``--output`` suffixes and what they write.
OUTPUT_FORMATS = {".zarr": "zarr", ".nc": "netcdf", ".nc4": "netcdf"}


def output_format(output: str | Path) -> str:
    """``zarr`` or ``netcdf``, from the suffix of ``output`` (:data:`OUTPUT_FORMATS`); raise
    ``ValueError`` for any other suffix."""
    suffix = Path(output).suffix
    if suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(
            f"--output {str(output)!r} has suffix {suffix or '(none)'!r}; climai downscale writes "
            "a zarr store (.zarr) or a CF NetCDF-4 file (.nc or .nc4): name the output with one "
            "of these suffixes"
        )
    return OUTPUT_FORMATS[suffix.lower()]
