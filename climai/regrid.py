"""Reprojection of static fields onto the HR grid (rioxarray/rasterio, GDAL warp).

A source finer than the HR grid is area-averaged (``Resampling.average``: every HR cell is the
mean of the source cells it covers); a coarser one is interpolated bilinearly. A source that does
not cover the HR grid is an error naming the uncovered side or cells.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from affine import Affine
from pyproj import Transformer

from climai.grids import Grid, GridError


class CoverageError(ValueError):
    """A static field that does not cover the HR domain."""


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"


def check_covers(src: Grid, dst: Grid, where: str) -> None:
    """:class:`CoverageError` naming every side of ``dst`` that reaches outside ``src``.

    ``dst``'s outer edges are transformed (densified) into ``src``'s CRS and compared with the
    outer edges of ``src``'s cells.
    """
    tr = Transformer.from_crs(dst.crs, src.crs, always_xy=True)
    xmin, ymin, xmax, ymax = tr.transform_bounds(*dst.bounds, densify_pts=51)
    sxmin, symin, sxmax, symax = src.bounds
    tol = 1e-9 * max(abs(sxmax - sxmin), abs(symax - symin))
    sides = []
    if xmin < sxmin - tol:
        sides.append(f"west (HR grid reaches {_fmt(xmin)}, source starts at {_fmt(sxmin)})")
    if xmax > sxmax + tol:
        sides.append(f"east (HR grid reaches {_fmt(xmax)}, source ends at {_fmt(sxmax)})")
    if ymin < symin - tol:
        sides.append(f"south (HR grid reaches {_fmt(ymin)}, source starts at {_fmt(symin)})")
    if ymax > symax + tol:
        sides.append(f"north (HR grid reaches {_fmt(ymax)}, source ends at {_fmt(symax)})")
    if sides:
        raise CoverageError(
            f"{where} does not cover the HR domain: uncovered to the {'; '.join(sides)} "
            f"[in the source's CRS {src.crs.name!r}]"
        )


def _source_cell_area_in(src: Grid, dst: Grid) -> float:
    """Mean area of one source cell, measured in ``dst``'s CRS units squared."""
    tr = Transformer.from_crs(src.crs, dst.crs, always_xy=True)
    xmin, ymin, xmax, ymax = tr.transform_bounds(*src.bounds, densify_pts=51)
    return (xmax - xmin) * (ymax - ymin) / (src.shape[0] * src.shape[1])


def reproject_to_grid(da: xr.DataArray, src: Grid, dst: Grid, where: str) -> xr.DataArray:
    """``da`` (dims ``y, x`` on ``src``) on ``dst``: area average if finer, bilinear if coarser.

    NaN in the source is no data and is left out of averages; a result with NaN cells (source
    no-data inside the domain) is a :class:`CoverageError` naming the uncovered cells.
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    from rasterio.enums import Resampling

    if da.dims != ("y", "x"):
        raise GridError(f"{where}: expected dims ('y', 'x'), got {da.dims}")
    check_covers(src, dst, where)
    finer = _source_cell_area_in(src, dst) < abs(dst.dx * dst.dy)
    resampling = Resampling.average if finer else Resampling.bilinear
    values = da.astype(np.float32).load()
    values = values.rio.set_spatial_dims(x_dim="x", y_dim="y").rio.write_crs(src.crs)
    values = values.rio.write_nodata(np.nan, encoded=False)
    out = values.rio.reproject(
        dst.crs,
        shape=dst.shape,
        transform=Affine(*dst.transform()),
        resampling=resampling,
        nodata=np.nan,
    )
    data = np.asarray(out.values, dtype=np.float32)
    missing = np.isnan(data)
    if missing.any():
        rows, cols = np.nonzero(missing)
        raise CoverageError(
            f"{where} has no data for {int(missing.sum())} of {missing.size} HR cells "
            f"(x {_fmt(dst.x[cols].min())}..{_fmt(dst.x[cols].max())}, "
            f"y {_fmt(dst.y[rows].min())}..{_fmt(dst.y[rows].max())})"
        )
    attrs = {
        k: v
        for k, v in da.attrs.items()
        if k not in ("grid_mapping", "_FillValue", "missing_value")
    }
    attrs["regridding"] = f"rasterio reproject, {resampling.name} from {src.crs.name}"
    return xr.DataArray(
        data, dims=("y", "x"), coords={"y": dst.y, "x": dst.x}, attrs=attrs, name=da.name
    )


def reproject_series(da: xr.DataArray, src: Grid, dst: Grid, where: str) -> xr.DataArray:
    """A ``(time, y, x)`` field on ``src`` reprojected onto ``dst``, lazily, one time chunk per
    dask task (memory bounded by the chunk): area average if finer, bilinear if coarser.

    Source NaN are no data: an LR cell is NaN only where it covers no valid source cell.
    """
    import dask.array as dsa
    from rasterio.crs import CRS as RioCRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    check_covers(src, dst, where)
    finer = _source_cell_area_in(src, dst) < abs(dst.dx * dst.dy)
    resampling = Resampling.average if finer else Resampling.bilinear
    src_crs, dst_crs = RioCRS.from_wkt(src.crs_wkt), RioCRS.from_wkt(dst.crs_wkt)
    src_tr, dst_tr = Affine(*src.transform()), Affine(*dst.transform())

    def block(arr: np.ndarray) -> np.ndarray:
        out = np.full((arr.shape[0], *dst.shape), np.nan, dtype=np.float32)
        for i in range(arr.shape[0]):
            reproject(
                np.ascontiguousarray(arr[i], dtype=np.float32),
                out[i],
                src_transform=src_tr,
                src_crs=src_crs,
                dst_transform=dst_tr,
                dst_crs=dst_crs,
                resampling=resampling,
                src_nodata=np.nan,
                dst_nodata=np.nan,
            )
        return out

    data = da.transpose("time", "y", "x").data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(data, chunks=(1, -1, -1))
    data = data.rechunk({1: -1, 2: -1})
    result = data.map_blocks(
        block, chunks=(data.chunks[0], (dst.shape[0],), (dst.shape[1],)), dtype=np.float32
    )
    attrs = {k: v for k, v in da.attrs.items() if k not in ("_FillValue", "missing_value")}
    attrs["regridding"] = f"rasterio reproject, {resampling.name} from {src.crs.name}"
    return xr.DataArray(
        result,
        dims=("time", "y", "x"),
        coords={"time": da["time"], "y": dst.y, "x": dst.x},
        attrs=attrs,
        name=da.name,
    )
