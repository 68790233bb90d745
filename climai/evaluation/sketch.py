"""Quantiles of a stream of values in bounded memory: a fine histogram with each bin's extremes.

:class:`QuantileHistogram` counts the values of a known range ``[lo, hi]`` in ``nbins`` equal bins
and keeps the smallest and the largest value of each bin. A quantile is estimated the way
``np.quantile`` (linear method) takes it, from the two order statistics around rank
``p (N − 1)``; each order statistic is placed inside its bin by its rank there: the bin's smallest
value for the ranks of the copies of that value, else between it and the bin's largest value.
Error bound, stated: the estimate of every quantile is within ``(hi − lo) / nbins`` of the exact
value (:attr:`QuantileHistogram.max_error`; ~4e-6 of the range with the default ``2**18`` bins),
and exact for the copies of a bin's smallest value (ties, such as dry cells) and a bin's largest
value. Memory: per bin a count, the extremes and the copies of the smallest, 32 bytes per bin
(8 MiB by default), whatever the number of values. Histograms of the same range merge exactly
(:meth:`QuantileHistogram.merge`).
"""

from __future__ import annotations

import numpy as np

NBINS = 1 << 18
ADD_VALUES = 1 << 22
"""Values a histogram takes at once (32 MiB of float64)."""


class QuantileHistogram:
    """Counts and per-bin extremes of the finite values of ``[lo, hi]`` in ``nbins`` equal bins.

    Examples
    --------
    >>> h = QuantileHistogram(0.0, 10.0)
    >>> h.add(np.array([0.0, 0.0, 1.0, 4.0, np.nan, 10.0]))
    >>> h.quantiles([0.0, 0.5, 0.875]).tolist()
    [0.0, 1.0, 7.0]
    """

    def __init__(self, lo: float, hi: float, nbins: int = NBINS) -> None:
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(
                f"a quantile histogram needs a finite range lo <= hi, got [{lo}, {hi}]"
            )
        self.lo, self.hi, self.nbins = float(lo), float(hi), int(nbins)
        self.counts = np.zeros(self.nbins, np.int64)
        self.low = np.full(self.nbins, np.inf)
        self.high = np.full(self.nbins, -np.inf)
        self.at_low = np.zeros(self.nbins, np.int64)  # copies of each bin's smallest value

    @property
    def count(self) -> int:
        """The number of values added."""
        return int(self.counts.sum())

    @property
    def max_error(self) -> float:
        """The largest possible error of an estimated quantile: one bin's width."""
        return (self.hi - self.lo) / self.nbins

    def add(self, values: np.ndarray) -> None:
        """Count the finite ``values`` (NaN ignored); a value outside ``[lo, hi]`` is an error.
        Taken :data:`ADD_VALUES` at a time: the float64 copies stay small whatever the block
        (an ensemble's members are all added at once)."""
        flat = np.asarray(values).reshape(-1)
        for start in range(0, flat.size, ADD_VALUES):
            self._add(flat[start : start + ADD_VALUES])

    def _add(self, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            return
        vmin, vmax = float(v.min()), float(v.max())
        if vmin < self.lo or vmax > self.hi:
            raise ValueError(
                f"values in [{vmin}, {vmax}] fall outside the histogram's range "
                f"[{self.lo}, {self.hi}] (taken in a first pass over the same data)"
            )
        width = self.hi - self.lo
        per = self.nbins / width if width > 0 else 0.0
        idx = np.minimum(((v - self.lo) * per).astype(np.int64), self.nbins - 1)
        low = np.full(self.nbins, np.inf)
        np.minimum.at(low, idx, v)
        at_low = np.bincount(idx[v == low[idx]], minlength=self.nbins)
        self._merge_low(low, at_low)
        self.counts += np.bincount(idx, minlength=self.nbins)
        np.maximum.at(self.high, idx, v)

    def _merge_low(self, low: np.ndarray, at_low: np.ndarray) -> None:
        self.at_low = np.where(
            low < self.low, at_low, self.at_low + np.where(low == self.low, at_low, 0)
        )
        np.minimum(self.low, low, out=self.low)

    def merge(self, other: QuantileHistogram) -> None:
        """Add the counts of ``other``, a histogram of the same range and bins (exact)."""
        if (other.lo, other.hi, other.nbins) != (self.lo, self.hi, self.nbins):
            raise ValueError("only histograms of the same range and bins merge")
        self._merge_low(other.low, other.at_low)
        self.counts += other.counts
        np.maximum(self.high, other.high, out=self.high)

    def _order_statistic(self, ranks: np.ndarray, cum: np.ndarray) -> np.ndarray:
        """The ``ranks``-th smallest values (0-based), placed by rank inside their bins."""
        b = np.searchsorted(cum, ranks, side="right")
        n, ties = self.counts[b], self.at_low[b]
        j = ranks - (cum[b] - n)  # rank inside the bin
        rest = np.maximum(n - ties, 1)  # values above the bin's smallest, the last the largest
        frac = np.clip((j - ties + 1) / rest, 0.0, 1.0)
        return self.low[b] + (self.high[b] - self.low[b]) * frac

    def quantiles(self, probs: list[float] | np.ndarray) -> np.ndarray:
        """Quantiles at ``probs`` in [0, 1], as ``np.quantile`` takes them (linear method),
        within :attr:`max_error`; raises ``ValueError`` when no value was added."""
        total = self.count
        if total == 0:
            raise ValueError("no valid value to take quantiles of")
        h = np.asarray(probs, np.float64) * (total - 1)
        r0 = np.floor(h).astype(np.int64)
        r1 = np.minimum(r0 + 1, total - 1)
        cum = np.cumsum(self.counts)
        q0, q1 = self._order_statistic(r0, cum), self._order_statistic(r1, cum)
        return q0 + (h - r0) * (q1 - q0)
