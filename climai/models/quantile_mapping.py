"""Empirical quantile mapping: the statistical downscaling baseline (bicubic + QM).

The mapping is a table of matching quantiles: ``source`` (bicubic-of-LR values on the train split)
and ``target`` (HR truth on the train split) at the same probability levels. A value is mapped by
linear interpolation in the table; beyond its ends the last step is carried on additively
(``target_end + (x − source_end)``), so extremes outside the train range are not flattened.
"""

from __future__ import annotations

import numpy as np


def fit_quantile_mapping(
    source: np.ndarray,
    target: np.ndarray,
    n_quantiles: int = 1001,
    max_samples: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(source_quantiles, target_quantiles)`` at ``n_quantiles`` equally spaced levels in [0, 1].

    Source and target are paired cell by cell (same shape); a cell enters when both are finite.
    At most ``max_samples`` pairs, drawn with a seeded generator, are used.
    """
    source = np.asarray(source)
    target = np.asarray(target)
    if source.shape != target.shape:
        raise ValueError(
            f"quantile mapping: source shape {source.shape} differs from target {target.shape}"
        )
    ok = np.isfinite(source) & np.isfinite(target)
    s, t = source[ok].astype(np.float64), target[ok].astype(np.float64)
    if s.size < 2:
        raise ValueError(f"quantile mapping needs at least 2 valid train cells, got {s.size}")
    if max_samples is not None and s.size > max_samples:
        pick = np.random.default_rng(seed).choice(s.size, size=max_samples, replace=False)
        s, t = s[pick], t[pick]
    levels = np.linspace(0.0, 1.0, n_quantiles)
    return np.quantile(s, levels), np.quantile(t, levels)


def apply_quantile_mapping(
    values: np.ndarray, source_q: np.ndarray, target_q: np.ndarray
) -> np.ndarray:
    """Map ``values`` through the quantile table; NaN stays NaN.

    Tied source quantiles (e.g. many dry cells) map to the mean of their target quantiles, so the
    mapping stays a function and preserves the mean over the tie.
    """
    source_q = np.asarray(source_q, np.float64)
    target_q = np.asarray(target_q, np.float64)
    if source_q.shape != target_q.shape or source_q.ndim != 1 or source_q.size < 2:
        raise ValueError("quantile tables must be 1-D, of equal length, with at least 2 levels")
    xs, inverse = np.unique(source_q, return_inverse=True)
    ys = np.bincount(inverse, weights=target_q) / np.bincount(inverse)
    v = np.asarray(values, np.float64)
    out = np.interp(v, xs, ys)
    out = np.where(v < xs[0], ys[0] + (v - xs[0]), out)
    out = np.where(v > xs[-1], ys[-1] + (v - xs[-1]), out)
    return np.where(np.isfinite(v), out, np.nan)
