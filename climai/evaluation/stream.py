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

Both passes use ``threads`` threads (NumPy and the zarr codecs release the GIL): the blocks are
cut into ``threads`` contiguous runs (:func:`runs`), each scored by its own accumulators, merged in
time order afterwards (each accumulator's ``merge``, :mod:`climai.evaluation.accumulators`). The
results equal one thread's up to float rounding, the rank histogram's counts exactly (each run's
tie-breaking generator skips the draws before it: ``MetricInput.draws_before``, counted in pass
1). Where a metric's accumulator has no ``merge`` (a plugin's, or a metric without an accumulator,
:class:`~climai.evaluation.accumulators.WholeSplit`), pass 2 runs in one thread.

Memory: per thread, a block of ``block_bytes`` of float32 input (all cubes together), its float64
working copies, and the accumulators (fixed size: 16 MiB for a prediction's two quantile
histograms); never the split. A block is at least one time step of the whole domain, of the
truth and of every prediction with all its members (the spectra need whole fields): once one step
of them exceeds ``block_bytes``, memory grows with the domain's area × the members (e.g. a
7000 × 3500 step of truth and an 8-member ensemble: 0.9 GB of float32 per thread).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

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

T = TypeVar("T")

BLOCK_BYTES = 16 << 20
"""Float32 bytes of all cubes read per block (prediction members, truth and LR together)."""


def time_blocks(n_steps: int, bytes_per_step: int, block_bytes: int = BLOCK_BYTES, chunk: int = 1):
    """Consecutive slices covering ``n_steps`` steps, each at most ``block_bytes`` (at least one
    step), a multiple of the stores' time ``chunk`` when one or more chunks fit."""
    steps = max(1, block_bytes // max(bytes_per_step, 1))
    if steps >= chunk > 1:
        steps -= steps % chunk
    return [slice(a, min(a + steps, n_steps)) for a in range(0, n_steps, steps)]


def cube(
    da: xr.DataArray, name: str, truth: xr.DataArray | None = None, store: str = ""
) -> xr.DataArray:
    """``da`` as (time, y, x), or (member, time, y, x) with a ``member`` dimension (lazy).

    With ``truth``, its ``time``, ``y`` and ``x`` coordinates must be the truth's, value by value
    (scores pair cells by position: a store with y north to south, or of other steps, would be
    scored against the wrong cells); ``store`` names the prediction's store in the error."""
    dims = ("member", "time", "y", "x") if "member" in da.dims else ("time", "y", "x")
    if set(da.dims) != set(dims):
        raise ValueError(
            f"downscaled variable {name!r} has dimensions {da.dims}; expected {dims} "
            "(member optional)"
        )
    da = da.transpose(*dims)
    if truth is not None:
        check_aligned(da, truth, f"{store + ': ' if store else ''}downscaled variable {name!r}")
    return da


def check_aligned(pred: xr.DataArray, truth: xr.DataArray, what: str) -> None:
    """Raise unless ``pred``'s ``time``, ``y`` and ``x`` coordinates (those both have) equal the
    truth's: times exactly, y and x within a thousandth of a cell."""
    for dim in ("time", "y", "x"):
        if dim not in pred.coords or dim not in truth.coords:
            continue
        p, t = pred[dim].values, truth[dim].values
        if p.shape != t.shape:
            raise ValueError(
                f"{what} has {p.size} {dim} values, the truth {truth.name!r} {t.size} "
                f"({t[0]} to {t[-1]}): expected the truth's {dim} axis"
            )
        if np.issubdtype(t.dtype, np.number):
            tol = 1e-3 * abs(float(t[1] - t[0])) if t.size > 1 else 0.0
            off = ~np.isclose(p, t, rtol=0.0, atol=tol)
        else:
            off = p != t
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise ValueError(
                f"{what}: {dim}[{i}] is {p[i]}, the truth {truth.name!r} has {t[i]} there "
                f"(its {dim} runs {t[0]} to {t[-1]}): expected the truth's {dim} values in the "
                "same order (a store of other time steps, or with the axis reversed, would be "
                "scored against the wrong cells)"
            )


def _time_chunk(da: xr.DataArray) -> int:
    return int(da.chunks[da.dims.index("time")][0]) if da.chunks else 1


def split_blocks(cubes: list[xr.DataArray], block_bytes: int) -> list[slice]:
    """The time blocks of ``cubes`` (truth first): ``block_bytes`` of all of them together."""
    per_step = sum(4 * da.size // da.sizes["time"] for da in cubes)
    return time_blocks(cubes[0].sizes["time"], per_step, block_bytes, _time_chunk(cubes[0]))


def runs(n: int, threads: int) -> list[range]:
    """``range(n)`` cut into ``min(threads, n)`` contiguous runs whose lengths differ by at most
    one (at least one run, empty when ``n`` is 0)."""
    k = max(1, min(threads, n))
    return [range(i * n // k, (i + 1) * n // k) for i in range(k)]


def _each_run(work: Callable[[range], T], groups: Sequence[range]) -> list[T]:
    """``work`` of every run, in their order: one thread per run (none for one run)."""
    if len(groups) == 1:
        return [work(groups[0])]
    with ThreadPoolExecutor(len(groups)) as pool:
        return list(pool.map(work, groups))


def _read(da: xr.DataArray, sl: slice) -> np.ndarray:
    return np.asarray(da.isel(time=sl).values)


def _valid(c: np.ndarray) -> np.ndarray:
    ok = np.isfinite(c)
    return ok.all(axis=0) if c.ndim == 4 else ok


@dataclass
class Extent:
    """What the first pass finds: per cell the steps valid in every cube, the value range, and
    per prediction and block the cells valid in it (every member) and the truth."""

    valid_steps: np.ndarray
    steps: int
    lo: float
    hi: float
    valid_cells: np.ndarray | None = None  # (predictions, blocks)
    infinite: np.ndarray | None = None  # per cube (truth first): its ±inf values

    def draws_before(self, pred: int) -> np.ndarray:
        """Per block, the cells valid in prediction ``pred`` and the truth in the blocks before
        it (the rank histogram's tie-breaking draws before the block)."""
        assert self.valid_cells is not None
        cells = self.valid_cells[pred]
        return np.concatenate([[0], np.cumsum(cells)[:-1]]).astype(np.int64)

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


def scan_extent(cubes: list[xr.DataArray], blocks: list[slice], threads: int = 1) -> Extent:
    """Pass 1 over ``cubes`` (truth first, time on axis -3) in ``threads`` threads: common
    validity per cell, range of values, cells valid per prediction and block."""

    def scan(run: range) -> Extent:
        count = np.zeros(cubes[0].shape[-2:], np.int64)
        cells = np.zeros((len(cubes) - 1, len(run)), np.int64)
        infinite = np.zeros(len(cubes), np.int64)
        lo, hi = np.inf, -np.inf
        for j, b in enumerate(run):
            valid = truth_ok = None
            for i, da in enumerate(cubes):
                c = _read(da, blocks[b])
                ok = _valid(c)
                if truth_ok is None:
                    truth_ok = ok
                else:
                    cells[i - 1, j] = int((truth_ok & ok).sum())
                valid = ok if valid is None else valid & ok
                if (n_inf := int(np.isinf(c).sum())) > 0:
                    infinite[i] += n_inf
                    c = np.where(np.isinf(c), np.nan, c)  # the range of the finite values
                if np.isfinite(c).any():
                    lo, hi = min(lo, float(np.nanmin(c))), max(hi, float(np.nanmax(c)))
            assert valid is not None
            count += valid.sum(axis=0)
        return Extent(count, len(run), lo, hi, cells, infinite)

    parts = _each_run(scan, runs(len(blocks), threads))
    infinite = np.sum([p.infinite for p in parts], axis=0)
    lo, hi = min(p.lo for p in parts), max(p.hi for p in parts)
    if not np.isfinite(lo) and not infinite.any():
        raise ValueError("prediction and truth share no valid cell")
    count = np.sum([p.valid_steps for p in parts], axis=0)
    cells = np.concatenate([p.valid_cells for p in parts if p.valid_cells is not None], axis=1)
    return Extent(count, cubes[0].sizes["time"], lo, hi, cells, infinite)


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
    threads: int = 1,
) -> dict[str, Scores]:
    """The metrics ``names[label]`` of every prediction ``preds[label]`` against ``truth``, on
    one common spectral region and value range, reading every store block by block.

    ``context`` holds the other :class:`MetricInput` fields (kind, scale, bands, wet_threshold,
    seed); ``block_bytes`` defaults to :data:`BLOCK_BYTES`. Each label's streams always hold
    the spectra and the quantile histograms. ``threads`` threads score contiguous runs of blocks
    side by side (the same values as one thread, up to float rounding).
    """
    cubes = [truth, *preds.values()]
    lr_list = [lr] if lr is not None else []
    blocks = split_blocks(cubes + lr_list, block_bytes or BLOCK_BYTES)
    extent = scan_extent(cubes, blocks, threads)
    _check_shared(extent, truth, list(preds))
    rows, cols = extent.rectangle()
    before = {label: extent.draws_before(i) for i, label in enumerate(preds)}
    # a bar on stderr when it is a terminal (off in Snakemake's job logs)
    bar = tqdm(
        total=len(blocks), desc=f"scoring {truth.name or ''}", unit="block", disable=None,
        leave=False,
    )  # fmt: skip

    def score(run: range) -> tuple[dict[str, Streams], dict[str, dict[str, Any]]]:
        streams = {label: Streams() for label in preds}
        accs: dict[str, dict[str, Any]] = {}
        for b in run:
            sl = blocks[b]
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
                    draws_before=int(before[label][b]),
                    **context,
                )
                if label not in accs:
                    accs[label] = _made(names.get(label, []), block, streams[label])
                _update(block, streams[label], accs[label].values())
            bar.update(1)
        return streams, accs

    mergeable = all(_mergeable(names.get(label, []), _probe(truth, da, lr, context))
                    for label, da in preds.items())  # fmt: skip
    with bar:
        parts = _each_run(score, runs(len(blocks), threads if mergeable else 1))
    streams, accs = parts[0]
    for other_streams, other_accs in parts[1:]:
        for label in preds:
            streams[label].merge(other_streams[label])
            for name, acc in accs[label].items():
                if not streams[label].holds(acc):
                    acc.merge(other_accs[label][name])
    return {
        label: Scores({n: a.result() for n, a in accs[label].items()}, streams[label])
        for label in preds
    }


def _check_shared(extent: Extent, truth: xr.DataArray, labels: list[str]) -> None:
    """Raise, naming the prediction, when the truth or one holds ±inf (they blamed the quantile
    histogram's range, or said no cell was shared), or when one has no valid cell where the
    truth has one (an all-NaN prediction: the spectral rectangle's error blamed the spectrum)."""
    assert extent.valid_cells is not None and extent.infinite is not None
    for what, n_inf in zip(["the truth", *(f"prediction {k!r}" for k in labels)],
                           extent.infinite, strict=True):  # fmt: skip
        if n_inf:
            raise ValueError(
                f"{what} of {truth.name or 'the variable'!r} holds {int(n_inf)} infinite "
                "values: expected finite values, NaN where missing (scores would leave them out)"
            )
    for label, cells in zip(labels, extent.valid_cells.sum(axis=1), strict=True):
        if not cells:
            raise ValueError(
                f"prediction {label!r} of {truth.name or 'the variable'!r} has no valid (finite) "
                f"value on any cell where the truth has one, in {extent.steps} time steps: "
                "expected finite values (a model that diverged writes NaN everywhere)"
            )


def _made(names: list[str], block: MetricInput, streams: Streams) -> dict[str, Any]:
    """The accumulators of ``names`` for a run of blocks starting with ``block``, and the shared
    spectra and quantile histograms the figures read."""
    spectra(streams)
    histograms(streams)
    return _accumulators(names, block, streams)


def _probe(
    truth: xr.DataArray, pred: xr.DataArray, lr: xr.DataArray | None, context: dict[str, Any]
) -> MetricInput:
    """A block of no time step: which metrics apply, and their accumulators' kinds."""
    none = slice(0, 0)
    return MetricInput(_read(pred, none), _read(truth, none),
                       lr=None if lr is None else _read(lr, none), **context)  # fmt: skip


def _mergeable(names: list[str], probe: MetricInput) -> bool:
    """Whether every accumulator of ``names`` (and the shared streams) has a ``merge``."""
    streams = Streams()
    accs = _made(names, probe, streams)
    return streams.mergeable() and all(
        streams.holds(a) or hasattr(a, "merge") for a in accs.values()
    )


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
    inp: MetricInput, names: list[str] | None = None, block_steps: int = 1, threads: int = 1
) -> dict[str, Any]:
    """The metrics of an in-memory :class:`MetricInput` computed block by block (``block_steps``
    per block, in ``threads`` threads): the streamed twin of
    :func:`~climai.evaluation.metrics.compute_metrics`."""
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
    out = stream_scores(
        truth, {"pred": pred}, lr, {"pred": names}, context, block_steps * per_step, threads
    )
    return out["pred"].metrics
