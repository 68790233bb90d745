"""Explicit grids: shape, spacing, CRS and coordinates travel with the data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from pyproj import CRS


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

    @classmethod
    def from_dataset(cls, ds: xr.Dataset | xr.DataArray, x: str = "x", y: str = "y") -> Grid:
        """The grid of ``ds``: its 1-D ``x``/``y`` coordinates and the WKT of its ``crs`` variable."""
        if x not in ds.coords or y not in ds.coords:
            raise GridError(f"dataset has no {x!r}/{y!r} coordinates; it has {list(ds.coords)}")
        crs_wkt = ""
        if isinstance(ds, xr.Dataset) and "crs" in ds.variables:
            crs_wkt = str(ds["crs"].attrs.get("crs_wkt", ""))
        grid = cls(np.asarray(ds[x].values), np.asarray(ds[y].values), crs_wkt)
        grid.check_regular()
        return grid

    def check_regular(self, rtol: float = 1e-6) -> None:
        """Raise :class:`GridError` unless both axes are evenly spaced."""
        for name, c in (("x", self.x), ("y", self.y)):
            if c.size < 2:
                raise GridError(f"grid axis {name!r} has {c.size} cell(s); need at least 2")
            step = np.diff(c)
            if not np.allclose(step, step[0], rtol=rtol, atol=0):
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


def crs_variable(crs: CRS) -> xr.DataArray:
    """A CF grid-mapping variable (scalar) for ``crs``, with ``crs_wkt`` and ``spatial_ref``."""
    attrs = crs.to_cf()
    attrs["spatial_ref"] = attrs.get("crs_wkt", crs.to_wkt())
    return xr.DataArray(np.int32(0), attrs=attrs)
