"""Scores of a prediction against the truth, NaN-masked, in the variable's canonical units."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _valid(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(pred) & np.isfinite(truth)
    if not ok.any():
        raise ValueError("prediction and truth share no valid cell")
    return pred[ok].astype(np.float64), truth[ok].astype(np.float64)


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root-mean-square error over cells valid in both fields."""
    p, t = _valid(pred, truth)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error over cells valid in both fields."""
    p, t = _valid(pred, truth)
    return float(np.mean(np.abs(p - t)))


def bias(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean of prediction minus truth."""
    p, t = _valid(pred, truth)
    return float(np.mean(p - t))


def corr(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation over all valid cells (space and time pooled)."""
    p, t = _valid(pred, truth)
    if p.std() == 0 or t.std() == 0:
        return float("nan")
    return float(np.corrcoef(p, t)[0, 1])


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "rmse": rmse,
    "mae": mae,
    "bias": bias,
    "corr": corr,
}


def ensemble_crps(members: np.ndarray, truth: np.ndarray, fair: bool = False) -> float:
    """Mean CRPS of an ensemble ``(M, ...)`` against ``truth`` ``(...)`` (cells valid in both).

    The ensemble (empirical-distribution) CRPS ``mean|x_i - y| - sum|x_i - x_j| / (2 M²)``, or with
    ``fair`` the unbiased estimate of the CRPS of the distribution the members are drawn from
    (``2 M (M - 1)`` in the denominator). Sorted members: O(M log M) per cell.
    """
    members = np.asarray(members, dtype=np.float64)
    ok = np.isfinite(truth) & np.isfinite(members).all(axis=0)
    if not ok.any():
        raise ValueError("ensemble and truth share no valid cell")
    x = np.sort(members[:, ok], axis=0)
    y = np.asarray(truth, dtype=np.float64)[ok]
    m = x.shape[0]
    skill = np.abs(x - y).mean(axis=0)
    weights = (2 * np.arange(1, m + 1) - m - 1)[:, None]  # sum_ij |x_i - x_j| = 2 sum_i w_i x_(i)
    spread = (weights * x).sum(axis=0) / (m * (m - 1) if fair else m * m)
    return float(np.mean(skill - spread))


def spread_skill(members: np.ndarray, truth: np.ndarray) -> float:
    """Spread/skill ratio: sqrt((M+1)/M · mean ensemble variance) / RMSE of the ensemble mean.

    1 for a calibrated ensemble; below 1 under-dispersive, above 1 over-dispersive.
    """
    members = np.asarray(members, dtype=np.float64)
    ok = np.isfinite(truth) & np.isfinite(members).all(axis=0)
    if not ok.any():
        raise ValueError("ensemble and truth share no valid cell")
    x = members[:, ok]
    m = x.shape[0]
    if m < 2:
        raise ValueError(f"spread/skill needs at least 2 members, got {m}")
    spread = np.sqrt((m + 1) / m * x.var(axis=0, ddof=1).mean())
    skill = np.sqrt(np.mean((x.mean(axis=0) - np.asarray(truth, np.float64)[ok]) ** 2))
    return float(spread / skill) if skill > 0 else float("nan")


def block_mean_error(pred: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """Largest |block mean of ``pred`` − LR| over blocks valid in both, relative to mean |LR|.

    ``pred`` is (T, H, W) on the HR grid, ``lr`` (T, H/scale, W/scale): how far a prediction is
    from conserving the LR input (0 for an exactly conservative method).
    """
    t, h, w = pred.shape
    blocks = pred.astype(np.float64).reshape(t, h // scale, scale, w // scale, scale).mean((2, 4))
    ok = np.isfinite(blocks) & np.isfinite(lr)
    if not ok.any():
        raise ValueError("prediction and LR share no valid block")
    lr64 = lr.astype(np.float64)[ok]
    scale_ = np.abs(lr64).mean() or 1.0
    return float(np.abs(blocks[ok] - lr64).max() / scale_)


def _detrend_window(field: np.ndarray) -> np.ndarray:
    """Remove the least-squares plane, then taper with a 2-D Hann window."""
    ny, nx = field.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    design = np.column_stack([np.ones(field.size), yy.ravel(), xx.ravel()])
    coef, *_ = np.linalg.lstsq(design, field.ravel(), rcond=None)
    resid = field - (design @ coef).reshape(ny, nx)
    return resid * np.outer(np.hanning(ny), np.hanning(nx))


def radial_power_spectrum(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of (T, H, W) fields, averaged over T.

    Each field is detrended and Hann-windowed; NaN cells take the mean of the valid ones.
    Returns ``(wavelength_cells, power)`` from the longest to the shortest wavelength (2 cells).

    Examples
    --------
    >>> x = np.arange(64)
    >>> wave = np.sin(2 * np.pi * x / 8)[None, None, :].repeat(64, axis=1)
    >>> wl, p = radial_power_spectrum(wave)
    >>> float(wl[np.argmax(p)])
    8.0
    """
    fields = np.asarray(fields, dtype=np.float64)
    if fields.ndim == 2:
        fields = fields[None]
    _, ny, nx = fields.shape
    n = min(ny, nx)
    k = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.fftfreq(nx)[None, :])
    bins = np.rint(k * n).astype(int)  # integer wavenumber per domain length
    nbins = n // 2 + 1
    power = np.zeros(nbins)
    used = 0
    for f in fields:
        ok = np.isfinite(f)
        if not ok.any():
            continue
        f = np.where(ok, f, f[ok].mean())
        spec = np.abs(np.fft.fft2(_detrend_window(f))) ** 2
        power += np.bincount(bins.ravel(), spec.ravel(), minlength=bins.max() + 1)[:nbins]
        used += 1
    counts = np.bincount(bins.ravel(), minlength=bins.max() + 1)[:nbins]
    power = power / max(used, 1) / np.maximum(counts, 1)
    wavenumber = np.arange(1, nbins)
    return n / wavenumber, power[1:]


def spectral_ratio(
    pred: np.ndarray, truth: np.ndarray, bands: list[list[float]]
) -> dict[str, float]:
    """Power of ``pred`` over power of ``truth`` in each wavelength band ``[lo, hi)`` (HR cells)."""
    wl, p_pred = radial_power_spectrum(pred)
    _, p_truth = radial_power_spectrum(truth)
    out = {}
    for lo, hi in bands:
        sel = (wl >= lo) & (wl < hi)
        denom = p_truth[sel].sum()
        out[f"{lo:g}-{hi:g}"] = float(p_pred[sel].sum() / denom) if denom > 0 else float("nan")
    return out


def compute_metrics(
    pred: np.ndarray, truth: np.ndarray, bands: list[list[float]]
) -> dict[str, Any]:
    """All scalar metrics and the spectral ratio of one variable."""
    out: dict[str, Any] = {name: fn(pred, truth) for name, fn in METRICS.items()}
    out["spectral_ratio"] = spectral_ratio(pred, truth, bands)
    return out


def compute_ensemble_metrics(
    members: np.ndarray, truth: np.ndarray, bands: list[list[float]]
) -> dict[str, Any]:
    """Metrics of an ensemble ``(M, T, H, W)``: the scalar metrics of the ensemble mean, the
    spectral ratio of the members (pooled), ``crps`` and ``spread_skill``."""
    mean = members.mean(axis=0)
    out: dict[str, Any] = {name: fn(mean, truth) for name, fn in METRICS.items()}
    out["spectral_ratio"] = spectral_ratio(
        members.reshape(-1, *members.shape[2:]), np.concatenate([truth] * members.shape[0]), bands
    )
    out["spectral_ratio_ensemble_mean"] = spectral_ratio(mean, truth, bands)
    out["crps"] = ensemble_crps(members, truth)
    out["crps_fair"] = ensemble_crps(members, truth, fair=True)
    out["spread_skill"] = spread_skill(members, truth)
    out["members"] = int(members.shape[0])
    return out
