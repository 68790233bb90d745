"""Time axes of the files a reader opens: which dimension is time, a file's scalar time as a
length-1 axis, and variables kept in files of their own (CMIP/CORDEX: ``tas_*.nc``,
``pr_*.nc``), each read as its own time series and then put side by side on one time axis."""

from __future__ import annotations

import numpy as np
import xarray as xr


def side_by_side(
    series: dict[tuple[str, ...], tuple[str, xr.Dataset]], names: list[str], key: str
) -> xr.Dataset:
    """One dataset of the series ``{variables held: (first file, dataset)}``; ``ValueError``
    naming the files where a variable is in two series or in none, or where the series' times
    or grids differ (no step is dropped or filled: the times must be the same)."""
    seen: dict[str, str] = {}
    for present, (where, _) in series.items():
        for name in present:
            if name in seen:
                raise ValueError(
                    f"{key}.path: variable {name!r} is in {seen[name]} and in {where}, files "
                    "with other variables; list each variable's files once"
                )
            seen[name] = where
    missing = [n for n in names if n not in seen]
    if missing:
        raise ValueError(
            f"{key}.path: variable(s) {missing} are in none of the files; the files hold "
            f"{sorted(seen)}"
        )
    (first, ref), *rest = series.values()
    for where, ds in rest:
        for dim in ("time", *[str(d) for d in ref.dims if d != "time"]):
            if dim not in ref.coords or dim not in ds.coords:
                continue
            a, b = ref[dim].values, ds[dim].values
            if a.shape == b.shape and (a == b).all():
                continue
            what = f"{b.size} values against {a.size}, or other values"
            if dim == "time":
                a, b = (np.datetime_as_string(v, unit="s") for v in (a, b))
                what = f"{b.size} steps {b[0]}..{b[-1]} against {a.size} steps {a[0]}..{a[-1]}"
            raise ValueError(
                f"{key}: the series of {where} and of {first} differ in {dim!r} ({what}); "
                "variables in separate files must cover the same times on the same grid"
            )
    return xr.merge([ds for _, ds in series.values()], compat="override", join="exact")


def time_dim(ds: xr.Dataset, name: str) -> str | None:
    """The time dimension of ``ds[name]``: a dimension whose coordinate holds datetimes."""
    for d in ds[name].dims:
        if d in ds.coords and np.issubdtype(ds[d].dtype, np.datetime64):
            return str(d)
    return None


def _is_start(ds: xr.Dataset, name: str) -> bool:
    return "start" in name.lower() or "start" in str(ds[name].attrs.get("long_name", "")).lower()


def scalar_time_to_axis(ds: xr.Dataset, names: list[str]) -> xr.Dataset:
    """A file that holds one step without a time dimension, as a length-1 time axis.

    Its time is the scalar datetime variable with CF ``standard_name: time`` (else one called
    ``valid_time`` or ``time``); a scalar datetime whose name or ``long_name`` says *start*
    (e.g. ``start_time``) becomes the step's bounds ``time_bnds`` = [start, time]. Datasets with
    a time dimension, or without a scalar time (static fields), are returned unchanged.
    """
    if time_dim(ds, names[0]) is not None:
        return ds
    scalars = [
        str(v)
        for v in ds.variables
        if ds[v].ndim == 0 and np.issubdtype(ds[v].dtype, np.datetime64)
    ]
    end = next((v for v in scalars if ds[v].attrs.get("standard_name") == "time"), None)
    end = end or next((v for v in ("valid_time", "time") if v in scalars), None)
    if end is None:
        return ds
    start = next((v for v in scalars if v != end and _is_start(ds, v)), None)
    t_end = ds[end].values
    out = ds.drop_vars(scalars)
    for name in names:
        out[name] = out[name].expand_dims(time=[t_end])
    out["time"].attrs = {"standard_name": "time", "source_variable": end}
    if start is not None:
        bounds = np.array([[ds[start].values, t_end]], dtype="datetime64[ns]")
        out["time_bnds"] = (("time", "nv"), bounds)
        out["time"].attrs["bounds"] = "time_bnds"
    return out
