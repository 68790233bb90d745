"""Scores of a split read in blocks of time steps, in memory bounded by the block size.

Two passes over the stores, each one block of time steps at a time (:func:`time_blocks`):

1. :func:`scan_extent`: per HR cell, the number of steps where the truth and every prediction
   (every member) are valid, and the range of their values. The cells valid in at least half of
   the steps give the spectral rectangle (:func:`~climai.evaluation.metrics.spectral_region`'s
   rule); the range bounds the quantile histograms.
2. :func:`stream_scores`: each block becomes a :class:`~climai.evaluation.metrics.MetricInput`
   (its spectral steps: those complete in the rectangle in every cube) given to every metric's
   accumulator (:mod:`climai.evaluation.registry`) and to the shared streams the figures read
   (summed spectra, quantile histograms).

Memory: a block of ``block_bytes`` of float32 input (all cubes together), its float64 working
copies, and the accumulators (fixed size: 6 MiB per quantile histogram); never the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from tqdm import tqdm

from climai.evaluation.accumulators import WholeSplit, histograms, spectra
from climai.evaluation.metrics import (
    MIN_SPECTRAL_SIDE,
    MetricInput,
    SpectralRegion,
    largest_valid_rectangle,
)
from climai.evaluation.registry import Streams, get_metric

BLOCK_BYTES = 16 << 20
"""Float32 bytes of all cubes read per block (prediction members, truth and LR together)."""


def time_blocks(n_steps: int, bytes_per_step: int, block_bytes: int = BLOCK_BYTES, chunk: int = 1):
    """Consecutive slices covering ``n_steps`` steps, each at most ``block_bytes`` (at least one
    step), a multiple of the stores' time ``chunk`` when one or more chunks fit."""
    steps = max(1, block_bytes // max(bytes_per_step, 1))
    if steps >= chunk > 1:
        steps -= steps % chunk
    return [slice(a, min(a + steps, n_steps)) for a in range(0, n_steps, steps)]


def cube(da: xr.DataArray, name: str) -> xr.DataArray:
    """``da`` as (time, y, x), or (member, time, y, x) with a ``member`` dimension (lazy)."""
    dims = ("member", "time", "y", "x") if "member" in da.dims else ("time", "y", "x")
    if set(da.dims) != set(dims):
        raise ValueError(
            f"downscaled variable {name!r} has dimensions {da.dims}; expected {dims} "
            "(member optional)"
        )
    return da.transpose(*dims)


def _time_chunk(da: xr.DataArray) -> int:
    return int(da.chunks[da.dims.index("time")][0]) if da.chunks else 1


def split_blocks(cubes: list[xr.DataArray], block_bytes: int) -> list[slice]:
    """The time blocks of ``cubes`` (truth first): ``block_bytes`` of all of them together."""
    per_step = sum(4 * da.size // da.sizes["time"] for da in cubes)
    return time_blocks(cubes[0].sizes["time"], per_step, block_bytes, _time_chunk(cubes[0]))


def _read(da: xr.DataArray, sl: slice) -> np.ndarray:
    return np.asarray(da.isel(time=sl).values)


def _valid(c: np.ndarray) -> np.ndarray:
    ok = np.isfinite(c)
    return ok.all(axis=0) if c.ndim == 4 else ok


@dataclass
class Extent:
    """What the first pass finds: per cell the steps valid in every cube, the value range."""

    valid_steps: np.ndarray
    steps: int
    lo: float
    hi: float

    def rectangle(self) -> tuple[slice, slice]:
        """The spectral rectangle: the largest one of cells valid in at least half the steps."""
        static = self.valid_steps >= 0.5 * self.steps
        if not static.any():
            raise ValueError("no cell is valid in at least half of the time steps: no spectrum")
        rows, cols = largest_valid_rectangle(static)
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        if min(shape) < MIN_SPECTRAL_SIDE:
            raise ValueError(
                f"the largest valid rectangle is {shape[0]}×{shape[1]} cells; spectra need at "
                f"least {MIN_SPECTRAL_SIDE}×{MIN_SPECTRAL_SIDE} cells"
            )
        return rows, cols


def scan_extent(cubes: list[xr.DataArray], blocks: list[slice]) -> Extent:
    """Pass 1 over ``cubes`` (time on axis -3): common validity per cell, range of values."""
    count = np.zeros(cubes[0].shape[-2:], np.int64)
    lo, hi = np.inf, -np.inf
    for sl in blocks:
        valid = None
        for da in cubes:
            c = _read(da, sl)
            ok = _valid(c)
            valid = ok if valid is None else valid & ok
            if np.isfinite(c).any():
                lo, hi = min(lo, float(np.nanmin(c))), max(hi, float(np.nanmax(c)))
        assert valid is not None
        count += valid.sum(axis=0)
    if not np.isfinite(lo):
        raise ValueError("prediction and truth share no valid cell")
    return Extent(count, cubes[0].sizes["time"], lo, hi)


def block_region(arrays: list[np.ndarray], rows: slice, cols: slice) -> SpectralRegion:
    """The rectangle and the steps of this block complete inside it in every array."""
    complete = None
    for a in arrays:
        ok = _valid(a)[:, rows, cols].all(axis=(1, 2))
        complete = ok if complete is None else complete & ok
    assert complete is not None
    return SpectralRegion(rows, cols, np.flatnonzero(complete))


def _accumulators(names: list[str], first: MetricInput, streams: Streams) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        metric = get_metric(name)
        if metric.applies(first):
            make = metric.accumulator
            out[name] = make(streams) if make is not None else WholeSplit(name, metric.func)
    return out


@dataclass
class Scores:
    """What :func:`stream_scores` gives per prediction: metric values and the shared streams."""

    metrics: dict[str, Any]
    streams: Streams


def stream_scores(
    truth: xr.DataArray,
    preds: dict[str, xr.DataArray],
    lr: xr.DataArray | None,
    names: dict[str, list[str]],
    context: dict[str, Any],
    block_bytes: int | None = None,
) -> dict[str, Scores]:
    """The metrics ``names[label]`` of every prediction ``preds[label]`` against ``truth``, on
    one common spectral region and value range, reading every store block by block.

    ``context`` holds the other :class:`MetricInput` fields (kind, scale, bands, wet_threshold,
    seed); ``block_bytes`` defaults to :data:`BLOCK_BYTES`. Each label's streams always hold
    the spectra and the quantile histograms.
    """
    cubes = [truth, *preds.values()]
    lr_list = [lr] if lr is not None else []
    blocks = split_blocks(cubes + lr_list, block_bytes or BLOCK_BYTES)
    extent = scan_extent(cubes, blocks)
    rows, cols = extent.rectangle()
    streams = {label: Streams() for label in preds}
    accs: dict[str, dict[str, Any]] = {}
    # a bar on stderr when it is a terminal (off in Snakemake's job logs)
    bar = tqdm(blocks, desc=f"scoring {truth.name or ''}", unit="block", disable=None, leave=False)
    for sl in bar:
        t = _read(truth, sl)
        arrays = {label: _read(da, sl) for label, da in preds.items()}
        region = block_region([t, *arrays.values()], rows, cols)
        lr_block = _read(lr, sl) if lr is not None else None
        for label, p in arrays.items():
            block = MetricInput(
                p,
                t,
                lr=lr_block,
                start=sl.start,
                region=region,
                value_range=(extent.lo, extent.hi),
                **context,
            )
            if label not in accs:
                spectra(streams[label])
                histograms(streams[label])
                accs[label] = _accumulators(names.get(label, []), block, streams[label])
            _update(block, streams[label], accs[label].values())
    return {
        label: Scores({n: a.result() for n, a in accs[label].items()}, streams[label])
        for label in preds
    }


def _update(block: MetricInput, streams: Streams, accs: Any) -> None:
    streams.update(block)
    for acc in accs:
        if not streams.holds(acc):
            acc.update(block)


def as_time_array(values: np.ndarray, name: str = "values") -> xr.DataArray:
    """A (T, H, W) or (M, T, H, W) NumPy array as a DataArray with the dims streaming reads."""
    dims = ("member", "time", "y", "x")[-values.ndim :]
    return xr.DataArray(values, dims=dims, name=name)


def streamed_metrics(
    inp: MetricInput, names: list[str] | None = None, block_steps: int = 1
) -> dict[str, Any]:
    """The metrics of an in-memory :class:`MetricInput` computed block by block (``block_steps``
    per block): the streamed twin of :func:`~climai.evaluation.metrics.compute_metrics`."""
    from climai.evaluation.registry import METRICS

    pred, truth = as_time_array(inp.pred, "pred"), as_time_array(inp.truth, "truth")
    lr = as_time_array(inp.lr, "lr") if inp.lr is not None else None
    cubes = [pred, truth] + ([lr] if lr is not None else [])
    per_step = sum(4 * a.size // a.sizes["time"] for a in cubes)
    context = {
        "kind": inp.kind,
        "scale": inp.scale,
        "bands": inp.bands,
        "wet_threshold": inp.wet_threshold,
        "seed": inp.seed,
    }
    names = names if names is not None else list(METRICS.builtins)
    out = stream_scores(truth, {"pred": pred}, lr, {"pred": names}, context, block_steps * per_step)
    return out["pred"].metrics
