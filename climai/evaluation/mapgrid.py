"""The coordinates figures are drawn in: km on projected grids, longitude/latitude on geographic
ones, north up whichever way the data's y axis runs, and the cell size in km that spectra use.

Examples
--------
>>> g = MapGrid(np.array([0.0, 500.0, 1000.0]), np.array([2000.0, 1500.0]), geographic=False)
>>> g.extent, g.labels, g.cell_km
((-0.25, 1.25, 1.25, 2.25), ('x (km)', 'y (km)'), 0.5)
>>> g.north_up(np.array([[1, 2, 3], [4, 5, 6]])).tolist()  # y decreasing: rows flipped
[[4, 5, 6], [1, 2, 3]]
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

# km per degree of latitude, and of longitude at the equator (WGS84 mean radius 6371.0088 km)
KM_PER_DEGREE = 2 * math.pi * 6371.0088 / 360


MAP_CELLS = 600  # the most values per side a map panel draws (larger fields: block means)


@dataclass(frozen=True)
class MapGrid:
    """Cell centres ``x``, ``y`` as the data holds them (metres, or degrees when ``geographic``),
    in the data's order (either axis may decrease: FMI, BOM and MRMS have y running north to
    south). Fields drawn on it have shape ``(y.size, x.size)``."""

    x: np.ndarray
    y: np.ndarray
    geographic: bool
    rotated: bool = False  # a rotated-pole grid: degrees of the rotated sphere

    @classmethod
    def of(cls, ds: xr.Dataset | xr.DataArray) -> MapGrid:
        """The grid of ``ds``'s ``x``/``y`` coordinates: geographic when their units are degrees
        (CF ``degrees_east``/``degrees_north``; rotated when x is a CF ``grid_longitude``), else
        projected metres (converted from km when the ``units`` say so)."""
        x, y = ds["x"], ds["y"]
        units = str(x.attrs.get("units", "m")).lower()
        if units.startswith("degree"):
            rotated = x.attrs.get("standard_name") == "grid_longitude"
            return cls(np.asarray(x.values, float), np.asarray(y.values, float), True, rotated)
        factor = 1000.0 if units == "km" else 1.0
        return cls(
            np.asarray(x.values, float) * factor, np.asarray(y.values, float) * factor, False
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y.size, self.x.size)

    def _plot(self, c: np.ndarray) -> np.ndarray:
        return c if self.geographic else c / 1000.0

    @staticmethod
    def _step(c: np.ndarray) -> float:
        return float(abs(c[-1] - c[0]) / (c.size - 1)) if c.size > 1 else 1.0

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(west, east, south, north)`` cell edges in plot units (km or degrees), for
        ``imshow(..., origin="lower")`` of a :meth:`north_up` field."""
        x, y = self._plot(self.x), self._plot(self.y)
        hx, hy = self._step(x) / 2, self._step(y) / 2
        return (
            float(x.min() - hx),
            float(x.max() + hx),
            float(y.min() - hy),
            float(y.max() + hy),
        )

    @property
    def labels(self) -> tuple[str, str]:
        """The x and y axis labels, with units."""
        if self.rotated:
            return ("rotated longitude (°)", "rotated latitude (°)")
        if self.geographic:
            return ("longitude (°E)", "latitude (°N)")
        return ("x (km)", "y (km)")

    @property
    def mean_latitude(self) -> float:
        """The domain's mean latitude (degrees; geographic grids only)."""
        return float(np.mean(self.y))

    @property
    def aspect(self) -> float:
        """Height/width of one plot unit: 1 for km; 1/cos(mean latitude) for lon/lat, so that a
        degree of longitude is drawn as long as it is at the domain's mean latitude."""
        if not self.geographic:
            return 1.0
        return 1.0 / max(math.cos(math.radians(self.mean_latitude)), 0.05)

    @property
    def cell_km_xy(self) -> tuple[float, float]:
        """The cell size ``(dx, dy)`` in km; on a lat/lon grid at the domain's mean latitude
        φ: dx = Δλ·111.2 km·cos φ, dy = Δφ·111.2 km."""
        dx, dy = self._step(self.x), self._step(self.y)
        if not self.geographic:
            return dx / 1000.0, dy / 1000.0
        coslat = math.cos(math.radians(self.mean_latitude))
        return dx * KM_PER_DEGREE * coslat, dy * KM_PER_DEGREE

    @property
    def cell_km(self) -> float:
        """The cell size in km that converts spectral wavelengths (in cells) to km: the
        geometric mean of :attr:`cell_km_xy` (the exact size on a square projected grid)."""
        dx, dy = self.cell_km_xy
        return math.sqrt(dx * dy)

    @property
    def cell_note(self) -> str:
        """What one cell is in km, and where that holds (lat/lon grids: the mean latitude)."""
        dx, dy = self.cell_km_xy
        if not self.geographic:
            size = f"{dx:.3g} km" if math.isclose(dx, dy, rel_tol=1e-3) else f"{dx:.3g}×{dy:.3g} km"
            return f"1 cell = {size}"
        return (
            f"1 cell ≈ {dx:.3g}×{dy:.3g} km at the mean latitude {self.mean_latitude:.1f}°; "
            f"km = cells × {self.cell_km:.3g}"
        )

    def north_up(self, field: np.ndarray) -> np.ndarray:
        """``field`` (shape ``(..., y, x)`` in the data's order) with rows from south to north
        and columns from west to east, for ``imshow(..., origin="lower", extent=self.extent)``."""
        if self.y.size > 1 and self.y[0] > self.y[-1]:
            field = field[..., ::-1, :]
        if self.x.size > 1 and self.x[0] > self.x[-1]:
            field = field[..., ::-1]
        return field

    def subset(self, ys: slice, xs: slice) -> MapGrid:
        """The grid of ``field[ys, xs]``."""
        return MapGrid(self.x[xs], self.y[ys], self.geographic, self.rotated)

    def decimated(self, field: np.ndarray, max_cells: int) -> tuple[np.ndarray, MapGrid]:
        """``field`` and this grid reduced by NaN-aware k×k block means so that neither side
        exceeds ``max_cells`` (the whole field and grid when it already fits): a 3500×7000 domain
        is drawn from ~10⁶ values. The last rows/columns that do not fill a block are dropped."""
        k = max(1, math.ceil(max(field.shape) / max_cells))
        if k == 1:
            return field, self
        ny, nx = field.shape[0] // k * k, field.shape[1] // k * k
        blocks = field[:ny, :nx].reshape(ny // k, k, nx // k, k)
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
            small = np.nanmean(blocks, axis=(1, 3))
        x = self.x[:nx].reshape(-1, k).mean(axis=1)
        y = self.y[:ny].reshape(-1, k).mean(axis=1)
        return small, MapGrid(x, y, self.geographic, self.rotated)
