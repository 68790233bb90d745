"""Readers of the data sources, chosen by registry name (``source:`` in the config).

Each reader opens its files lazily (dask), checks them, and returns one dataset on the dims
``(time, y, x)`` (or ``(y, x)`` for a static field) with the requested variables, their CF
attributes, and the grid-mapping variable. Every problem is a :class:`SourceError` with one line
that names the config key, the file and what was expected.
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from climai.config import FileSource, GribSource, NetCDFSource, PluginSource, ZarrSource
from climai.plugins import PluginError, Registry

_GLOB_CHARS = set("*?[")


class SourceError(ValueError):
    """A source that cannot be read as configured; the message names key, file and problem."""


def _is_url(path: str) -> bool:
    return "://" in path


def expand_paths(path: str | list[str], key: str) -> list[str]:
    """Files named by a path, a glob or a list of them; errors for missing files and empty globs."""
    items = [path] if isinstance(path, str) else list(path)
    if not items:
        raise SourceError(f"{key}.path: the list of files is empty")
    out: list[str] = []
    for item in items:
        item = str(Path(item).expanduser()) if not _is_url(item) else item
        if _is_url(item):
            out.append(item)
        elif _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise SourceError(f"{key}.path: glob {item!r} matches no file")
            out.extend(matches)
        elif not Path(item).exists():
            raise SourceError(f"{key}.path: file {item!r} does not exist")
        else:
            out.append(item)
    if len(set(out)) != len(out):
        dup = sorted({p for p in out if out.count(p) > 1})
        raise SourceError(f"{key}.path: file(s) listed more than once: {dup}")
    return out


def _check_variables(ds: xr.Dataset, names: list[str], where: str, key: str) -> None:
    for name in names:
        if name not in ds.data_vars:
            present = [str(v) for v in ds.data_vars]
            raise SourceError(
                f"{key}: variable {name!r} is not in {where}; variables there: {', '.join(present)}"
            )


def _keep(ds: xr.Dataset, names: list[str]) -> xr.Dataset:
    """The variables ``names`` plus what they refer to (grid mapping, time bounds), no aux coords."""
    keep = list(names)
    for name in names:
        gm = ds[name].attrs.get("grid_mapping") or ds[name].encoding.get("grid_mapping")
        if gm and str(gm).split(":")[0].strip() in ds.variables:
            keep.append(str(gm).split(":")[0].strip())
    time = _time_dim(ds, names[0])
    if time is not None:
        bounds = ds[time].attrs.get("bounds") or ds[time].encoding.get("bounds")
        if bounds and bounds in ds.variables:
            keep.append(str(bounds))
    out = ds[list(dict.fromkeys(keep))]
    aux = [c for c in out.coords if c not in out.dims]
    return out.drop_vars(aux)


def _time_dim(ds: xr.Dataset, name: str) -> str | None:
    """The time dimension of ``ds[name]``: a dimension whose coordinate holds datetimes."""
    for d in ds[name].dims:
        if d in ds.coords and np.issubdtype(ds[d].dtype, np.datetime64):
            return str(d)
    return None


def _check_times(ds: xr.Dataset, time: str, where: str, key: str) -> pd.DatetimeIndex:
    """The times of one file; duplicated or decreasing times are errors."""
    times = pd.DatetimeIndex(ds[time].values)
    if times.has_duplicates:
        dup = times[times.duplicated()][0]
        raise SourceError(f"{key}: time {dup.isoformat()} appears more than once in {where}")
    if not times.is_monotonic_increasing:
        i = int(np.flatnonzero(np.diff(times.values).astype(np.int64) < 0)[0])
        raise SourceError(
            f"{key}: times in {where} are not increasing: {times[i].isoformat()} is followed "
            f"by {times[i + 1].isoformat()} (position {i + 1})"
        )
    return times


def combine_in_time(parts: list[tuple[str, xr.Dataset]], variable: str, key: str) -> xr.Dataset:
    """One dataset from several files of one series: sorted by time, overlaps rejected."""
    if _time_dim(parts[0][1], variable) is None:
        if len(parts) > 1:
            raise SourceError(
                f"{key}: {len(parts)} files given but {variable!r} has no time dimension; "
                f"a static field must come from one file"
            )
        return parts[0][1]
    spans = []
    for where, ds in parts:
        time = _time_dim(ds, variable)
        if time is None:
            raise SourceError(f"{key}: variable {variable!r} in {where} has no time dimension")
        times = _check_times(ds, time, where, key)
        spans.append((times[0], times[-1], where, ds.rename({time: "time"})))
    if len(spans) == 1:
        return spans[0][3]
    spans.sort(key=lambda s: s[0])
    for (_, end, a, _), (start, _, b, _) in itertools.pairwise(spans):
        if start <= end:
            raise SourceError(
                f"{key}: files overlap in time: {a!r} ends {end.isoformat()} and {b!r} starts "
                f"{start.isoformat()}"
            )
    try:
        return xr.concat(
            [s[3] for s in spans],
            dim="time",
            data_vars="minimal",
            coords="minimal",
            compat="override",
            join="exact",
        )
    except ValueError as err:
        raise SourceError(f"{key}: the files do not share one grid: {err}") from None


def open_netcdf(spec: NetCDFSource, names: list[str], key: str) -> xr.Dataset:
    """NetCDF file(s), lazily; a series of files is sorted by time."""
    parts = []
    for path in expand_paths(spec.path, key):
        try:
            ds = xr.open_dataset(path, chunks={}, cache=False)
        except Exception as err:  # netCDF4/h5py raise OSError, RuntimeError, ValueError...
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SourceError(
                f"{key}: cannot read NetCDF file {path!r} (truncated or not NetCDF?): {msg}"
            ) from None
        _check_variables(ds, names, repr(path), key)
        parts.append((repr(path), _keep(ds, names)))
    return combine_in_time(parts, names[0], key)


def open_zarr_source(spec: ZarrSource, names: list[str], key: str) -> xr.Dataset:
    """A zarr store, local or remote (fsspec URL), lazily."""
    if not _is_url(spec.path) and not Path(spec.path).exists():
        raise SourceError(f"{key}.path: store {spec.path!r} does not exist")
    try:
        ds = xr.open_zarr(spec.path, chunks={}, storage_options=spec.storage_options or None)
    except Exception as err:
        raise SourceError(f"{key}: cannot open zarr store {spec.path!r}: {err}") from None
    _check_variables(ds, names, f"store {spec.path!r}", key)
    ds = _keep(ds, names)
    time = _time_dim(ds, names[0])
    if time is not None:
        _check_times(ds, time, f"store {spec.path!r}", key)
        ds = ds.rename({time: "time"})
    return ds


def open_grib(spec: GribSource, names: list[str], key: str) -> xr.Dataset:
    """GRIB file(s) through cfgrib; needs the optional extra ``climai[grib]``."""
    if importlib.util.find_spec("cfgrib") is None:
        raise SourceError(
            f"{key}: source 'grib' needs cfgrib and ecCodes, which are not installed; "
            f"install the optional extra: pip install 'climai[grib]'"
        )
    parts = []
    for path in expand_paths(spec.path, key):
        try:
            ds = xr.open_dataset(
                path,
                engine="cfgrib",
                chunks={},
                backend_kwargs={"filter_by_keys": dict(spec.filter_by_keys), "indexpath": ""},
            )
        except Exception as err:
            raise SourceError(f"{key}: cannot read GRIB file {path!r}: {err}") from None
        if "valid_time" in ds.coords and ds["valid_time"].ndim == 0:
            ds = ds.drop_vars([c for c in ("time", "step") if c in ds.coords])
            ds = ds.rename({"valid_time": "time"}).expand_dims("time")
        elif "valid_time" in ds.coords and "time" in ds.dims and "step" not in ds.dims:
            ds = ds.drop_vars("time").rename({"valid_time": "time"})
        _check_variables(ds, names, repr(path), key)
        parts.append((repr(path), _keep(ds, names)))
    return combine_in_time(parts, names[0], key)


Reader = Callable[[Any, list[str], str], xr.Dataset]
"""``reader(spec, names, key)``: the variables ``names`` from the source config ``spec`` (a
``PluginSource`` for plugins: ``path`` and ``options``), lazily; ``key`` (e.g. ``data.target``)
is for error messages."""


def _check_reader(name: str, obj: object) -> Reader:
    if not callable(obj):
        raise TypeError(f"expected a function (spec, names, key) -> xarray.Dataset, got {obj!r}")
    return obj  # type: ignore[return-value]


READERS: Registry[Reader] = Registry(
    "reader",
    {"netcdf": open_netcdf, "zarr": open_zarr_source, "grib": open_grib},
    _check_reader,
)
"""Readers by ``source:`` name: climai's own, then plugins of the entry-point group
``climai.readers`` (``docs/add-a-variable.md``)."""


def open_source(spec: FileSource | PluginSource, names: list[str], key: str) -> xr.Dataset:
    """Open ``names`` from the source ``spec`` (registry by ``spec.source``), lazily."""
    try:
        reader = READERS.get(spec.source)
    except PluginError as err:
        raise SourceError(f"{key}.source: {err}") from None
    ds = reader(spec, names, key)
    if not isinstance(ds, xr.Dataset):
        raise SourceError(
            f"{key}.source: reader {spec.source!r} returned {type(ds).__name__}, not an "
            "xarray.Dataset"
        )
    _check_variables(ds, names, f"what reader {spec.source!r} returned", key)
    return ds
