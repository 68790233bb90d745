"""The built-in metrics block by block: sums, counts, histograms and summed spectra.

Each accumulator takes the blocks of a split (:class:`~climai.evaluation.metrics.MetricInput` of
consecutive time steps, in time order) and gives what its in-memory twin in
:mod:`climai.evaluation.metrics` gives for the whole split:

- point scores (``rmse``, ``mae``, ``bias``, ``corr``), wet fraction and intensity, conservation
  error, CRPS and spread/skill: float64 sums and counts (``corr`` from co-moments merged with
  Chan et al.'s update), equal up to rounding (relative 1e-9);
- ``rank_histogram``: counts, with the tie-breaking draws of one seeded generator taken in the
  same order as the in-memory version, so the counts are identical;
- ``spectral_ratio`` and the spectra: power summed per wavenumber over the region's steps, equal up
  to rounding;
- ``quantiles``, ``quantiles_truth`` and ``quantile_error``: a
  :class:`~climai.evaluation.sketch.QuantileHistogram` per field, within one bin width
  ((hi − lo) / 2**18 of the split's value range; twice that for the error) of the exact value.

Several metrics share one accumulator through :class:`~climai.evaluation.registry.Streams`.

Every accumulator here also has a ``merge`` of another one of the same metric that saw the
*following* blocks (a thread's contiguous run of them, :func:`climai.evaluation.stream.
stream_scores`): sums and counts add, co-moments merge with Chan et al.'s formula, histograms and summed spectra add.
The merged result equals the one-pass result up to float rounding, the rank counts exactly (each
run's generator skips the draws of the cells before it, ``MetricInput.draws_before``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from climai.evaluation.metrics import (
    QUANTILES,
    MetricInput,
    SpectralRegion,
    SpectraPair,
    block_mean,
    radial_power_sums,
    radial_spectrum_of_sums,
    spectral_region,
)
from climai.evaluation.registry import Accumulator, Streams, View
from climai.evaluation.sketch import QuantileHistogram

log = logging.getLogger("climai")


class PointSums:
    """Sums of the point prediction's errors and Chan co-moments with the truth."""

    def __init__(self) -> None:
        self.n, self.sum_d, self.sum_d2, self.sum_abs = 0, 0.0, 0.0, 0.0
        self.mean_p, self.mean_t, self.cpp, self.ctt, self.cpt = 0.0, 0.0, 0.0, 0.0, 0.0

    def update(self, block: MetricInput) -> None:
        p, t = np.asarray(block.point), np.asarray(block.truth)
        ok = np.isfinite(p) & np.isfinite(t)
        p, t = p[ok].astype(np.float64), t[ok].astype(np.float64)
        nb = p.size
        if not nb:
            return
        d = p - t
        self.sum_d += float(d.sum())
        self.sum_d2 += float(np.dot(d, d))
        self.sum_abs += float(np.abs(d).sum())
        mp, mt = float(p.mean()), float(t.mean())
        dp, dt = p - mp, t - mt
        n = self.n + nb
        ep, et = mp - self.mean_p, mt - self.mean_t
        w = self.n * nb / n
        self.cpp += float(np.dot(dp, dp)) + ep * ep * w
        self.ctt += float(np.dot(dt, dt)) + et * et * w
        self.cpt += float(np.dot(dp, dt)) + ep * et * w
        self.mean_p += ep * nb / n
        self.mean_t += et * nb / n
        self.n = n

    def merge(self, other: PointSums) -> None:
        """Add the sums of ``other`` (Chan et al.'s pairwise update of the co-moments)."""
        if not other.n:
            return
        n = self.n + other.n
        ep, et = other.mean_p - self.mean_p, other.mean_t - self.mean_t
        w = self.n * other.n / n
        self.sum_d += other.sum_d
        self.sum_d2 += other.sum_d2
        self.sum_abs += other.sum_abs
        self.cpp += other.cpp + ep * ep * w
        self.ctt += other.ctt + et * et * w
        self.cpt += other.cpt + ep * et * w
        self.mean_p += ep * other.n / n
        self.mean_t += et * other.n / n
        self.n = n

    def result(self) -> dict[str, float]:
        if not self.n:
            raise ValueError("prediction and truth share no valid cell")
        degenerate = self.cpp <= 0 or self.ctt <= 0
        return {
            "rmse": math.sqrt(self.sum_d2 / self.n),
            "mae": self.sum_abs / self.n,
            "bias": self.sum_d / self.n,
            "corr": float("nan") if degenerate else self.cpt / math.sqrt(self.cpp * self.ctt),
        }


class SpectraSums:
    """Radial power of the prediction (members pooled) and the truth summed over the blocks'
    steps inside the split's spectral region."""

    def __init__(self) -> None:
        self.pred: np.ndarray | None = None
        self.truth: np.ndarray | None = None
        self.used_pred = self.used_truth = 0
        self.steps: list[np.ndarray] = []
        self.rows: slice | None = None
        self.cols: slice | None = None
        self.bands: list[list[float]] = []

    def update(self, block: MetricInput) -> None:
        region = block.region or spectral_region(block.pred, block.truth)
        self.rows, self.cols, self.bands = region.rows, region.cols, block.bands
        if not region.steps.size:
            return
        p, used_p = radial_power_sums(np.asarray(block.pred), region)
        t, used_t = radial_power_sums(np.asarray(block.truth), region)
        self.pred = p if self.pred is None else self.pred + p
        self.truth = t if self.truth is None else self.truth + t
        self.used_pred += used_p
        self.used_truth += used_t
        self.steps.append(block.start + region.steps)

    def merge(self, other: SpectraSums) -> None:
        """Add the power sums of ``other`` (its steps follow these)."""
        if self.rows is None:
            self.rows, self.cols, self.bands = other.rows, other.cols, other.bands
        if other.pred is None or other.truth is None:
            return
        self.pred = other.pred if self.pred is None else self.pred + other.pred
        self.truth = other.truth if self.truth is None else self.truth + other.truth
        self.used_pred += other.used_pred
        self.used_truth += other.used_truth
        self.steps += other.steps

    def result(self) -> SpectraPair:
        if self.pred is None or self.truth is None or self.rows is None or self.cols is None:
            raise ValueError("no time step is complete inside the spectral region: no spectrum")
        region = SpectralRegion(self.rows, self.cols, np.concatenate(self.steps))
        wl, p = radial_spectrum_of_sums(self.pred, self.used_pred, region.shape)
        _, t = radial_spectrum_of_sums(self.truth, self.used_truth, region.shape)
        return SpectraPair(region, wl, p, t)


class Histograms:
    """Quantile histograms of the prediction (members pooled) and the truth on the cells valid
    in both (:meth:`~climai.evaluation.metrics.MetricInput.common`) over the split's value range
    (``MetricInput.value_range``)."""

    def __init__(self) -> None:
        self.pred: QuantileHistogram | None = None
        self.truth: QuantileHistogram | None = None

    def update(self, block: MetricInput) -> None:
        if self.pred is None or self.truth is None:
            if block.value_range is None:
                raise ValueError(
                    "streamed quantiles need the split's value range (MetricInput.value_range)"
                )
            self.pred, self.truth = (
                QuantileHistogram(*block.value_range),
                QuantileHistogram(*block.value_range),
            )
        pred, truth = block.common()
        self.pred.add(pred)
        self.truth.add(truth)

    def merge(self, other: Histograms) -> None:
        """Add the counts of ``other`` (exact, :meth:`QuantileHistogram.merge`)."""
        if other.pred is None or other.truth is None:
            return
        if self.pred is None or self.truth is None:
            self.pred, self.truth = other.pred, other.truth
            return
        self.pred.merge(other.pred)
        self.truth.merge(other.truth)

    def result(self) -> tuple[QuantileHistogram, QuantileHistogram]:
        if self.pred is None or self.truth is None:
            raise ValueError("no block was given to the quantile histograms")
        return self.pred, self.truth


def named_quantiles(hist: QuantileHistogram) -> dict[str, float]:
    """:data:`~climai.evaluation.metrics.QUANTILES` of a histogram, by name."""
    values = hist.quantiles(list(QUANTILES.values()))
    return {name: float(q) for name, q in zip(QUANTILES, values, strict=True)}


class WetSums:
    """Valid and wet cell counts and the wet sum of the prediction (pooled) and the truth, on
    the cells valid in both."""

    def __init__(self) -> None:
        self.sums = {"pred": [0, 0, 0.0], "truth": [0, 0, 0.0]}

    def update(self, block: MetricInput) -> None:
        for key, values in zip(("pred", "truth"), block.common(), strict=True):
            v = np.asarray(values)
            v = v[np.isfinite(v)]
            wet = v[v >= block.wet_threshold]
            s = self.sums[key]
            s[0] += v.size
            s[1] += wet.size
            s[2] += float(wet.sum(dtype=np.float64))

    def merge(self, other: WetSums) -> None:
        for key, s in self.sums.items():
            self.sums[key] = [a + b for a, b in zip(s, other.sums[key], strict=True)]

    def fraction(self, key: str) -> float:
        valid, wet, _ = self.sums[key]
        if not valid:
            raise ValueError("no valid value to take the wet fraction of")
        return wet / valid

    def intensity(self, key: str) -> float:
        _, wet, total = self.sums[key]
        return total / wet if wet else float("nan")

    def result(self) -> WetSums:
        return self


class ConservationSums:
    """Squared differences of the prediction's block means and the LR input, and their count."""

    def __init__(self) -> None:
        self.n, self.sum_sq = 0, 0.0

    def update(self, block: MetricInput) -> None:
        if block.lr is None:
            raise ValueError("the conservation error needs the LR input")
        means = block_mean(block.pred, block.scale)
        lr = np.broadcast_to(np.asarray(block.lr, np.float64), means.shape)
        ok = np.isfinite(means) & np.isfinite(lr)
        d = means[ok] - lr[ok]
        self.n += d.size
        self.sum_sq += float(np.dot(d, d))

    def merge(self, other: ConservationSums) -> None:
        self.n += other.n
        self.sum_sq += other.sum_sq

    def result(self) -> float:
        if not self.n:
            raise ValueError("prediction and truth share no valid cell")
        return math.sqrt(self.sum_sq / self.n)


ENSEMBLE_CELLS = 1 << 18
"""Cells of an ensemble block scored at once (16 members: 32 MiB per float64 copy)."""


class EnsembleSums:
    """CRPS (plain and fair), spread and skill sums and rank counts of an ensemble (members on
    axis 0); ties in the ranks broken by one generator seeded with ``MetricInput.seed``, one draw
    per valid cell in time order: a run of blocks that starts later skips the draws before it
    (``MetricInput.draws_before``), so its counts are those of one pass whatever the runs."""

    def __init__(self) -> None:
        self.n, self.crps, self.fair, self.var, self.sq = 0, 0.0, 0.0, 0.0, 0.0
        self.members = 0
        self.ranks: np.ndarray | None = None
        self.rng: np.random.Generator | None = None

    def update(self, block: MetricInput) -> None:
        ens, truth = np.asarray(block.pred), np.asarray(block.truth)
        m = ens.shape[0]
        if m < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {m}")
        if self.rng is None:
            self.rng, self.members = np.random.default_rng(block.seed), m
            self.rng.bit_generator.advance(block.draws_before)
            self.ranks = np.zeros(m + 1, np.int64)
        flat_ens, flat_truth = ens.reshape(m, -1), truth.reshape(-1)
        for a in range(0, flat_truth.size, ENSEMBLE_CELLS):  # bounded float64 copies
            self._cells(flat_ens[:, a : a + ENSEMBLE_CELLS], flat_truth[a : a + ENSEMBLE_CELLS])

    def _cells(self, ens: np.ndarray, truth: np.ndarray) -> None:
        """Add (M, N) members and (N,) truth; the tie draws continue the one generator."""
        m = ens.shape[0]
        ok = np.isfinite(truth) & np.isfinite(ens).all(axis=0)
        x, y = ens[:, ok].astype(np.float64), truth[ok].astype(np.float64)
        if not y.size:
            return
        skill = np.abs(x - y[None]).mean(axis=0)
        weights = (2 * np.arange(1, m + 1) - m - 1)[:, None]
        pair_sum = 2 * (weights * np.sort(x, axis=0)).sum(axis=0)
        self.crps += float((skill - pair_sum / (2 * m * m)).sum())
        self.fair += float((skill - pair_sum / (2 * m * (m - 1))).sum())
        self.var += float(x.var(axis=0, ddof=1).sum())
        self.sq += float(((x.mean(axis=0) - y) ** 2).sum())
        below = (x < y[None]).sum(axis=0)
        ties = (x == y[None]).sum(axis=0)
        assert self.rng is not None and self.ranks is not None
        ranks = below + np.floor(self.rng.uniform(size=y.shape) * (ties + 1)).astype(np.int64)
        self.ranks += np.bincount(ranks, minlength=m + 1)
        self.n += y.size

    def merge(self, other: EnsembleSums) -> None:
        """Add the sums and rank counts of ``other`` (the following blocks' run)."""
        if other.ranks is None:
            return
        if self.ranks is None:
            self.ranks, self.members = np.zeros_like(other.ranks), other.members
        self.n += other.n
        self.crps += other.crps
        self.fair += other.fair
        self.var += other.var
        self.sq += other.sq
        self.ranks += other.ranks

    def result(self) -> dict[str, Any]:
        if not self.n:
            raise ValueError("ensemble and truth share no valid cell")
        m = self.members
        spread, skill = math.sqrt(self.var / self.n), math.sqrt(self.sq / self.n)
        ratio = spread * math.sqrt((m + 1) / m) / skill if skill > 0 else float("nan")
        assert self.ranks is not None
        return {
            "crps": self.crps / self.n,
            "crps_fair": self.fair / self.n,
            "spread_skill": {"spread": spread, "skill": skill, "ratio": ratio},
            "rank_histogram": self.ranks.astype(int).tolist(),
        }


class WholeSplit:
    """A metric with no accumulator: its blocks gathered in memory, ``func`` applied at the end
    (memory grows with the split: give the metric an accumulator)."""

    def __init__(self, name: str, func: Any) -> None:
        self.name, self.func = name, func
        self.blocks: list[MetricInput] = []

    def update(self, block: MetricInput) -> None:
        if not self.blocks:
            log.warning(
                "metric %r has no accumulator: the whole split is gathered in memory for it "
                "(docs/add-a-metric.md)",
                self.name,
            )
        self.blocks.append(block)

    def result(self) -> Any:
        first = self.blocks[0]
        lr = None if first.lr is None else np.concatenate([b.lr for b in self.blocks])  # type: ignore[misc]
        whole = MetricInput(
            pred=np.concatenate([b.pred for b in self.blocks], axis=-3),
            truth=np.concatenate([b.truth for b in self.blocks], axis=0),
            kind=first.kind,
            lr=lr,
            scale=first.scale,
            bands=first.bands,
            wet_threshold=first.wet_threshold,
            seed=first.seed,
        )
        return self.func(whole)


# Built-in metrics' accumulators, by the streams they read (registry entries call these)


def spectra(streams: Streams) -> SpectraSums:
    """The shared summed spectra."""
    return streams.get("spectra", SpectraSums)  # type: ignore[return-value]


def histograms(streams: Streams) -> Histograms:
    """The shared quantile histograms."""
    return streams.get("histograms", Histograms)  # type: ignore[return-value]


def point(streams: Streams, name: str) -> Accumulator:
    """``rmse``, ``mae``, ``bias`` or ``corr`` of the point prediction."""
    return View(lambda r: r[name], streams.get("point", PointSums))


def spectral_ratio(streams: Streams) -> Accumulator:
    acc = spectra(streams)
    return View(lambda pair: pair.ratio(acc.bands), acc)


def quantiles(streams: Streams, field: str) -> Accumulator:
    """Named quantiles of the prediction (``field="pred"``) or the truth."""
    index = 0 if field == "pred" else 1
    return View(lambda h: named_quantiles(h[index]), histograms(streams))


def quantile_error(streams: Streams) -> Accumulator:
    def error(h: tuple[QuantileHistogram, QuantileHistogram]) -> dict[str, float]:
        p, t = named_quantiles(h[0]), named_quantiles(h[1])
        return {k: p[k] - t[k] for k in p}

    return View(error, histograms(streams))


def wet(streams: Streams, field: str, what: str) -> Accumulator:
    """Wet ``fraction`` or ``intensity`` of ``field`` (pred or truth)."""
    return View(lambda w: getattr(w, what)(field), streams.get("wet", WetSums))


def conservation(streams: Streams) -> Accumulator:
    return ConservationSums()


def ensemble(streams: Streams, name: str) -> Accumulator:
    """``crps``, ``crps_fair``, ``spread_skill`` or ``rank_histogram``."""
    return View(lambda r: r[name], streams.get("ensemble", EnsembleSums))
