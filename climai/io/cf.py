"""CF-1.10 datasets and NetCDF encodings of downscaled fields (rule ``export``, ``climai downscale``).

The files are what users download: compressed and chunked, with a ``grid_mapping`` variable, time
bounds, ``cell_methods`` and the provenance of the run, readable by xarray, netCDF4, CDO and NCO.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from climai.grids import is_geographic_axis
from climai.io.calendars import (
    SOURCE_CALENDAR,
    SOURCE_UNITS,
    calendar_of,
    seconds_between,
    shifted,
)
from climai.variables import known_variable

FILL_VALUE = np.float32(1.0e20)
TIME_UNITS = "hours since 1970-01-01 00:00:00"
PROVENANCE = (
    "climai_version",
    "climai_commit",
    "config_sha256",
    "git_commit",
    "created_by_rule",
)
#: The CF attributes a data variable carries over to every field derived from it (LR inputs,
#: predictions, exports), in the order they are written.
CF_KEYS = ("standard_name", "long_name", "units", "cell_methods")


#: CF attributes of an ensemble's member axis and of its quantile levels (every output climai
#: writes: the downscaled stores and the NetCDF exports alike)
MEMBER_ATTRS = {"standard_name": "realization", "long_name": "ensemble member"}
QUANTILE_ATTRS = {"long_name": "quantile level over ensemble members", "units": "1"}


def cf_attrs(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    """The :data:`CF_KEYS` entries of ``attrs`` (those it has), in ``CF_KEYS`` order."""
    return {k: attrs[k] for k in CF_KEYS if k in attrs}


#: Attribute of ``time`` (set by ingest, kept by every store): the source's time bounds as
#: ``[start, end]`` offsets from each time in seconds, where they are the same for every step.
BOUNDS_OFFSETS = "bounds_offsets_seconds"


def bounds_offsets(ds: xr.Dataset) -> dict[str, list[float]]:
    """``{BOUNDS_OFFSETS: [start, end]}``: ``ds``'s CF time bounds as offsets from each time
    (seconds, in its calendar), where they are the same for every step (ingest's target,
    ``climai downscale``'s input): the exports then give each value its own interval. ``{}``
    without bounds or with bounds that differ from step to step."""
    bounds = ds["time"].attrs.get("bounds") or ds["time"].encoding.get("bounds")
    if not bounds or bounds not in ds.variables:
        return {}
    b = np.asarray(ds[bounds].values).astype("datetime64[ns]")
    t = np.asarray(ds["time"].values).astype("datetime64[ns]")
    offsets = seconds_between(t[:, None], b, ds["time"].attrs.get(SOURCE_CALENDAR))
    if offsets.ndim != 2 or offsets.shape[1] != 2 or not (offsets == offsets[0]).all():
        return {}
    return {BOUNDS_OFFSETS: [float(o) for o in offsets[0]]}


def with_bounds(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` (``climai downscale``'s input) with its CF time bounds as ``time``'s offsets
    (:func:`bounds_offsets`): the output's daily means keep their [00:00, 24:00) interval, not
    [t - 1 day, t]."""
    if "time" not in ds.coords or BOUNDS_OFFSETS in ds["time"].attrs:
        return ds
    return ds.assign_coords(time=ds["time"].assign_attrs(bounds_offsets(ds)))


def time_bounds(time: xr.DataArray) -> xr.DataArray:
    """``(time, nv)`` bounds: the source's own (``time`` attribute :data:`BOUNDS_OFFSETS`, e.g.
    ``[0, 3600]`` for hourly means labelled at their start, ``[-1800, 1800]`` at their middle),
    else ``[t - Δt, t]``: each value describes the interval ending at ``t``."""
    values = time.values.astype("datetime64[ns]")
    calendar = time.attrs.get(SOURCE_CALENDAR)  # offsets count in the model calendar
    offsets = time.attrs.get(BOUNDS_OFFSETS)
    if offsets is not None and len(offsets) == 2:
        start, end = (shifted(values, float(o), calendar) for o in offsets)
        return xr.DataArray(np.stack([start, end], axis=1), dims=("time", "nv"))
    step = float(np.median(np.diff(values)) / np.timedelta64(1, "s")) if values.size > 1 else 3600
    return xr.DataArray(
        np.stack([shifted(values, -step, calendar), values], axis=1), dims=("time", "nv")
    )


#: CF attributes of the horizontal axes: lat/lon grids, then projected grids (metres).
_GEOGRAPHIC_AXES = {
    "x": {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"},
    "y": {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"},
}
_PROJECTED_AXES = {
    axis: {
        "standard_name": f"projection_{axis}_coordinate",
        "long_name": f"{axis} coordinate of projection",
        "units": "m",
    }
    for axis in ("x", "y")
}


#: A rotated-pole grid (CORDEX): x/y are degrees in the rotated frame, not true longitude/latitude.
_ROTATED_AXES = {
    "x": {
        "standard_name": "grid_longitude",
        "long_name": "longitude in rotated pole grid",
        "units": "degrees",
    },
    "y": {
        "standard_name": "grid_latitude",
        "long_name": "latitude in rotated pole grid",
        "units": "degrees",
    },
}


def is_rotated_pole(hr: xr.Dataset) -> bool:
    """Whether ``hr``'s grid mapping is CF's ``rotated_latitude_longitude``."""
    return (
        "crs" in hr.variables
        and hr["crs"].attrs.get("grid_mapping_name") == "rotated_latitude_longitude"
    )


def is_geographic(hr: xr.Dataset) -> bool:
    """Whether ``hr`` is on a lat/lon grid (by its grid mapping, else by its x axis)."""
    if "crs" in hr.variables and "grid_mapping_name" in hr["crs"].attrs:
        return hr["crs"].attrs["grid_mapping_name"] == "latitude_longitude"
    return is_geographic_axis(hr["x"])


def axis_attrs(hr: xr.Dataset) -> dict[str, dict[str, str]]:
    """CF attributes of ``x`` and ``y``: longitude/latitude in degrees on a lat/lon grid,
    ``grid_longitude/grid_latitude`` in degrees on a rotated-pole one,
    ``projection_x/y_coordinate`` in metres (climai's canonical unit) on a projected one."""
    if is_rotated_pole(hr):
        table = _ROTATED_AXES
    else:
        table = _GEOGRAPHIC_AXES if is_geographic(hr) else _PROJECTED_AXES
    return {axis: {**table[axis], "axis": axis.upper()} for axis in ("x", "y")}


#: HR rows per block of the lat/lon auxiliaries: computed band by band as they are written.
LATLON_ROWS = 256


def _lonlat_rows(rows: np.ndarray, x: np.ndarray, wkt: str, which: int) -> np.ndarray:
    """Longitude (``which`` 0) or latitude (1), WGS84 degrees, of the cells ``rows`` × ``x``."""
    from pyproj import CRS, Transformer

    to_ll = Transformer.from_crs(CRS.from_wkt(wkt), CRS.from_epsg(4326), always_xy=True)
    xx, yy = np.meshgrid(x, rows)
    return np.asarray(to_ll.transform(xx, yy)[which], dtype=np.float64)


def latlon_auxiliaries(hr: xr.Dataset) -> dict[str, xr.DataArray]:
    """True ``lat``/``lon`` (WGS84 degrees) of every cell of a grid whose ``x``/``y`` are not
    longitude/latitude (projected or rotated pole), from its ``crs`` variable, as CF auxiliary
    coordinates on ``(y, x)`` (CF 5.6), lazily by bands of :data:`LATLON_ROWS` rows (memory
    bounded by the band); none on a lat/lon grid or without a CRS."""
    import dask.array as dsa

    wkt = str(hr["crs"].attrs.get("crs_wkt", "")) if "crs" in hr.variables else ""
    if not wkt or (is_geographic(hr) and not is_rotated_pole(hr)):
        return {}
    x = np.asarray(hr["x"].values, dtype=np.float64)
    rows = dsa.from_array(np.asarray(hr["y"].values, dtype=np.float64), chunks=LATLON_ROWS)
    out = {}
    for which, name, units in ((1, "lat", "degrees_north"), (0, "lon", "degrees_east")):
        values = rows.map_blocks(
            _lonlat_rows, x, wkt, which, new_axis=1, chunks=(rows.chunks[0], (x.size,)),
            dtype=np.float64,
        )  # fmt: skip
        long_name = "latitude" if which else "longitude"
        attrs = {"standard_name": long_name, "long_name": long_name, "units": units}
        out[name] = xr.DataArray(values, dims=("y", "x"), attrs=attrs)
    return out


def _variable_attrs(hr: xr.Dataset, name: str, base: str) -> dict[str, Any]:
    """The CF attributes of a data variable: its own, completed from the variable registry."""
    return completed_attrs(hr[name].attrs, base)


def completed_attrs(own: Mapping[Any, Any], base: str) -> dict[str, Any]:
    """``own`` CF attributes of the variable ``base`` completed from the variable registry
    (:data:`~climai.variables.KNOWN_VARIABLES`): its ``standard_name`` and ``long_name`` where
    ``own`` lacks them."""
    attrs = cf_attrs(own)
    known = known_variable(base)
    if known is not None and "standard_name" not in attrs:
        attrs = {"standard_name": known.standard_name, **attrs}
    if known is not None and "long_name" not in attrs:
        attrs["long_name"] = known.long_name
    return attrs


def time_method(cell_methods: object) -> str | None:
    """The ``time: <method>`` part of a CF ``cell_methods`` string (None: it has none)."""
    found = re.search(r"\btime\s*:\s*(\w+)", str(cell_methods or ""))
    return f"time: {found.group(1)}" if found else None


def _cell_methods(kind: str, name: str, source: object = None) -> str:
    """The source's time method (daily means: ``time: mean``), else precipitation's
    ``time: mean`` and ``time: point`` for the rest; ``realization: mean`` for ensemble means."""
    default = "time: mean" if kind == "precipitation" else "time: point"
    time_part = time_method(source) or default
    return f"{time_part} realization: mean" if name.endswith("_mean") else time_part


def cf_dataset(
    hr: xr.Dataset,
    variables: list[str],
    kinds: Mapping[str, str],
    attrs: dict[str, str] | None = None,
) -> xr.Dataset:
    """The CF-1.10 form of ``variables`` (and their ensemble summaries) of a downscaled dataset."""
    names = [n for v in variables for n in (v, f"{v}_mean", f"{v}_quantile") if n in hr]
    ds = hr[names].copy()
    for name in names:
        base = name.removesuffix("_mean").removesuffix("_quantile")
        ds[name].attrs = {
            **_variable_attrs(hr, name, base),
            "grid_mapping": "crs",
            "cell_methods": _cell_methods(
                kinds.get(base, "generic"), name, hr[base].attrs.get("cell_methods")
            ),
        }
        if name.endswith("_quantile"):
            ds[name].attrs.pop("standard_name", None)
            ds[name].attrs["long_name"] = f"{hr[base].attrs.get('long_name', base)} quantiles"
    ds["time"].attrs = {
        "standard_name": "time",
        "long_name": "time",
        "axis": "T",
        "bounds": "time_bnds",
    }
    units = hr["time"].attrs.get(SOURCE_UNITS, TIME_UNITS)  # the source's (cf_encoding)
    ds["time"].encoding = {"calendar": calendar_of(hr), "units": str(units)}
    ds["time_bnds"] = time_bounds(hr["time"])
    for axis, axis_cf in axis_attrs(hr).items():
        ds[axis].attrs = axis_cf
    if "member" in ds.coords:
        ds["member"].attrs = dict(MEMBER_ATTRS)
    if "quantile" in ds.coords:
        ds["quantile"].attrs = dict(QUANTILE_ATTRS)
    ds["crs"] = hr["crs"] if "crs" in hr.variables else ds.get("crs")
    ds = ds.assign_coords(latlon_auxiliaries(hr))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ds.attrs = {
        "Conventions": "CF-1.10",
        "title": f"climai downscaled {', '.join(variables)} ({hr.attrs.get('method', 'unknown')})",
        "institution": "unspecified (config export.institution)",
        "source": f"climai {hr.attrs.get('climai_version', '')} method "
        f"{hr.attrs.get('method', 'unknown')}",
        "history": f"{now} exported by climai from a downscaled zarr store",
        "references": "climai (README.md)",
        **{k: str(hr.attrs[k]) for k in PROVENANCE if k in hr.attrs},
        **{f"downscaled_{k}": str(hr.attrs[k]) for k in ("method", "split") if k in hr.attrs},
        **(attrs or {}),
    }
    return ds


def cf_encoding(
    ds: xr.Dataset, variables: list[str], level: int = 4, chunk_xy: int = 256
) -> dict[str, dict[str, Any]]:
    """zlib-compressed, chunked (one time step × ``chunk_xy``² cells) float32 data variables."""
    source = ds["time"].encoding if "time" in ds else {}
    time = {
        "units": source.get("units", TIME_UNITS),
        "calendar": source.get("calendar", "proleptic_gregorian"),
        "dtype": "float64",
    }
    # CF: coordinates, bounds and the grid mapping carry no _FillValue (xarray adds NaN to floats)
    enc: dict[str, dict[str, Any]] = {
        str(n): {"_FillValue": None}
        for n in ds.variables
        if "y" not in ds[n].dims or n in ("x", "y")
    }
    for name in ("time", "time_bnds"):
        if name in ds.variables:
            enc[name] = {**time, "_FillValue": None}
    for name in ("lat", "lon"):  # auxiliary coordinates on (y, x): compressed, no fill value
        if name in ds.coords and ds[name].dims == ("y", "x"):
            chunks = tuple(min(n, chunk_xy) for n in ds[name].shape)
            enc[name] = {"zlib": level > 0, "complevel": level, "chunksizes": chunks}
            enc[name]["_FillValue"] = None
    for name in ds.data_vars:
        var = ds[name]
        if "y" not in var.dims:
            continue
        chunks = tuple(
            min(n, chunk_xy) if d in ("y", "x") else 1
            for d, n in zip(var.dims, var.shape, strict=True)
        )
        enc[str(name)] = {
            "dtype": "float32",
            "zlib": level > 0,
            "complevel": level,
            "shuffle": True,
            "chunksizes": chunks,
            "_FillValue": FILL_VALUE,
        }
    return enc
