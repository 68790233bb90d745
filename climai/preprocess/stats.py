"""Normalisation and quantile statistics from the train split only, in one streaming pass.

Each dask block of HR time steps yields a small *partial* (count, mean and M2 of the transformed
values, and a weighted sorted sample for the quantiles); partials merge pairwise in a fixed binary
tree (Chan et al.'s parallel variance update), so the result does not depend on the scheduler and
no block is ever held longer than its own task.

Mean and std are exact (float64 merge of float32 block sums, shifted to avoid cancellation).
Quantiles come from the values on a regular sample lattice (every ``k``-th row and column, ``k``
coprime with ``scale`` so that every position inside an LR cell is sampled); ``k`` is 1, i.e. the
quantiles are exact, while a block holds at most ``sample`` values, and grows with larger blocks
so that each block contributes about ``sample`` values. Merged samples are compressed to
``max_sample`` weighted points, so the rank error of a quantile stays below a few ``1 /
sample_per_block``.
"""

from __future__ import annotations

import math
from typing import Any

import dask
import numpy as np
import xarray as xr

from climai.preprocess.coarsen import SLAB_BYTES
from climai.preprocess.interp import bicubic_at
from climai.variables import Transform, transform_for

SAMPLE = 1 << 16  # sampled values per block (and variable) for the quantile sketch
MAX_SAMPLE = 1 << 18  # weighted points kept when sketches merge


def _empty() -> dict[str, Any]:
    return {"count": 0, "mean": 0.0, "m2": 0.0, "hr": _no_sample(), "bicubic": _no_sample()}


def _no_sample() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, np.float64), np.empty(0, np.float64)


def lattice_stride(n_values: int, scale: int, sample: int = SAMPLE) -> int:
    """Row/column stride ``k`` of the sample lattice: ``n_values / k²`` ≤ ``sample``, gcd(k, scale)=1."""
    k = max(1, math.ceil(math.sqrt(n_values / sample)))
    while k > 1 and math.gcd(k, scale) != 1:
        k += 1
    return k


def _sketch(values: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    v = np.sort(values[np.isfinite(values)].astype(np.float64, copy=False))
    return v, np.full(v.size, weight)


def block_partial(
    hr: np.ndarray,
    lr: np.ndarray,
    train: np.ndarray,
    transform: Transform,
    scale: int,
    sample: int = SAMPLE,
) -> dict[str, Any]:
    """The partial statistics of one block of time steps ``(t, ny, nx)`` (train steps only).

    ``lr`` is the block mean of ``hr`` (for the bicubic quantiles), ``train`` a boolean per step.
    """
    train = np.asarray(train, bool)
    if not train.any():
        return _empty()
    if not train.all():
        hr, lr = hr[train], lr[train]
    with np.errstate(invalid="ignore"):  # the shift: near the block mean, from the small LR field
        shift = np.float32(np.nan_to_num(np.nanmean(transform.forward(lr)), nan=0.0))
    # slab by slab (cache-sized): transform, shift, sums; NaN cells show up in the row sums
    count, s1, s2 = 0, 0.0, 0.0
    ny, nx = hr.shape[-2:]
    step = max(1, SLAB_BYTES // (nx * 4))
    for i in range(hr.shape[0]):
        for r0 in range(0, ny, step):
            y = np.asarray(transform.forward(hr[i, r0 : r0 + step]), np.float32)
            y = y - shift
            row_sums = y.sum(axis=-1)
            if np.isfinite(row_sums).all():
                count += y.size
            else:
                bad = ~np.isfinite(y)
                count += y.size - int(bad.sum())
                y[bad] = 0.0
                row_sums = y.sum(axis=-1)
            s1 += float(row_sums.sum(dtype=np.float64))
            s2 += float(np.einsum("ij,ij->i", y, y).sum(dtype=np.float64))
    if count == 0:
        return _empty()
    mean = s1 / count
    m2 = max(s2 - s1 * mean, 0.0)
    k = lattice_stride(hr.size, scale, sample)
    r, c = np.arange(k // 2, ny, k), np.arange(k // 2, nx, k)
    weight = (ny * nx) / (r.size * c.size)
    t = np.asarray(transform.forward(hr[:, r][:, :, c]), np.float32)
    bic = np.asarray(transform.forward(bicubic_at(lr, scale, r, c)), np.float32)
    return {
        "count": count,
        "mean": float(shift) + mean,
        "m2": m2,
        "hr": _sketch(t, weight),
        "bicubic": _sketch(bic, weight),
    }


def _merge_sketch(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], max_sample: int
) -> tuple[np.ndarray, np.ndarray]:
    values = np.concatenate([a[0], b[0]])
    weights = np.concatenate([a[1], b[1]])
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    if values.size <= max_sample:
        return values, weights
    total = weights.sum()
    points = weighted_quantiles(values, weights, (np.arange(max_sample) + 0.5) / max_sample)
    return points, np.full(max_sample, total / max_sample)


def merge_partials(a: dict[str, Any], b: dict[str, Any], max_sample: int = MAX_SAMPLE) -> dict:
    """Combine two partials (associative; exact for count, mean and M2)."""
    n = a["count"] + b["count"]
    if n == 0:
        return _empty()
    delta = b["mean"] - a["mean"]
    return {
        "count": n,
        "mean": a["mean"] + delta * b["count"] / n,
        "m2": a["m2"] + b["m2"] + delta * delta * a["count"] * b["count"] / n,
        "hr": _merge_sketch(a["hr"], b["hr"], max_sample),
        "bicubic": _merge_sketch(a["bicubic"], b["bicubic"], max_sample),
    }


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantiles of sorted ``values`` with ``weights``; equals ``np.quantile`` when weights are 1.

    A value of weight ``w`` stands for ``w`` equal values: its rank is the centre of its run.
    """
    if values.size == 0:
        return np.full(np.shape(probs), np.nan)
    cum = np.cumsum(weights)
    centre = cum - (weights + 1) / 2
    return np.interp(np.asarray(probs) * (cum[-1] - 1), centre, values)


def tree_reduce(parts: list[Any], merge: Any) -> Any:
    """Merge delayed ``parts`` pairwise in a fixed binary tree (deterministic on any scheduler)."""
    if not parts:
        raise ValueError("nothing to reduce")
    while len(parts) > 1:
        pairs = [dask.delayed(merge)(a, b) for a, b in zip(parts[::2], parts[1::2], strict=False)]
        parts = pairs + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


def finalise(
    name: str, partial: dict[str, Any], transform: Transform, n_quantiles: int
) -> dict[str, Any]:
    """The ``stats.json`` entry of one variable (see :func:`normalisation_stats`)."""
    count = partial["count"]
    std = math.sqrt(partial["m2"] / count) if count else 0.0
    mean = partial["mean"] if count else float("nan")
    if not count or not math.isfinite(mean) or std == 0.0:
        raise ValueError(
            f"variable {name!r}: the train split has no valid values or no variance "
            f"(count {count}, mean {mean}, std {std}); check the data and the split"
        )
    probs = np.linspace(0.0, 1.0, n_quantiles)
    return {
        "transform": transform.name,
        "offset": transform.offset,
        "mean": mean,
        "std": std,
        "count": int(count),
        "quantiles": {
            "probabilities": probs.round(12).tolist(),
            "hr": weighted_quantiles(*partial["hr"], probs).tolist(),
            "lr_bicubic": weighted_quantiles(*partial["bicubic"], probs).tolist(),
            "space": "transformed",
        },
    }


def streaming_stats(
    hr: xr.DataArray,
    lr: xr.DataArray,
    is_train: np.ndarray,
    kind: str,
    scale: int,
    n_quantiles: int = 101,
    sample: int = SAMPLE,
) -> Any:
    """A dask ``Delayed`` of the stats of ``hr`` (and its block mean ``lr``) over the train steps.

    Both arrays must be dask-backed with the same time chunks; each block is read once, and no
    block of val or test time steps contributes (their tasks return empty partials).
    """
    transform = transform_for(kind)
    hr_blocks = hr.data.to_delayed().ravel()
    lr_blocks = lr.data.to_delayed().ravel()
    if hr.data.numblocks[1:] != (1, 1) or lr.data.numblocks[1:] != (1, 1):
        raise ValueError(f"{hr.name!r}: statistics need dask chunks spanning the whole grid")
    edges = np.cumsum((0, *hr.data.chunks[0]))
    parts = [
        dask.delayed(block_partial)(h, low, is_train[a:b], transform, scale, sample)
        for h, low, a, b in zip(hr_blocks, lr_blocks, edges[:-1], edges[1:], strict=True)
        if is_train[a:b].any()
    ]
    if not parts:
        raise ValueError(f"variable {hr.name!r}: the train split holds no time step")
    name = str(hr.name).removeprefix("hr_")
    return dask.delayed(finalise)(name, tree_reduce(parts, merge_partials), transform, n_quantiles)


def normalisation_stats(
    hr: xr.DataArray, is_train: xr.DataArray, kind: str, scale: int = 1, n_quantiles: int = 101
) -> dict[str, Any]:
    """Stats of the transformed HR field over the train time steps, NaN ignored (computed now).

    Returns ``{transform, offset, mean, std, count, quantiles: {probabilities, hr, lr_bicubic,
    space}}``; ``lr_bicubic`` are quantiles of the transformed bicubic upsampling of the block
    mean at ``scale`` (scale 1: of the field itself).
    """
    from climai.preprocess.coarsen import coarsen_block_mean

    hr = hr.transpose("time", "y", "x")
    if hr.chunks is None:
        hr = hr.chunk({"time": -1})
    hr = hr.chunk({"y": -1, "x": -1})
    lr = coarsen_block_mean(hr, scale, min_valid_fraction=1e-9) if scale > 1 else hr
    train = np.asarray(is_train.values, bool)
    (out,) = dask.compute(streaming_stats(hr, lr, train, kind, scale, n_quantiles))
    return out
