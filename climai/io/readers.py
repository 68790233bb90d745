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
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from climai.config import FileSource, GribSource, NetCDFSource, PluginSource, ZarrSource
from climai.io.calendars import CalendarError, to_datetime64
from climai.io.series import scalar_time_to_axis, side_by_side, time_dim
from climai.plugins import PluginError, Registry, unbindable

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
    time = time_dim(ds, names[0])
    if time is not None:
        bounds = ds[time].attrs.get("bounds") or ds[time].encoding.get("bounds")
        if bounds and bounds in ds.variables:
            keep.append(str(bounds))
    out = ds[list(dict.fromkeys(keep))]
    aux = [c for c in out.coords if c not in out.dims]
    return out.drop_vars(aux)


def check_times(ds: xr.Dataset, time: str, where: str, key: str) -> pd.DatetimeIndex:
    """The times of one file; duplicated or decreasing times are errors."""
    times = pd.DatetimeIndex(ds[time].values)
    if times.size == 0:
        raise SourceError(
            f"{key}: the time axis {time!r} of {where} is empty (0 steps); expected at least one "
            "time step"
        )
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
    if time_dim(parts[0][1], variable) is None:
        if len(parts) > 1:
            raise SourceError(
                f"{key}: {len(parts)} files given but {variable!r} has no time dimension; "
                f"a static field must come from one file"
            )
        return parts[0][1]
    spans = []
    for where, ds in parts:
        time = time_dim(ds, variable)
        if time is None:
            raise SourceError(f"{key}: variable {variable!r} in {where} has no time dimension")
        times = check_times(ds, time, where, key)
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
            _same_series([(s[2], s[3]) for s in spans], variable, key),
            dim="time",
            data_vars="minimal",
            coords="minimal",
            compat="override",
            join="exact",
        )
    except ValueError as err:
        raise SourceError(f"{key}: the files do not share one grid: {err}") from None


def _same_series(parts: list[tuple[str, xr.Dataset]], variable: str, key: str) -> list[xr.Dataset]:
    """The files of a series with their variables in the first file's units (converted lazily,
    e.g. an archive that switched from kg m-2 s-1 to mm h-1); ``SourceError`` naming both files
    where units do not convert or a file is on another grid than the first."""
    from climai.units import UnitsError, convert

    (first, ref), rest = parts[0], parts[1:]
    dims = [d for d in ref[variable].dims if d != "time"]
    out = [ref]
    for where, ds in rest:
        for name in ref.data_vars:
            want, u = (
                ref[name].attrs.get("units"),
                ds[name].attrs.get("units") if name in ds else None,
            )
            if name not in ds or u == want:
                continue
            try:
                if want is None or u is None:
                    raise UnitsError("a file without units")
                ds = ds.assign({name: convert(ds[name], str(want), str(name), f" in {where}")})
            except UnitsError as err:
                raise SourceError(
                    f"{key}: variable {str(name)!r} is in units {u!r} in {where} but "
                    f"{want!r} in {first}, and these do not convert ({err}): every file of a "
                    "series must hold it in units of the same quantity"
                ) from None
        out.append(ds)
        for dim in dims:
            if dim not in ref.coords or dim not in ds.coords:
                continue
            a, b = np.asarray(ref[dim].values), np.asarray(ds[dim].values)
            if a.shape != b.shape:
                why = f"{b.size} cells against {a.size}"
            elif not np.array_equal(a, b):
                i = int(np.argmax(a != b))
                why = f"{float(b[i]):.10g} against {float(a[i]):.10g} at index {i} (the largest difference "
                why += f"{float(np.max(np.abs(b.astype(float) - a.astype(float)))):g})"
            else:
                continue
            raise SourceError(
                f"{key}: {where} is on another grid than {first}: its coordinate {dim!r} has "
                f"{why}; every file of a series must share one grid"
            )
    return out


def _open_nc(path: str, key: str) -> xr.Dataset:
    try:
        return xr.open_dataset(path, chunks={}, cache=False)
    except Exception as err:  # netCDF4/h5py raise OSError, RuntimeError, ValueError...
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SourceError(
            f"{key}: cannot read NetCDF file {path!r} (truncated or not NetCDF?): {msg}"
        ) from None


def open_netcdf(spec: NetCDFSource, names: list[str], key: str) -> xr.Dataset:
    """NetCDF file(s), lazily; a series of files is sorted by time. Variables may be in files of
    their own (CMIP/CORDEX: ``tas_*.nc`` and ``pr_*.nc``): each variable's series is joined in
    time, then the series are put side by side on the same times and grid (checked)."""
    groups: dict[tuple[str, ...], list[tuple[str, xr.Dataset]]] = {}
    for path in expand_paths(spec.path, key):
        ds = _open_nc(path, key)
        present = tuple(n for n in names if n in ds.data_vars)
        if not present:
            _check_variables(ds, names, repr(path), key)
        ds = _gregorian(ds, f"{key}: file {path!r}")
        groups.setdefault(present, []).append(
            (repr(path), _keep(scalar_time_to_axis(ds, list(present)), list(present)))
        )
    if len(groups) == 1:
        ((present, parts),) = groups.items()
        _check_variables(parts[0][1], names, parts[0][0], key)
        return combine_in_time(parts, names[0], key)
    series = {p: (parts[0][0], combine_in_time(parts, p[0], key)) for p, parts in groups.items()}
    try:
        return side_by_side(series, names, key)
    except ValueError as err:
        raise SourceError(str(err)) from None


def open_netcdf_glob(pattern: str, key: str) -> xr.Dataset:
    """Every variable on a time axis of the NetCDF files ``pattern`` matches, as
    :func:`open_netcdf` joins a source's files (in time, and variables of their own files side
    by side): ``climai downscale --input 'rcp85/*_day_*.nc'``."""
    from climai.config import NetCDFSource

    names: list[str] = []
    for path in expand_paths(pattern, key):
        with xr.open_dataset(path, decode_times=False) as ds:
            bounds = {str(ds[d].attrs.get("bounds", "")) for d in ds.dims if d in ds}
            names += [str(v) for v in ds.data_vars if len(ds[v].dims) > 1 and v not in bounds]
    spec = NetCDFSource(source="netcdf", path=pattern)
    return open_netcdf(spec, list(dict.fromkeys(names)), key)


def _gregorian(ds: xr.Dataset, where: str) -> xr.Dataset:
    """:func:`climai.io.calendars.to_datetime64`, its refusal as :class:`SourceError`."""
    try:
        return to_datetime64(ds, where)
    except CalendarError as err:
        raise SourceError(str(err)) from None


def storage_options(spec: ZarrSource, key: str) -> dict[str, Any]:
    """The fsspec options of a store: ``storage_options``, then the credentials file's, then
    the environment's (``storage_options_env``), read now; never written anywhere."""
    options = dict(spec.storage_options)
    if spec.credentials_file is not None:
        path = Path(spec.credentials_file).expanduser()
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise SourceError(
                f"{key}.credentials_file: cannot read {str(path)!r}: {type(err).__name__}"
            ) from None
        if not isinstance(loaded, dict):
            raise SourceError(
                f"{key}.credentials_file: {str(path)!r} must hold a mapping of fsspec options "
                "(e.g. key: ..., secret: ...)"
            )
        options.update(loaded)
    for option, variable in spec.storage_options_env.items():
        if variable not in os.environ:
            raise SourceError(
                f"{key}.storage_options_env.{option}: environment variable {variable!r} is not "
                "set; export it where the jobs run"
            )
        options[option] = os.environ[variable]
    return options


def open_zarr_source(spec: ZarrSource, names: list[str], key: str) -> xr.Dataset:
    """A zarr store, local or remote (fsspec URL), lazily."""
    if not _is_url(spec.path) and not Path(spec.path).exists():
        raise SourceError(f"{key}.path: store {spec.path!r} does not exist")
    options = storage_options(spec, key)
    try:
        ds = xr.open_zarr(spec.path, chunks={}, storage_options=options or None)
    except Exception as err:
        # the error's text may quote the options (secrets): name its type only when there are any
        detail = type(err).__name__ if options else str(err)
        raise SourceError(f"{key}: cannot open zarr store {spec.path!r}: {detail}") from None
    _check_variables(ds, names, f"store {spec.path!r}", key)
    ds = _keep(_gregorian(ds, f"{key}: store {spec.path!r}"), names)
    time = time_dim(ds, names[0])
    if time is not None:
        check_times(ds, time, f"store {spec.path!r}", key)
        ds = ds.rename({time: "time"})
    return ds


_GRIB_KEYS = ("discipline", "parameterCategory", "parameterNumber", "shortName", "typeOfLevel")


def grib_fields(path: str) -> list[dict[str, Any]]:
    """The identifying keys and units of each message in a GRIB file (headers only, ecCodes)."""
    import eccodes

    out: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        while (handle := eccodes.codes_grib_new_from_file(f)) is not None:
            try:
                field = {}
                for k in (*_GRIB_KEYS, "units"):
                    try:
                        field[k] = eccodes.codes_get(handle, k)
                    except eccodes.KeyValueNotFoundError:
                        continue
                out.append(field)
            finally:
                eccodes.codes_release(handle)
    return out


def _describe_fields(path: str) -> str:
    fields = grib_fields(path)
    unique = list(dict.fromkeys(str({k: f[k] for k in _GRIB_KEYS if k in f}) for f in fields))
    return "; ".join(unique) or "no GRIB messages"


def _grib_field(
    ds: xr.Dataset, spec: GribSource, names: list[str], path: str, key: str
) -> xr.Dataset:
    """The selected field(s) of one GRIB file named as configured, with known units."""
    present = [str(v) for v in ds.data_vars]
    if not present:
        raise SourceError(
            f"{key}.filter_by_keys: {dict(spec.filter_by_keys)} selects no field in {path!r}; "
            f"its fields: {_describe_fields(path)}; set {key}.filter_by_keys to the keys of one "
            "of them"
        )
    if not set(names) <= set(present):
        if len(names) != 1 or len(present) != 1:
            raise SourceError(
                f"{key}.filter_by_keys: {dict(spec.filter_by_keys)} selects the field(s) "
                f"{present} in {path!r}, not {names}; narrow {key}.filter_by_keys to one field "
                "(it is then named after variables[].source_name)"
            )
        ds = ds.rename({present[0]: names[0]})
        ds[names[0]].attrs["grib_name"] = present[0]
    for name in names:
        units = str(ds[name].attrs.get("units", "unknown")).strip()
        if units.lower() in ("unknown", "", "~"):
            if spec.units_override is None:
                attrs = ds[name].attrs
                ident = ", ".join(
                    f"{k} {attrs.get('GRIB_' + k, '?')}" for k in ("paramId", "shortName")
                )
                raise SourceError(
                    f"{key}.units_override: field {name!r} ({ident}) in {path!r} has units "
                    f"{units or 'none'!r}; set {key}.units_override to its units "
                    "(e.g. units_override: mm h-1 for MRMS PrecipRate)"
                )
            ds[name].attrs["units"] = spec.units_override
        elif spec.units_override is not None and units != spec.units_override:
            raise SourceError(
                f"{key}.units_override: {spec.units_override!r} but field {name!r} in {path!r} "
                f"says {units!r}; units_override is only for fields whose units are 'unknown'"
            )
    return ds


def _regular_ll_axes(ds: xr.Dataset, name: str) -> xr.Dataset:
    """Latitudes/longitudes of a ``regular_ll`` GRIB grid rebuilt from its first point and
    increments (cfgrib's are rounded to ~1e-6°, which makes 0.01° steps look irregular)."""
    a = ds[name].attrs
    if a.get("GRIB_gridType") != "regular_ll" or not {"latitude", "longitude"} <= set(ds.dims):
        return ds
    dlat = float(a["GRIB_jDirectionIncrementInDegrees"]) * (
        -1 if a["GRIB_jScansPositively"] == 0 else 1
    )
    dlon = float(a["GRIB_iDirectionIncrementInDegrees"]) * (-1 if a["GRIB_iScansNegatively"] else 1)
    lat = float(a["GRIB_latitudeOfFirstGridPointInDegrees"]) + dlat * np.arange(
        ds.sizes["latitude"]
    )
    lon = float(a["GRIB_longitudeOfFirstGridPointInDegrees"]) + dlon * np.arange(
        ds.sizes["longitude"]
    )
    return ds.assign_coords(
        latitude=("latitude", lat, ds["latitude"].attrs),
        longitude=("longitude", lon, ds["longitude"].attrs),
    )


def _grib_time(ds: xr.Dataset) -> xr.Dataset:
    """The valid time as the ``time`` dimension (one message per file: a length-1 axis)."""
    if "valid_time" in ds.coords and ds["valid_time"].ndim == 0:
        ds = ds.drop_vars([c for c in ("time", "step") if c in ds.coords])
        return ds.rename({"valid_time": "time"}).expand_dims("time")
    if "valid_time" in ds.coords and "time" in ds.dims and "step" not in ds.dims:
        return ds.drop_vars("time").rename({"valid_time": "time"})
    return ds


def open_grib(spec: GribSource, names: list[str], key: str) -> xr.Dataset:
    """GRIB file(s) through cfgrib, one field selected by ``filter_by_keys``; the first file is
    checked (field, units) before the others are opened."""
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
        ds = _grib_time(_regular_ll_axes(_grib_field(ds, spec, names, path, key), names[0]))
        parts.append((repr(path), _keep(ds, names)))
    return combine_in_time(parts, names[0], key)


Reader = Callable[[Any, list[str], str], xr.Dataset]
"""``reader(spec, names, key)``: the variables ``names`` from the source config ``spec`` (a
``PluginSource`` for plugins: ``path`` and ``options``), lazily; ``key`` (e.g. ``data.target``)
is for error messages."""


def _check_reader(name: str, obj: object) -> Reader:
    if not callable(obj):
        raise TypeError(f"expected a function (spec, names, key) -> xarray.Dataset, got {obj!r}")
    if (found := unbindable(obj, 3)) is not None:
        raise TypeError(
            f"expected a function (spec, names, key) -> xarray.Dataset, {obj!r} has the "
            f"signature {found}"
        )
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
    return mask_missing(ds, names, spec.missing_value)


def mask_missing(
    ds: xr.Dataset, names: list[str], missing: float | list[float] | None
) -> xr.Dataset:
    """``ds`` with the sentinel value(s) ``missing`` of the variables ``names`` as NaN (lazy)."""
    if missing is None:
        return ds
    values = [missing] if isinstance(missing, int | float) else list(missing)
    out = ds.copy()
    for name in names:
        da = ds[name]
        # in the data's own precision: -999.9 in a float32 file is float32(-999.9), which
        # isin() compared with the float64 -999.9 would never find (as CF decoding does)
        same = np.asarray(values, dtype=da.dtype) if da.dtype.kind == "f" else values
        out[name] = da.where(~da.isin(same)).assign_attrs(
            {**da.attrs, "missing_sentinel": str(values)}
        )
    return out
