"""The ML-ready dataset as one lazy dask graph: HR copy, LR block means, split labels, stats.

Every HR block (``time_chunk`` steps × the whole grid) is read once; the LR block mean and the
statistics' partials are computed from it in the same pass (see :mod:`climai.preprocess.stats`).
Dask chunks equal the zarr shards, so each task writes whole shards and no two tasks touch one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from zarr.codecs import BloscCodec

from climai.data.prepared import hr_key, lr_key, split_code, static_key, static_names
from climai.grids import GridError
from climai.io.calendars import SOURCE_UNITS, calendar_of
from climai.preprocess.coarsen import block_mean_numpy
from climai.preprocess.splits import SPLITS, make_split_labels
from climai.preprocess.stats import streaming_stats

MAX_CHUNK_BYTES = 128 * 2**20  # a dask chunk (= a shard) of one HR variable stays below this


@dataclass(frozen=True)
class Layout:
    """On-disk layout of the dataset: shards = dask chunks, inner chunks = training tiles."""

    time_chunk: int = 8
    tile: int = 256
    codec: str = "lz4"
    clevel: int = 5

    @property
    def compressor(self) -> BloscCodec:
        return BloscCodec(cname=self.codec, clevel=self.clevel, shuffle="bitshuffle")

    def time_steps(self, ny: int, nx: int, itemsize: int) -> int:
        """Time steps per shard: ``time_chunk``, fewer if a shard would exceed 128 MiB."""
        return max(1, min(self.time_chunk, MAX_CHUNK_BYTES // (ny * nx * itemsize)))

    def hr_encoding(self, nt: int, ny: int, nx: int) -> dict[str, Any]:
        iy, ix = min(self.tile, ny), min(self.tile, nx)
        return {
            "chunks": (1, iy, ix),
            "shards": (nt, math.ceil(ny / iy) * iy, math.ceil(nx / ix) * ix),
            "compressors": [self.compressor],
        }


def with_hr_layout(
    target: xr.Dataset, names: list[str], layout: Layout | None = None
) -> xr.Dataset:
    """``target`` chunked and encoded in the dataset's HR layout, for ingest to write.

    A target written this way is reused by ``preprocess`` without re-encoding: its compressed
    shards are linked into ``prep/dataset.zarr`` as ``hr_<var>``.
    """
    layout = layout or Layout()
    out = target.copy()
    for name in names:
        var = out[name].transpose("time", "y", "x")
        _, ny, nx = var.shape
        nt = layout.time_steps(ny, nx, var.dtype.itemsize)
        out[name] = var.chunk({"time": nt, "y": -1, "x": -1})
        out[name].encoding = layout.hr_encoding(nt, ny, nx)
    return out


def build_dataset(
    target: xr.Dataset,
    static: xr.Dataset,
    variables: dict[str, str],
    scale: int,
    split: dict[str, Any],
    min_valid_fraction: float = 0.5,
    layout: Layout | None = None,
    inputs: xr.Dataset | None = None,
) -> xr.Dataset:
    """The ML-ready dataset: ``hr_<var>``, ``lr_<var>``, ``static_<name>`` and ``split`` (lazy).

    LR fields are the NaN-aware block means of HR, or, with ``inputs`` (``ingest/input.zarr``,
    an independent coarse source already regridded onto the LR grid), those fields.

    ``variables`` maps names to kinds; ``split`` is the ``split`` config section (fractions or
    ISO ranges, optional ``gap``). LR fields live on ``(time, y_lr, x_lr)``. Each variable's
    ``encoding`` holds its zarr chunks, shards and compressor.
    """
    layout = layout or Layout()
    ny, nx = target.sizes["y"], target.sizes["x"]
    if ny % scale or nx % scale:
        raise GridError(f"target: HR grid {ny}×{nx} is not a multiple of scale={scale}")
    out = xr.Dataset(coords={"time": target["time"], "y": target["y"], "x": target["x"]})
    y_lr = target["y"].values.reshape(-1, scale).mean(axis=1)
    x_lr = target["x"].values.reshape(-1, scale).mean(axis=1)
    out = out.assign_coords(
        y_lr=("y_lr", y_lr, target["y"].attrs), x_lr=("x_lr", x_lr, target["x"].attrs)
    )
    for name in variables:
        if name not in target:
            raise KeyError(
                f"variable {name!r} is not in the target store; it has {list(target.data_vars)}"
            )
        hr = target[name].transpose("time", "y", "x")
        nt = layout.time_steps(ny, nx, hr.dtype.itemsize)
        data = hr.data if isinstance(hr.data, da.Array) else da.from_array(hr.values)
        data = data.rechunk((nt, ny, nx))
        if inputs is not None:
            src = inputs[name].sel(time=target["time"]).transpose("time", "y", "x")
            lr = src.data if isinstance(src.data, da.Array) else da.from_array(src.values)
            lr = lr.astype(data.dtype).rechunk((data.chunks[0], ny // scale, nx // scale))
        else:
            lr = data.map_blocks(
                block_mean_numpy,
                scale,
                min_valid_fraction,
                chunks=(data.chunks[0], (ny // scale,), (nx // scale,)),
                dtype=data.dtype,
                name=f"block-mean-{name}-{dask.base.tokenize(data, scale, min_valid_fraction)}",
            )
        out[hr_key(name)] = xr.DataArray(data, dims=("time", "y", "x"), attrs=hr.attrs)
        how = (  # what the LR is: the HR's block mean, or the input's field (not masked by HR)
            {
                **hr.attrs,
                "cell_methods": f"area: mean (block {scale}x{scale})",
                "min_valid_fraction": min_valid_fraction,
            }
            if inputs is None
            else {**src.attrs, "source": str(inputs.attrs.get("source", "data.input"))}
        )
        out[lr_key(name)] = xr.DataArray(
            lr, dims=("time", "y_lr", "x_lr"), attrs={**hr.attrs, **how}
        )
        out[hr_key(name)].encoding = layout.hr_encoding(nt, ny, nx)
        out[lr_key(name)].encoding = {
            "chunks": (nt, ny // scale, nx // scale),
            "compressors": [layout.compressor],
        }
    for name in static.data_vars:
        if name != "crs":
            out[static_key(str(name))] = static[name].compute()
            out[static_key(str(name))].encoding = {"compressors": [layout.compressor]}
    labels = make_split_labels(target["time"].values, split)
    out["split"] = xr.DataArray(
        labels,
        dims="time",
        attrs={
            "flag_values": [-1, *range(len(SPLITS))],
            "flag_meanings": "unused " + " ".join(SPLITS),
        },
    )
    if "crs" in target:
        out["crs"] = target["crs"].compute()
    return out.assign_attrs(scale=scale, min_valid_fraction=min_valid_fraction)


def stats_graph(ds: xr.Dataset, variables: dict[str, str], scale: int, n_quantiles: int) -> Any:
    """A dask ``Delayed`` of the per-variable stats (train split only) over ``ds``'s HR blocks."""
    is_train = ds["split"].values == split_code("train")
    return {
        name: streaming_stats(
            ds[hr_key(name)], ds[lr_key(name)], is_train, kind, scale, n_quantiles
        )
        for name, kind in variables.items()
    }


def static_and_split_stats(ds: xr.Dataset) -> dict[str, Any]:
    """Moments of the static fields, the first/last time of each split and the calendar and
    time units of the source they are dates of (small, eager)."""
    out: dict[str, Any] = {"static": {}}
    for name in static_names(ds):
        values = np.asarray(ds[static_key(name)].values, np.float64)
        std = float(np.nanstd(values))
        out["static"][name] = {"mean": float(np.nanmean(values)), "std": std or 1.0}
    times = ds["time"].values
    labels = ds["split"].values
    out["splits"] = {
        s: [str(times[labels == i][0]), str(times[labels == i][-1])] for i, s in enumerate(SPLITS)
    }
    # the splits' dates are dates of this calendar (the model card's record of its periods)
    out["time_axis"] = {
        "calendar": calendar_of(ds),
        "units": str(ds["time"].attrs.get(SOURCE_UNITS, "")),
    }
    return out
