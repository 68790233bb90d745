"""Rule ``ingest`` (``climai ingest``): sources → ``ingest/target.zarr`` and ``ingest/static.zarr``.

Relevant settings: ``data`` (target, static, input: source, path, variable names, converters,
storage options), ``variables`` (names, units, kinds), ``domain``, ``scale``, ``seed`` (synthetic).
Inputs: the files of ``data.*.path`` (none for the synthetic toy world).
Outputs: ``ingest/target.zarr`` (HR variables in canonical units, CRS, NaN = missing),
``ingest/static.zarr`` (static fields on the HR grid), ``ingest/input.zarr`` (only with
``data.input``).

Every check runs before anything is written: files, variables, units, times, domain, static
coverage. The data are read lazily (dask) and streamed to zarr by time chunks, so memory does not
grow with the length of the series. Nothing is filled: missing data stay NaN.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS

from climai import grids
from climai.config import (
    CampaignConfig,
    DerivedStatic,
    FileSource,
    SyntheticConfig,
    VariableConfig,
)
from climai.converters import apply_converter
from climai.grids import Grid, GridError, crs_variable
from climai.io.calendars import SOURCE_CALENDAR, SOURCE_TIME, seconds_between
from climai.io.cf import bounds_offsets, time_method
from climai.io.readers import SourceError, open_source
from climai.io.stores import write_store
from climai.preprocess.checks import (
    IngestError,
    check_finite,
    check_input_values,
    check_not_negative,
    check_time_axis,
)
from climai.preprocess.dataset import with_hr_layout
from climai.regrid import reproject_series, reproject_to_grid
from climai.stages import StageContext, dask_progress, log
from climai.synthetic import OPTIONAL_FIELDS, toy_world, toy_world_counts
from climai.units import UnitsError, amount_to_rate, convert, is_amount, is_rate, lookup
from climai.variables import is_non_negative

CHUNK_BYTES = 8 * 2**20  # target bytes per zarr chunk of one variable


@dataclass
class TimeInfo:
    """What the time axis looks like: regular step, or how many steps differ from the usual one."""

    step_seconds: float | None
    regular: bool
    irregular_steps: int = 0
    dropped_all_nan: int = 0
    notes: list[str] = field(default_factory=list)

    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time_regular": int(self.regular),
            "time_steps_dropped_all_nan": self.dropped_all_nan,
        }
        if self.step_seconds is not None:
            out["time_step_seconds"] = self.step_seconds
            out["time_step"] = pd.Timedelta(seconds=self.step_seconds).isoformat()
        if not self.regular:
            out["time_irregular_steps"] = self.irregular_steps
        return out


def describe_times(times: pd.DatetimeIndex, calendar: str | None = None) -> TimeInfo:
    """The usual (most common) step and the number of steps that differ from it, counted in
    the source's ``calendar`` (noleap: 28 February to 1 March is one day, also in a leap year)."""
    if times.size < 2:
        return TimeInfo(None, True)
    steps = np.round(seconds_between(times.values[:-1], times.values[1:], calendar), 3)
    values, counts = np.unique(steps, return_counts=True)
    usual = float(values[np.argmax(counts)])
    irregular = int((steps != usual).sum())
    return TimeInfo(usual, irregular == 0, irregular)


def standardise(
    ds: xr.Dataset, names: list[str], key: str, crs_override: str | None
) -> tuple[xr.Dataset, Grid]:
    """:func:`climai.grids.standardise`, its errors as :class:`IngestError`."""
    try:
        return grids.standardise(ds, names, key, crs_override)
    except GridError as err:
        raise IngestError(str(err)) from None


def subset_and_trim(
    ds: xr.Dataset, grid: Grid, cfg: CampaignConfig
) -> tuple[xr.Dataset, Grid, str]:
    """:func:`climai.grids.subset_and_trim`, its errors as :class:`IngestError`."""
    try:
        return grids.subset_and_trim(ds, grid, cfg)
    except GridError as err:
        raise IngestError(str(err)) from None


def _step_seconds(ds: xr.Dataset, times: TimeInfo, name: str) -> xr.DataArray | float:
    """Length of each step: from the time bounds if present, else the regular step."""
    bounds = ds["time"].attrs.get("bounds") or ds["time"].encoding.get("bounds")
    if bounds and bounds in ds.variables:
        b = ds[bounds].load()
        calendar = ds["time"].attrs.get(SOURCE_CALENDAR)  # a noleap day is 86,400 s on 28 Feb
        seconds = seconds_between(b.values[:, 0], b.values[:, 1], calendar)
        if (seconds <= 0).any():
            raise IngestError(
                f"variable {name!r}: time bounds {bounds!r} have non-positive lengths"
            )
        return xr.DataArray(seconds.astype(np.float64), dims="time", coords={"time": ds["time"]})
    if times.step_seconds is None or not times.regular:
        raise IngestError(
            f"variable {name!r} is an accumulation per step but there are no time bounds and "
            f"the steps are irregular; cannot turn it into a rate"
        )
    return times.step_seconds


def canonical_variable(
    ds: xr.Dataset, var: VariableConfig, times: TimeInfo, where: str, tolerance: float = 0.0
) -> xr.DataArray:
    """The variable in its canonical name and units: converter, accumulation → rate, units;
    a non-negative kind's values in [-``tolerance``, 0) read as 0 (``negative_tolerance``)."""
    src_name = var.source_name or var.name
    da = ds[src_name]
    da.name = src_name
    src_units = da.attrs.get("units")
    rate_of_amount = False
    if var.converter is not None:
        da = apply_converter(da, var.converter.name, var.converter.params, var.name)
    if "units" not in da.attrs:
        raise IngestError(
            f"variable {src_name!r} in {where} has no 'units' attribute; expected units "
            f"convertible to {var.units!r}"
        )
    try:
        lookup(var.units, var.name, " (config 'variables')")
        unit = str(da.attrs["units"])
        lookup(unit, src_name, f" in {where}")
        if is_rate(var.units) and is_amount(unit) and "time" in da.dims:
            da = amount_to_rate(da, _step_seconds(ds, times, src_name), src_name)
            rate_of_amount = True
            da.attrs["long_name"] = f"rate from {da.attrs.get('long_name', src_name)}"
        da = convert(da, var.units, src_name, f" in {where}")
    except UnitsError as err:
        raise IngestError(str(err)) from None
    attrs = {
        k: v
        for k, v in da.attrs.items()
        if k not in ("_FillValue", "missing_value", "cell_methods", "comment")
    }
    attrs.update(units=var.units, grid_mapping="crs", source_variable=src_name)
    method = time_method(ds[src_name].attrs.get("cell_methods"))  # daily means stay means
    if rate_of_amount:  # an amount per step (time: sum) over the step's length: its mean rate
        method = "time: mean"
    if method is not None:
        attrs["cell_methods"] = method
    if tolerance and is_non_negative(var.kind):
        da = da.where((da >= 0) | (da < -tolerance) | da.isnull(), 0.0)
        attrs["negative_tolerance"] = tolerance  # values down to -tolerance were read as 0
    if src_units is not None:
        attrs["source_units"] = str(src_units)
    if var.kind == "precipitation" and is_rate(var.units) and var.converter is None:
        attrs["standard_name"] = "lwe_precipitation_rate"
    out = da.astype(np.float32).rename(var.name)
    out.attrs = attrs
    return out


def _time_chunk(grid: Grid) -> int:
    per_step = 4 * grid.shape[0] * grid.shape[1]
    return int(max(1, min(24, CHUNK_BYTES // per_step)))


@dataclass
class Ingested:
    """The validated, lazy target (and what was found on the way), ready to write."""

    target: xr.Dataset
    grid: Grid
    times: TimeInfo
    valid_fraction: dict[str, float]
    cell_valid_fraction: xr.DataArray
    toy_static: xr.Dataset | None
    report: list[str]


def load_target(cfg: CampaignConfig) -> Ingested:
    """Open, check and canonicalise the target lazily; count valid cells (one streaming pass)."""
    src = cfg.data.target
    report: list[str] = []
    toy_static = None
    if isinstance(src, SyntheticConfig):
        # the toy world's fields by source_name, as the config checks them (then renamed)
        names = [v.source_name or v.name for v in cfg.variables]
        extra = tuple(n for n in dict.fromkeys(names) if n in OPTIONAL_FIELDS)
        target, toy_static = toy_world(
            seed=cfg.seed,
            nx=src.nx,
            ny=src.ny,
            dx=src.dx,
            steps=src.steps,
            start=src.start,
            extra=extra,
            time_chunk=24,
        )
        missing = [n for n in names if n not in target]
        if missing:
            raise IngestError(
                f"variables {missing} are not in the synthetic toy world; it provides tas, pr"
                f" and, on request, {', '.join(OPTIONAL_FIELDS)}"
            )
        where = "the toy world"
    else:
        names = [v.source_name or v.name for v in cfg.variables]
        try:
            target = open_source(src, list(dict.fromkeys(names)), "data.target")
        except SourceError as err:
            raise IngestError(str(err)) from None
        where = f"data.target {src.path!r}" if isinstance(src.path, str) else "data.target"
    crs_override = None if isinstance(src, SyntheticConfig) else src.crs
    ds, grid = standardise(target, list(dict.fromkeys(names)), "data.target", crs_override)
    if "time" not in ds[names[0]].dims:
        raise IngestError(f"data.target: variable {names[0]!r} has no time dimension")
    ds, grid, trim = subset_and_trim(ds, grid, cfg)
    report.append(trim)
    check_time_axis(ds, "data.target", where)
    calendar = ds["time"].attrs.get(SOURCE_CALENDAR)
    times = describe_times(pd.DatetimeIndex(ds["time"].values), calendar)
    out = xr.Dataset(coords={"time": ds["time"], "y": ds["y"], "x": ds["x"]})
    for var in cfg.variables:
        tol = getattr(src, "negative_tolerance", 0.0)  # a file source's; the toy world's: none
        out[var.name] = canonical_variable(ds, var, times, where, tol)
    if isinstance(src, SyntheticConfig):
        per_step, per_cell = toy_world_counts(out, cfg.variable_names)
    else:
        per_step, per_cell = _count_valid(out, cfg, where)
    cells = grid.shape[0] * grid.shape[1]
    keep = np.ones(out.sizes["time"], dtype=bool)
    for name, counts in per_step.items():
        empty = counts.values == 0
        if empty.any():
            report.append(f"{name}: {int(empty.sum())} all-NaN time step(s) dropped")
        keep &= ~empty
    if not keep.any():
        empty = [n for n, c in per_step.items() if (c.values == 0).all()]
        what = (
            f"variable(s) {', '.join(map(repr, empty))} are NaN at every time step"
            if empty
            else "every time step has a variable that is all-NaN"
        )
        raise IngestError(
            f"data.target: {what} inside the domain ({where}); a step is kept only where every "
            "variable has a value"
        )
    n_steps = int(keep.sum())
    valid_fraction = {
        n: float(c.values[keep].sum()) / (n_steps * cells) for n, c in per_step.items()
    }
    out = out.isel(time=np.flatnonzero(keep)) if not keep.all() else out
    times = describe_times(pd.DatetimeIndex(out["time"].values), calendar)
    times.dropped_all_nan = int((~keep).sum())
    if not times.regular:
        report.append(
            f"time steps are irregular: {times.irregular_steps} of {n_steps - 1} differ from the "
            f"usual step of {times.step_seconds:g} s"
        )
    cell_fraction = (per_cell / n_steps).astype(np.float32)
    for name in cfg.variable_names:
        out[name] = out[name].chunk({"time": _time_chunk(grid), "y": -1, "x": -1})
        out[name].encoding = {}
    out["crs"] = crs_variable(grid.crs)
    for c in ("x", "y"):
        out[c].attrs = _coord_attrs(grid.crs, c)
    out["time"].attrs = {"standard_name": "time", "axis": "T", "long_name": "time (UTC)"}
    out["time"].attrs.update({k: v for k, v in ds["time"].attrs.items() if k in SOURCE_TIME})
    out["time"].attrs.update(bounds_offsets(ds))  # the exports' time bounds
    out["time"].encoding = {"units": "seconds since 1970-01-01", "dtype": "int64"}
    out.attrs = {"title": f"climai {cfg.campaign} target", "source": where, **times.attrs()}
    out.attrs["valid_fraction"] = str({k: round(v, 6) for k, v in valid_fraction.items()})
    out.attrs["ingest_report"] = "; ".join(report)
    return Ingested(out, grid, times, valid_fraction, cell_fraction, toy_static, report)


def _count_valid(
    out: xr.Dataset, cfg: CampaignConfig, where: str
) -> tuple[dict[str, xr.DataArray], xr.DataArray]:
    """One streaming pass: valid cells per step (all-NaN steps) and per cell (coverage) of every
    variable; no infinity, and precipitation (any non-negative kind) not negative, checked on the way."""
    first = cfg.variable_names[0]
    per_step = {n: out[n].notnull().sum(("y", "x")) for n in cfg.variable_names}
    per_cell = out[first].notnull().sum("time")
    non_negative = [v.name for v in cfg.variables if is_non_negative(v.kind)]
    minima = {n: out[n].min() for n in non_negative}
    infinite = {n: np.isinf(out[n]).sum() for n in cfg.variable_names}
    try:
        per_step, per_cell, minima, infinite = dask.compute(per_step, per_cell, minima, infinite)
    except (OSError, RuntimeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise IngestError(f"data.target: cannot read the data values ({where}): {msg}") from None
    check_finite(infinite, "data.target", where)
    check_not_negative(minima, cfg, "data.target", where)
    return per_step, per_cell


def _coord_attrs(crs: CRS, axis: str) -> dict[str, str]:
    if crs.to_cf().get("grid_mapping_name") == "rotated_latitude_longitude":
        return {
            "x": {"standard_name": "grid_longitude", "units": "degrees", "axis": "X"},
            "y": {"standard_name": "grid_latitude", "units": "degrees", "axis": "Y"},
        }[axis]
    if crs.is_geographic:
        return {
            "x": {"standard_name": "longitude", "units": "degrees_east", "axis": "X"},
            "y": {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"},
        }[axis]
    return {
        "standard_name": f"projection_{axis}_coordinate",
        "units": "m",
        "axis": axis.upper(),
    }


def load_static_field(name: str, spec: FileSource | DerivedStatic, ing: Ingested) -> xr.DataArray:
    """One static field on the HR grid: derived from the grid/target, or read and reprojected."""
    grid = ing.grid
    key = f"data.static.{name}"
    if isinstance(spec, DerivedStatic):
        if spec.field == "valid_fraction":
            values = ing.cell_valid_fraction.values.astype(np.float32)
            attrs = {"units": "1", "long_name": "fraction of time steps with data"}
        else:
            c = grid.x if spec.field == "x" else grid.y
            km = ((c - c.mean()) / (1.0 if grid.crs.is_geographic else 1000.0)).astype(np.float32)
            values = np.broadcast_to(
                km[None, :] if spec.field == "x" else km[:, None], grid.shape
            ).copy()
            unit = "degree" if grid.crs.is_geographic else "km"
            attrs = {"units": unit, "long_name": f"{spec.field} from the domain centre"}
        return xr.DataArray(values, dims=("y", "x"), coords={"y": grid.y, "x": grid.x}, attrs=attrs)
    assert spec.variable is not None  # the config requires it
    try:
        ds = open_source(spec, [spec.variable], key)
    except SourceError as err:
        raise IngestError(str(err)) from None
    ds, src_grid = standardise(ds, [spec.variable], key, spec.crs)
    ds, src_grid = grids.longitudes_facing(ds, src_grid, grid)  # a global 0–360 DEM, say
    da = ds[spec.variable]
    if "time" in da.dims:
        if da.sizes["time"] != 1:
            raise IngestError(
                f"{key}: variable {spec.variable!r} has {da.sizes['time']} time steps; "
                f"a static field needs one"
            )
        da = da.isel(time=0, drop=True)
    da = da.transpose("y", "x")
    if spec.units:
        try:
            da = convert(da, spec.units, spec.variable, f" ({key})")
        except UnitsError as err:
            raise IngestError(str(err)) from None
    try:
        return reproject_to_grid(da, src_grid, grid, f"{key} ({spec.variable!r})")
    except ValueError as err:
        raise IngestError(str(err)) from None


def build_static(cfg: CampaignConfig, ing: Ingested) -> xr.Dataset:
    """All static fields on the HR grid (the toy world's for a synthetic target, then config's)."""
    fields: dict[str, xr.DataArray] = {}
    if ing.toy_static is not None:
        toy = ing.toy_static.sel(y=ing.target["y"], x=ing.target["x"])
        fields.update({str(n): toy[n] for n in toy.data_vars if n != "crs"})
    for name, spec in cfg.data.static.items():
        fields[name] = load_static_field(name, spec, ing)
    static = xr.Dataset(coords={"y": ing.target["y"], "x": ing.target["x"]})
    for name, da in fields.items():
        static[name] = da.assign_coords(y=static["y"], x=static["x"]).assign_attrs(
            grid_mapping="crs"
        )
    static["crs"] = crs_variable(ing.grid.crs)
    static.attrs = {"title": f"climai {cfg.campaign} static fields"}
    return static


def load_input(cfg: CampaignConfig, ing: Ingested) -> xr.Dataset | None:
    """The coarse driving data (``data.input``) on the LR grid at the target's times, lazily."""
    spec = cfg.data.input
    if spec is None:
        return None
    key = "data.input"
    names = [v.input_name or v.source_name or v.name for v in cfg.variables]
    try:
        ds = open_source(spec, list(dict.fromkeys(names)), key)
    except SourceError as err:
        raise IngestError(str(err)) from None
    ds, src_grid = standardise(ds, list(dict.fromkeys(names)), key, spec.crs)
    ds, src_grid = grids.longitudes_facing(ds, src_grid, ing.grid.coarsen(cfg.scale))
    if "time" not in ds[names[0]].dims:
        raise IngestError(f"{key}: variable {names[0]!r} has no time dimension")
    wanted = pd.DatetimeIndex(ing.target["time"].values)
    missing = wanted.difference(pd.DatetimeIndex(ds["time"].values))
    if missing.size:
        raise IngestError(
            f"{key}: no data at {missing.size} of the {wanted.size} target times "
            f"(first {missing[0].isoformat()}); the input must hold every target time"
        )
    ds = ds.sel(time=wanted)
    check_time_axis(ds, key, f"{key} {spec.path!r}")
    times = describe_times(wanted)
    lr = ing.grid.coarsen(cfg.scale)
    where = f"{key} {spec.path!r}" if isinstance(spec.path, str) else key
    out = xr.Dataset(coords={"time": ds["time"], "y": lr.y, "x": lr.x})
    source: dict[str, xr.DataArray] = {}
    for var, name in zip(cfg.variables, names, strict=True):
        as_input = var.model_copy(update={"source_name": name, "converter": None})
        da = canonical_variable(
            ds, as_input, times, where, getattr(spec, "negative_tolerance", 0.0)
        )
        source[var.name] = da
        try:
            out[var.name] = reproject_series(da, src_grid, lr, f"{key} ({name!r})")
        except ValueError as err:
            raise IngestError(str(err)) from None
        out[var.name].encoding = {}
    check_input_values(cfg, source, where)
    out["crs"] = crs_variable(lr.crs)
    for c in ("x", "y"):
        out[c].attrs = _coord_attrs(lr.crs, c)
    out["time"].attrs = dict(ing.target["time"].attrs)
    out["time"].encoding = {"units": "seconds since 1970-01-01", "dtype": "int64"}
    out.attrs = {"title": f"climai {cfg.campaign} input (LR grid, scale={cfg.scale})"}
    out.attrs["source"] = where
    return out


def _crs_label(crs: CRS) -> str:
    """A short name of ``crs`` for logs (its projection method when it is called 'unknown')."""
    if crs.name.lower() != "unknown":
        return crs.name
    op = crs.coordinate_operation
    return op.method_name if op is not None else crs.to_proj4() or "unknown"


def run(ctx: StageContext) -> None:
    """Build the target and static stores of the campaign; all checks before any write."""
    cfg = ctx.cfg
    with dask.config.set(scheduler="threads", num_workers=ctx.threads), dask_progress():
        ing = load_target(cfg)
        static = build_static(cfg, ing)
        inputs = load_input(cfg, ing)
        for line in ing.report:
            log.info("ingest: %s", line)
        log.info(
            "ingest: target %s × %d steps (step %s, regular %s), valid fraction %s, CRS %s",
            ing.grid.shape,
            ing.target.sizes["time"],
            ing.target.attrs.get("time_step", "n/a"),
            ing.times.regular,
            {k: round(v, 4) for k, v in ing.valid_fraction.items()},
            _crs_label(ing.grid.crs),
        )
        write_store(ctx.stamp(static), ctx.paths.static)
        # the dataset's HR layout: preprocess then links the shards instead of re-encoding them
        names = [str(v) for v in ing.target.data_vars if v != "crs"]
        write_store(ctx.stamp(with_hr_layout(ing.target, names)), ctx.paths.target)
        if inputs is not None:
            write_store(ctx.stamp(inputs), ctx.paths.input)


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai ingest``."""
    run(ctx)
