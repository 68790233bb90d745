"""Ensemble scores on members along axis 0 (in memory): CRPS (plain and fair), spread/skill and
the rank histogram; re-exported by :mod:`climai.evaluation.metrics` (the registry's names).
The streamed equivalents are :class:`climai.evaluation.accumulators.EnsembleSums`."""

from __future__ import annotations

import numpy as np


def _ensemble_valid(ens: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, N) members and (N,) truth at cells where the truth and every member are valid."""
    ens = np.asarray(ens, np.float64)
    truth = np.asarray(truth, np.float64)
    if ens.ndim != truth.ndim + 1 or ens.shape[1:] != truth.shape:
        raise ValueError(
            f"ensemble of shape {ens.shape} does not match truth of shape {truth.shape}: "
            "expected (members, *truth.shape)"
        )
    if ens.shape[0] < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {ens.shape[0]}")
    ok = np.isfinite(truth) & np.isfinite(ens).all(axis=0)
    if not ok.any():
        raise ValueError("ensemble and truth share no valid cell")
    return ens[:, ok], truth[ok]


def _crps(ens: np.ndarray, truth: np.ndarray, fair: bool) -> float:
    x, y = _ensemble_valid(ens, truth)
    m = x.shape[0]
    skill = np.abs(x - y[None]).mean(axis=0)
    xs = np.sort(x, axis=0)
    weights = (2 * np.arange(1, m + 1) - m - 1)[:, None]
    pair_sum = 2 * (weights * xs).sum(axis=0)  # sum over i, j of |x_i - x_j|
    spread = pair_sum / (2 * m * (m - 1) if fair else 2 * m * m)
    return float(np.mean(skill - spread))


def crps_ensemble(ens: np.ndarray, truth: np.ndarray) -> float:
    """CRPS of the empirical ensemble distribution, averaged over valid cells:
    mean|x_i − y| − Σ|x_i − x_j| / (2M²)."""
    return _crps(ens, truth, fair=False)


def crps_fair(ens: np.ndarray, truth: np.ndarray) -> float:
    """Fair CRPS (Ferro 2014), unbiased for the infinite ensemble:
    mean|x_i − y| − Σ|x_i − x_j| / (2M(M − 1))."""
    return _crps(ens, truth, fair=True)


def spread_skill(ens: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Spread (root of the mean unbiased member variance), skill (RMSE of the ensemble mean)
    and their ratio with the finite-ensemble factor √((M + 1)/M): 1 for a reliable ensemble."""
    x, y = _ensemble_valid(ens, truth)
    m = x.shape[0]
    spread = float(np.sqrt(np.mean(x.var(axis=0, ddof=1))))
    skill = float(np.sqrt(np.mean((x.mean(axis=0) - y) ** 2)))
    ratio = spread * np.sqrt((m + 1) / m) / skill if skill > 0 else float("nan")
    return {"spread": spread, "skill": skill, "ratio": float(ratio)}


def rank_histogram(ens: np.ndarray, truth: np.ndarray, seed: int = 0) -> list[int]:
    """Counts of the rank of the truth among the M members (M + 1 bins); ties (e.g. dry cells)
    are broken uniformly at random with a seeded generator."""
    x, y = _ensemble_valid(ens, truth)
    m = x.shape[0]
    below = (x < y[None]).sum(axis=0)
    ties = (x == y[None]).sum(axis=0)
    rng = np.random.default_rng(seed)
    ranks = below + np.floor(rng.uniform(size=y.shape) * (ties + 1)).astype(np.int64)
    return np.bincount(ranks, minlength=m + 1).astype(int).tolist()
