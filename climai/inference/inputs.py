"""Checks of what ``climai downscale`` is given: the input's calendar and grid, the output's
suffix. Pure functions; each error names the file or option and what is expected."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from pyproj import CRS

from climai.grids import (
    GridError,
    crs_from_dataset,
    crs_variable,
    find_xy,
    is_geographic_axis,
    normalise_longitudes,
    uneven_step,
)
from climai.io.readers import SourceError, check_times

if TYPE_CHECKING:
    from climai.data.features import FeatureSpec

#: Relative tolerance of an evenly spaced axis: steps may differ by this fraction of the first one
#: (or, for float32 coordinates, by a few units in the last place of the coordinates).
SPACING_RTOL = 1e-4


def check_regular_axis(coord: xr.DataArray, axis: str, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` unless ``coord`` is evenly spaced: every step within
    :data:`SPACING_RTOL` of the first, or float32 rounding (:func:`climai.grids.uneven_step`)."""
    bad = uneven_step(np.asarray(coord.values), SPACING_RTOL)
    if bad is not None:
        steps = np.diff(np.asarray(coord.values, dtype=np.float64))
        raise ValueError(
            f"input {source!r}: LR axis {axis!r} is not evenly spaced (steps from "
            f"{steps.min():g} to {steps.max():g}; step {bad} is {steps[bad]:g}, step 0 is "
            f"{steps[0]:g}); climai downscale needs a regular grid: regrid the input first"
        )


def as_xy(ds: xr.Dataset, names: list[str], source: str) -> xr.Dataset:
    """``ds`` with the horizontal dimensions of its first variable among ``names`` called ``y``
    and ``x`` (found by CF ``axis``/``standard_name``, then by names such as lat/lon:
    :func:`climai.grids.find_xy`), longitudes in −180…180 as ingest stores them
    (:func:`climai.grids.normalise_longitudes`); ``ValueError`` naming ``source`` where they
    cannot be told. Without any of ``names``, ``ds`` as it is (:func:`check_input` names them)."""
    name = next((n for n in names if n in ds.data_vars), None)
    if name is None:
        return ds
    try:
        x, y = find_xy(ds, name)
    except GridError as err:
        raise ValueError(f"input {source!r}: {err}") from None
    ds = ds.rename({d: n for d, n in ((x, "x"), (y, "y")) if d != n})
    if "x" in ds.coords and is_geographic_axis(ds["x"]):
        lon = normalise_longitudes(np.asarray(ds["x"].values))
        ds = ds.assign_coords(x=("x", lon, ds["x"].attrs))
    return ds


def with_crs_variable(ds: xr.Dataset, names: list[str], source: str) -> xr.Dataset:
    """``ds`` with its CRS as climai's ``crs`` variable (``crs_wkt`` and CF attributes), read
    from the CF ``grid_mapping`` its variables name (any name; ``crs_wkt``/``spatial_ref`` or
    the CF parameters alone), as ingest reads it, or WGS84 for longitude/latitude axes without
    one; unchanged where ``crs`` already has a WKT or nothing says what the grid is.
    ``ValueError`` naming ``source`` for a grid mapping pyproj cannot read."""
    if crs_wkt(ds):
        return ds
    for name in (n for n in names if n in ds.data_vars):
        da = ds[name]
        gm = str(da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping") or "")
        if not gm or gm.split(":")[0].strip() not in ds.variables:
            continue
        try:
            crs = crs_from_dataset(ds, name, "x")
        except GridError as err:
            raise ValueError(f"input {source!r}: {err}") from None
        gm = gm.split(":")[0].strip()
        out = ds.drop_vars(gm).assign(crs=crs_variable(crs))
        for v in names:
            if v in out.data_vars:
                out[v].attrs["grid_mapping"] = "crs"
                out[v].encoding.pop("grid_mapping", None)
        return out
    if "x" in ds.coords and is_geographic_axis(ds["x"]) and not is_rotated(ds):
        # no grid mapping on longitude/latitude axes: WGS84, as ingest reads such a file
        out = ds.assign(crs=crs_variable(CRS.from_epsg(4326)))
        for v in names:
            if v in out.data_vars:
                out[v].attrs["grid_mapping"] = "crs"
        return out
    return ds


def is_rotated(ds: xr.Dataset) -> bool:
    """Whether ``ds``'s x axis is a rotated-pole grid longitude (which needs its grid mapping)."""
    return ds["x"].attrs.get("standard_name") == "grid_longitude"


def in_model_units(lr: xr.Dataset, units: dict[str, str], source: str) -> xr.Dataset:
    """``lr`` with each variable of ``units`` (the model card's) converted to the model's units
    where its own differ and convert (``kg m-2 s-1`` → ``mm h-1``, ``degC`` → ``K``: as ingest
    converts, lazily); ``ValueError`` naming ``source``, the variable and both units where they
    do not (an accumulation per step, dBZ, another quantity). Without units, unchanged
    (:func:`check_input` names it)."""
    from climai.units import UnitsError, convert, is_amount, is_rate

    out = lr
    for name, want in units.items():
        if name not in lr.data_vars or lr[name].attrs.get("units") in (None, want):
            continue
        found = str(lr[name].attrs["units"])
        if is_amount(found) and is_rate(want):
            raise ValueError(
                f"input {source!r}: variable {name!r} has units {found!r}, an amount per step; "
                f"the model expects the rate {want!r}: divide by each step's length first"
            )
        try:
            out = out.assign({name: convert(lr[name], want, name, f" in input {source!r}")})
        except UnitsError as err:
            raise ValueError(f"{err}; the model expects {want!r}") from None
    return out


def check_calendar(lr: xr.Dataset, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` unless ``lr``'s time coordinate holds datetime64
    dates: :func:`~climai.inference.downscale.open_input` reads the model calendars climai runs
    on (:data:`climai.io.calendars.ACCEPTED`, noleap included) as such and refuses the others,
    so what is left here are times that are not dates at all."""
    from climai.io.calendars import ACCEPTED

    time = lr["time"]
    if np.issubdtype(time.dtype, np.datetime64):
        return
    raise ValueError(
        f"input {source!r}: its time coordinate is not dates (dtype {time.dtype}); the model "
        f"needs dates in one of the calendars {', '.join(ACCEPTED)}"
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


def oriented(lr: xr.Dataset, grid: dict[str, Any], scale: int) -> xr.Dataset:
    """``lr`` with each axis in the model's direction (``grid``: the model card's): an input
    stored the other way round (rows north to south where the model's y grows northward, as
    radar products often are) is flipped, so the output follows the model's order."""
    for axis, key in (("x", "hr_dx"), ("y", "hr_dy")):
        want, found = grid.get(key), spacing(lr[axis])
        if want is not None and found * want < 0 and np.isclose(-found, want * scale, rtol=1e-3):
            lr = lr.isel({axis: slice(None, None, -1)})
    return lr


def spacing(coord: xr.DataArray) -> float:
    """The step of an axis (its first two values; NaN for a single cell)."""
    values = np.asarray(coord.values, dtype=np.float64)
    return float(values[1] - values[0]) if values.size > 1 else float("nan")


def crs_wkt(ds: xr.Dataset) -> str:
    """The WKT of ``ds``'s ``crs`` variable ("" without one)."""
    if "crs" not in ds.variables:
        return ""
    return str(ds["crs"].attrs.get("crs_wkt", ds["crs"].attrs.get("spatial_ref", "")))


def check_input(lr: xr.Dataset, card: dict[str, Any], spec: FeatureSpec, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` unless ``lr`` has the model's variables (on time, y
    and x, in any order), units, dates (any calendar climai runs on), an evenly spaced grid with the model's LR
    spacing, and its CRS."""
    missing = [v for v in spec.variables if v not in lr]
    if missing:
        raise ValueError(
            f"input {source!r} lacks variables {missing}; the model needs {spec.variables}, "
            f"the input has {sorted(map(str, lr.data_vars))}"
        )
    for v in spec.variables:
        found, want = lr[v].attrs.get("units"), card["units"][v]
        if found != want:
            raise ValueError(
                f"input {source!r}: variable {v!r} has units {found!r}; the model expects {want!r}"
            )
        if set(lr[v].dims) != {"time", "y", "x"}:
            raise ValueError(
                f"input {source!r}: variable {v!r} has dims {lr[v].dims}; expected (time, y, x)"
            )
    check_calendar(lr, source)
    try:  # one value per step, in order (a glob of files was checked as it was joined)
        check_times(lr, "time", f"input {source!r}", "--input")
    except SourceError as err:
        raise ValueError(str(err)) from None
    for axis in ("x", "y"):
        if lr.sizes[axis] < 2:
            raise ValueError(
                f"input {source!r}: {lr.sizes[axis]} LR cell along {axis}; at least 2 are needed "
                "(the grid's spacing and the HR cells come from them)"
            )
        check_regular_axis(lr[axis], axis, source)
    grid = card["grid"]
    if grid.get("hr_dx") is None:  # trained on several grids (train_on): any spacing and CRS
        return
    for axis, key in (("x", "hr_dx"), ("y", "hr_dy")):
        want, found = grid[key] * spec.scale, spacing(lr[axis])
        if not np.isclose(found, want, rtol=1e-3):
            raise ValueError(
                f"input {source!r}: LR spacing along {axis} is {found:g}; the model expects "
                f"{want:g} (HR {grid[key]:g} × scale {spec.scale})"
            )
    check_crs(lr, grid.get("crs_wkt", ""), f"input {source!r}")


def same_crs(a: CRS, b: CRS) -> bool:
    """Whether ``a`` and ``b`` place a grid's x/y alike: equal up to axis order, or the same
    datum and projection under other names (EPSG:3035 against its CF parameters, whose WKT
    names it 'unknown' and orders the axes easting, northing)."""
    if a.equals(b, ignore_axis_order=True):
        return True
    return (
        a.is_geographic == b.is_geographic
        and a.datum == b.datum
        and a.coordinate_operation == b.coordinate_operation
    )


def check_crs(ds: xr.Dataset, want_wkt: str, what: str, required: bool = True) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``ds`` is in the model's CRS ``want_wkt`` (none
    asked: any); without a CRS of its own, only where ``required``."""
    found_wkt = crs_wkt(ds)
    if not want_wkt or not (found_wkt or required):
        return
    if not found_wkt:
        raise ValueError(
            f"{what} has no CRS (a 'crs' variable with crs_wkt); the model expects "
            f"{CRS.from_wkt(want_wkt).name!r}"
        )
    if not same_crs(CRS.from_wkt(found_wkt), CRS.from_wkt(want_wkt)):
        raise ValueError(
            f"{what} is in CRS {CRS.from_wkt(found_wkt).name!r}; the model expects "
            f"{CRS.from_wkt(want_wkt).name!r}"
        )
