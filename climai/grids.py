"""Explicit grids: shape, spacing, CRS and coordinates travel with the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from pyproj import CRS
from pyproj.exceptions import CRSError

from climai.units import UnitsError, lookup, normalise

if TYPE_CHECKING:
    from climai.config import CampaignConfig

_X_NAMES = ("x", "lon", "longitude", "rlon", "projection_x_coordinate", "easting")
_Y_NAMES = ("y", "lat", "latitude", "rlat", "projection_y_coordinate", "northing")
_X_STANDARD = ("projection_x_coordinate", "longitude", "grid_longitude")
_Y_STANDARD = ("projection_y_coordinate", "latitude", "grid_latitude")


class GridError(ValueError):
    """A grid that cannot be used as asked (irregular spacing, size not a multiple of scale, ...)."""


@dataclass(frozen=True)
class Grid:
    """A regular grid of cell centres in a projected CRS (metres) or in lat/lon (degrees)."""

    x: np.ndarray
    y: np.ndarray
    crs_wkt: str

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return (self.y.size, self.x.size)

    @property
    def dx(self) -> float:
        return float(self.x[1] - self.x[0])

    @property
    def dy(self) -> float:
        return float(self.y[1] - self.y[0])

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Outer cell edges ``(xmin, ymin, xmax, ymax)`` in the grid's CRS."""
        hx, hy = abs(self.dx) / 2, abs(self.dy) / 2
        return (
            float(self.x.min() - hx),
            float(self.y.min() - hy),
            float(self.x.max() + hx),
            float(self.y.max() + hy),
        )

    def transform(self) -> tuple[float, float, float, float, float, float]:
        """The affine transform of the cell corners (GDAL order a, b, c, d, e, f).

        Works for increasing and decreasing axes: the first cell's corner is the origin.
        """
        return (
            self.dx,
            0.0,
            float(self.x[0] - self.dx / 2),
            0.0,
            self.dy,
            float(self.y[0] - self.dy / 2),
        )

    def trim_to_multiple(self, scale: int) -> tuple[Grid, tuple[int, int]]:
        """This grid cut at its end to a multiple of ``scale`` cells; ``(grid, (rows, cols) cut)``."""
        ny, nx = self.shape
        cut = (ny % scale, nx % scale)
        if ny - cut[0] < scale or nx - cut[1] < scale:
            raise GridError(f"grid {ny}×{nx} is smaller than one LR cell of scale={scale}")
        return Grid(self.x[: nx - cut[1]], self.y[: ny - cut[0]], self.crs_wkt), cut

    def domain_slices(
        self, x_range: tuple[float, float], y_range: tuple[float, float]
    ) -> tuple[slice, slice]:
        """Index slices ``(ys, xs)`` of the cells whose centres lie in the ranges (inclusive).

        Raises :class:`GridError` naming the ranges and the grid's extent when nothing is inside.
        """
        out = []
        for name, c, (lo, hi) in (("y", self.y, y_range), ("x", self.x, x_range)):
            lo, hi = min(lo, hi), max(lo, hi)
            idx = np.flatnonzero((c >= lo) & (c <= hi))
            if idx.size < 2:
                raise GridError(
                    f"domain {name}: [{lo:g}, {hi:g}] holds {idx.size} cell centre(s) of the data, "
                    f"whose {name} runs {float(c.min()):g}..{float(c.max()):g}; need at least 2"
                )
            out.append(slice(int(idx[0]), int(idx[-1]) + 1))
        return out[0], out[1]

    def check_regular(self, rtol: float = 1e-6) -> None:
        """Raise :class:`GridError` unless both axes are evenly spaced: every step within
        ``rtol`` of the first, or within float32 rounding of the coordinates (4 units in the last
        place of the largest value), since files often store them as float32 (read as float64
        they keep the rounding): a 0.01° axis at 45° N is then uneven by ~5e-4 of a step, a
        1 km axis at 4,000 km by ~2e-3; a missing or shifted row is a whole step."""
        for name, c in (("x", self.x), ("y", self.y)):
            if c.size < 2:
                raise GridError(f"grid axis {name!r} has {c.size} cell(s); need at least 2")
            if uneven_step(c, rtol) is not None:
                step = np.diff(c.astype(np.float64))
                raise GridError(
                    f"grid axis {name!r} is not evenly spaced (steps {step.min():g}..{step.max():g})"
                )

    def coarsen(self, scale: int) -> Grid:
        """The LR grid: block centres of ``scale`` × ``scale`` HR cells."""
        ny, nx = self.shape
        if nx % scale or ny % scale:
            raise GridError(f"HR grid {ny}×{nx} is not a multiple of scale={scale} on each axis")
        return Grid(
            self.x.reshape(-1, scale).mean(axis=1),
            self.y.reshape(-1, scale).mean(axis=1),
            self.crs_wkt,
        )


def uneven_step(values: np.ndarray, rtol: float = 1e-6) -> int | None:
    """The index of the first step of an axis that differs from its first step by more than
    ``rtol`` of it plus float32 rounding of the coordinates (4 units in the last place of the
    largest; :meth:`Grid.check_regular`), or of a zero first step; None: evenly spaced."""
    c = np.asarray(values, dtype=np.float64)
    if c.size < 2:
        return None
    step = np.diff(c)
    if step[0] == 0:
        return 0
    tol = rtol * abs(step[0]) + 4 * float(np.finfo(np.float32).eps) * float(np.abs(c).max())
    off = np.flatnonzero(np.abs(step - step[0]) > tol)
    return int(off[0]) if off.size else None


def _monotonic(values: np.ndarray) -> bool:
    step = np.diff(values)
    return bool((step > 0).all() or (step < 0).all())


def normalise_longitudes(lon: np.ndarray) -> np.ndarray:
    """Longitudes in −180…180 (e.g. MRMS's 230…300°E → −130…−60) when that keeps the axis
    monotonic; an axis that crosses the antimeridian is made continuous in 0…360 instead (a file
    in −180…180 that jumps from 179.9 to −179.9 becomes 179.9, 180.1), else returned unchanged."""
    lon = np.asarray(lon, dtype=np.float64)
    wrapped = (lon + 180.0) % 360.0 - 180.0
    if _monotonic(wrapped):
        return wrapped
    east = lon % 360.0
    return east if not _monotonic(lon) and _monotonic(east) else lon


def axes_in_crs_units(ds: xr.Dataset, crs: CRS) -> xr.Dataset:
    """``ds`` with its ``x``/``y`` in the CRS's units: longitudes in −180…180
    (:func:`normalise_longitudes`) on a lat/lon grid; projected coordinates in metres, converted
    from their ``units`` (e.g. km). :class:`GridError` for units that are not a length."""
    if crs.is_geographic:
        return ds.assign_coords(x=("x", normalise_longitudes(ds["x"].values), ds["x"].attrs))
    for c in ("x", "y"):
        units = normalise(str(ds[c].attrs.get("units", "m")))
        if units == "m":
            continue
        try:
            unit = lookup(units, c, " (coordinate)")
        except UnitsError as err:
            raise GridError(f"{err}; expected a length (m, km)") from None
        if unit.dimension != "length":
            raise GridError(
                f"coordinate {c!r} has units {units!r} ({unit.dimension}); a projected grid "
                "needs a length (m, km)"
            )
        metres = np.asarray(ds[c].values, dtype=np.float64) * unit.factor
        ds = ds.assign_coords({c: (c, metres, {**ds[c].attrs, "units": "m"})})
    return ds


def find_xy(ds: xr.Dataset, variable: str) -> tuple[str, str]:
    """Names of the x and y dimensions of ``ds[variable]`` (by CF ``axis``/``standard_name``,
    then by common names); :class:`GridError` listing the dimensions if they are not found."""
    dims = [str(d) for d in ds[variable].dims]
    found: dict[str, str] = {}
    for axis, names, standard in (("X", _X_NAMES, _X_STANDARD), ("Y", _Y_NAMES, _Y_STANDARD)):
        for d in dims:
            attrs = ds[d].attrs if d in ds.coords else {}
            if attrs.get("axis") == axis or attrs.get("standard_name") in standard:
                found[axis] = d
                break
        else:
            for d in dims:
                if d.lower() in names:
                    found[axis] = d
                    break
    if "X" not in found or "Y" not in found:
        raise GridError(
            f"variable {variable!r} has dimensions {dims}; cannot tell which are x and y "
            f"(expected a coordinate with axis X/Y or a name like x/lon and y/lat)"
        )
    bare = [d for d in (found["X"], found["Y"]) if d not in ds.coords]
    if bare:  # read as 0, 1, 2...: a grid of 1 m (or 1°) cells in the wrong place
        raise GridError(
            f"variable {variable!r}: dimension(s) {bare} have no coordinate variable; expected "
            "1-D coordinates of the cell centres (metres or degrees, as the CRS needs)"
        )
    return found["X"], found["Y"]


def is_geographic_axis(coord: xr.DataArray) -> bool:
    """Whether a 1-D coordinate is longitude or latitude (by units or standard name)."""
    units = str(coord.attrs.get("units", "")).lower()
    return units.startswith("degree") or coord.attrs.get("standard_name") in (
        "longitude",
        "latitude",
    )


def crs_from_dataset(ds: xr.Dataset, variable: str, x: str, override: str | None = None) -> CRS:
    """The CRS of ``ds[variable]``: ``override`` if given, else its CF ``grid_mapping`` variable
    (``crs_wkt``/``spatial_ref`` or the CF parameters via :meth:`pyproj.CRS.from_cf`), else WGS84
    for a lat/lon grid. :class:`GridError` when none of these says what the grid is."""
    if override:
        try:
            return CRS.from_user_input(override)
        except CRSError as err:
            raise GridError(f"crs {override!r} is not a CRS pyproj knows: {err}") from None
    da = ds[variable]
    gm = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
    if gm:
        gm = str(gm).split(":")[0].strip()
        if gm not in ds.variables:
            raise GridError(
                f"variable {variable!r} names grid_mapping {gm!r}, which is not in the file"
            )
        attrs = dict(ds[gm].attrs)
        try:
            for key in ("crs_wkt", "spatial_ref"):
                if attrs.get(key):
                    return CRS.from_wkt(str(attrs[key]))
            return CRS.from_cf(attrs)
        except CRSError as err:
            raise GridError(
                f"grid_mapping {gm!r} of variable {variable!r} is not a CRS pyproj can read: {err}"
            ) from None
    if is_geographic_axis(ds[x]):
        return CRS.from_epsg(4326)
    raise GridError(
        f"variable {variable!r} has no grid_mapping and projected coordinates; "
        f"set the source's 'crs' (e.g. crs: EPSG:3067)"
    )


def crs_variable(crs: CRS) -> xr.DataArray:
    """A CF grid-mapping variable (scalar) for ``crs``, with ``crs_wkt`` and ``spatial_ref``."""
    attrs = crs.to_cf()
    attrs["spatial_ref"] = attrs.get("crs_wkt", crs.to_wkt())
    return xr.DataArray(np.int32(0), attrs=attrs)


def standardise(
    ds: xr.Dataset, names: list[str], key: str, crs_override: str | None
) -> tuple[xr.Dataset, Grid]:
    """``ds`` on dims ``(time, y, x)``/``(y, x)`` with its :class:`Grid` (CRS from CF metadata);
    :class:`GridError` naming ``key`` otherwise."""
    try:
        x, y = find_xy(ds, names[0])
        crs = crs_from_dataset(ds, names[0], x, crs_override)
    except GridError as err:
        raise GridError(f"{key}: {err}") from None
    ds = ds.rename({d: n for d, n in ((x, "x"), (y, "y")) if d != n})
    try:
        ds = axes_in_crs_units(ds, crs)
    except GridError as err:
        raise GridError(f"{key}: {err}") from None
    gm = [str(ds[n].attrs.get("grid_mapping", "")).split(":")[0] for n in names]
    ds = ds.drop_vars([g for g in set(gm) if g and g in ds.variables])
    for name in names:
        extra = [d for d in ds[name].dims if d not in ("time", "y", "x")]
        if extra:
            raise GridError(
                f"{key}: variable {name!r} has dimensions {ds[name].dims}; expected (time, y, x) "
                f"or (y, x) — select the extra dimension(s) {extra} beforehand"
            )
        if "time" in ds[name].dims and not np.issubdtype(ds["time"].dtype, np.datetime64):
            first = ds["time"].values.flat[0] if ds["time"].size else None
            calendar = getattr(first, "calendar", None)
            what = f"the {calendar!r} calendar" if calendar else f"dtype {ds['time'].dtype}"
            raise GridError(
                f"{key}: the time of {name!r} does not decode to dates climai runs on ({what}); "
                "expected a standard, gregorian, proleptic_gregorian, noleap or 365_day "
                "calendar: convert the files first, e.g. xarray's ds.convert_calendar('noleap', "
                "align_on='year')"
            )
    try:
        grid = Grid(np.asarray(ds["x"].values), np.asarray(ds["y"].values), crs.to_wkt())
        grid.check_regular()
    except GridError as err:
        raise GridError(f"{key}: {err}") from None
    return ds, grid


def _covers(x: np.ndarray, lo: float, hi: float) -> bool:
    half = abs(float(x[1] - x[0])) / 2 if x.size > 1 else 0.0
    return bool(lo >= x.min() - half and hi <= x.max() + half)


def longitudes_for_range(
    ds: xr.Dataset, grid: Grid, x_range: tuple[float, float]
) -> tuple[xr.Dataset, Grid, tuple[float, float]]:
    """On a lat/lon grid: the domain's longitudes in the grid's convention (0–360 or −180…180),
    and the grid reordered into the other convention where only that holds the domain in one
    piece (a 0–360 global file cut at [−10, 10]: the columns 350…360 then 0…10, as −10…10).
    Elsewhere ``ds``, ``grid`` and the range unchanged."""
    lo, hi = min(x_range), max(x_range)
    if not grid.crs.is_geographic or grid.x.size < 2:
        return ds, grid, (lo, hi)
    shifts = (0.0, -360.0, 360.0)
    for shift in shifts:
        if _covers(grid.x, lo + shift, hi + shift):
            return ds, grid, (lo + shift, hi + shift)
    wrapped = (grid.x + 180.0) % 360.0 - 180.0
    other = grid.x % 360.0 if np.array_equal(wrapped, grid.x) else wrapped
    order = np.argsort(other) if grid.dx > 0 else np.argsort(other)[::-1]
    x = other[order]
    if uneven_step(x) is not None:
        return ds, grid, (lo, hi)
    for shift in shifts:
        if _covers(x, lo + shift, hi + shift):
            ds = ds.isel(x=order).assign_coords(x=("x", x, ds["x"].attrs))
            return ds, Grid(x, grid.y, grid.crs_wkt), (lo + shift, hi + shift)
    return ds, grid, (lo, hi)


def longitudes_facing(ds: xr.Dataset, src: Grid, dst: Grid) -> tuple[xr.Dataset, Grid]:
    """A lat/lon source ``ds`` on ``src`` with its longitudes in the convention (0–360 or
    −180…180) that holds ``dst``'s extent in one piece (:func:`longitudes_for_range`): a global
    0–360 DEM for a domain across the prime meridian. Other sources are returned unchanged."""
    from pyproj import Transformer

    if not src.crs.is_geographic:
        return ds, src
    to_src = Transformer.from_crs(dst.crs, src.crs, always_xy=True)
    xmin, _, xmax, _ = to_src.transform_bounds(*dst.bounds, densify_pts=51)
    if not (np.isfinite(xmin) and np.isfinite(xmax)) or xmax < xmin:
        return ds, src
    half = abs(src.dx) / 2
    ds, src, _ = longitudes_for_range(ds, src, (xmin + half, xmax - half))
    return ds, src


def subset_and_trim(
    ds: xr.Dataset, grid: Grid, cfg: CampaignConfig
) -> tuple[xr.Dataset, Grid, str]:
    """Cut ``ds`` to ``cfg.domain`` and then to a multiple of ``cfg.scale``; a report line."""
    if cfg.domain is not None:
        ds, grid, x_range = longitudes_for_range(ds, grid, cfg.domain.x)
        try:
            ys, xs = grid.domain_slices(x_range, cfg.domain.y)
        except GridError as err:
            raise GridError(f"domain is outside the data: {err}") from None
        ds = ds.isel(y=ys, x=xs)
        grid = Grid(grid.x[xs], grid.y[ys], grid.crs_wkt)
    ny, nx = grid.shape
    trimmed, (cut_y, cut_x) = grid.trim_to_multiple(cfg.scale)
    report = (
        f"HR grid {ny}×{nx}: trimmed {cut_y} row(s) and {cut_x} column(s) at the end to "
        f"{trimmed.shape[0]}×{trimmed.shape[1]}, a multiple of scale={cfg.scale}"
    )
    return ds.isel(y=slice(0, trimmed.shape[0]), x=slice(0, trimmed.shape[1])), trimmed, report
