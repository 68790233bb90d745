"""Empirical quantile mapping: the statistical downscaling baseline (bicubic + QM).

The mapping is a table of matching quantiles: ``source`` (bicubic-of-LR values on the train split)
and ``target`` (HR truth on the train split) at the same probability levels. A value is mapped by
linear interpolation in the table; beyond its ends the last step is carried on additively
(``target_end + (x − source_end)``), so extremes outside the train range are not flattened.

The table can be fitted from a stream of train blocks (:class:`PairSample`, two passes): the same
seeded sample of at most ``max_samples`` valid (source, target) pairs as the in-memory
:func:`fit_quantile_mapping` draws, kept in memory of the sample's size whatever the length of
the train split, so the whole split is never held and the table equals the in-memory one
exactly. The sample's own error against the whole train split: none when the split has at most
``max_samples`` valid pairs; otherwise each level's rank has a sampling error of standard
deviation √(p(1 − p)/n) (≤ 3.5e-4 with n = 2·10⁶ pairs), and all levels at once lie within
√(ln(2/δ)/(2n)) of their ranks with probability 1 − δ (Dvoretzky–Kiefer–Wolfowitz: 1.9e-3 at
δ = 10⁻⁶, n = 2·10⁶).
"""

from __future__ import annotations

import numpy as np

PERMUTATION_BYTES = 64 << 20
"""Up to this many bytes of int64 indices (8 per pair), :func:`draw_indices` lets NumPy build the
permutation of all the pairs (faster than replaying it)."""

REPLAY_BYTES = 160
"""Bytes per drawn pair that replaying NumPy's shuffle in Python takes (lists and a dict)."""


def draw_indices(n: int, size: int, seed: int) -> np.ndarray:
    """``np.random.default_rng(seed).choice(n, size, replace=False)``: the same indices in the same
    order, in memory of at most ``max(PERMUTATION_BYTES, REPLAY_BYTES * size)``, whatever ``n``.

    For ``n // 50 < size`` NumPy builds ``arange(n)`` and shuffles its last ``size`` places
    (8 bytes per pair: 0.8 GB for 10⁸ valid pairs and ``size`` 2·10⁶, against 64 MB for
    1.01·10⁸, where it draws another way); where that is more than the bound, the partial
    Fisher–Yates shuffle is replayed with the same draws (``integers`` with the same bounds, in
    the same order), keeping only the places it moves.
    """
    rng = np.random.default_rng(seed)
    if n <= 10000 or size <= n // 50 or 8 * n <= max(PERMUTATION_BYTES, REPLAY_BYTES * size):
        return rng.choice(n, size=size, replace=False)
    first = n - size
    tail = list(range(first, n))  # the shuffled array's last ``size`` places
    head: dict[int, int] = {}  # the places before them that a swap changed
    for top in range(n - 1, first - 1, -(1 << 12)):
        tops = np.arange(top, max(first, top - (1 << 12) + 1) - 1, -1, dtype=np.int64)
        for i, j in zip(tops.tolist(), rng.integers(0, tops, endpoint=True).tolist(), strict=True):
            value = tail[i - first]
            if j >= first:
                tail[i - first], tail[j - first] = tail[j - first], value
            else:
                tail[i - first] = head.get(j, j)
                head[j] = value
    return np.array(tail, dtype=np.int64)


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
        pick = draw_indices(s.size, max_samples, seed)
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


class PairSample:
    """The pairs :func:`fit_quantile_mapping` draws, taken from a stream of blocks: at most
    ``size`` of the ``n_valid`` valid (source, target) pairs, in memory of the sample and one
    block.

    ``n_valid`` (a first pass: :meth:`valid_pairs` of every block) fixes the draw: the same
    seeded choice of pair indices as the in-memory fit (every pair when ``n_valid <= size``),
    sorted; each block then keeps the pairs whose running index (time-major order of the valid
    cells) was drawn. :meth:`fit` therefore equals :func:`fit_quantile_mapping` of the whole
    stream exactly, as long as the blocks come in order and are the same in both passes.

    Examples
    --------
    >>> s = PairSample(n_valid=3, size=3, seed=0)
    >>> s.add(np.array([1.0, np.nan, 3.0]), np.array([10.0, 20.0, 30.0]))
    >>> s.add(np.array([2.0, 5.0]), np.array([np.nan, 50.0]))
    >>> [q.tolist() for q in s.fit(3)]
    [[1.0, 3.0, 5.0], [10.0, 30.0, 50.0]]
    """

    def __init__(self, n_valid: int, size: int | None = None, seed: int = 0) -> None:
        self.n_valid = n_valid
        self.picks: np.ndarray | None = None
        if size is not None and n_valid > size:
            self.picks = np.sort(draw_indices(n_valid, size, seed))
        self.offset = 0
        self.source: list[np.ndarray] = []
        self.target: list[np.ndarray] = []

    @staticmethod
    def _pairs(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        source, target = np.asarray(source), np.asarray(target)
        if source.shape != target.shape:
            raise ValueError(
                f"quantile mapping: source shape {source.shape} differs from target {target.shape}"
            )
        ok = np.isfinite(source) & np.isfinite(target)
        return source[ok].astype(np.float64), target[ok].astype(np.float64)

    @staticmethod
    def valid_pairs(source: np.ndarray, target: np.ndarray) -> int:
        """The number of valid pairs (both finite) of one block: the first pass's count."""
        return int((np.isfinite(source) & np.isfinite(target)).sum())

    def add(self, source: np.ndarray, target: np.ndarray) -> None:
        """Keep the drawn pairs of the next block (same shape; both finite to be a pair)."""
        s, t = self._pairs(source, target)
        n = s.size
        if self.picks is not None:
            lo, hi = np.searchsorted(self.picks, [self.offset, self.offset + n])
            chosen = self.picks[lo:hi] - self.offset
            s, t = s[chosen], t[chosen]
        self.offset += n
        self.source.append(s)
        self.target.append(t)

    def fit(self, n_quantiles: int) -> tuple[np.ndarray, np.ndarray]:
        """``(source_quantiles, target_quantiles)`` of the sample at ``n_quantiles`` levels."""
        if self.offset != self.n_valid:
            raise ValueError(
                f"quantile mapping: the blocks held {self.offset} valid pairs, the first pass "
                f"counted {self.n_valid}"
            )
        if self.n_valid < 2:
            raise ValueError(
                f"quantile mapping needs at least 2 valid train cells, got {self.n_valid}"
            )
        s, t = np.concatenate(self.source), np.concatenate(self.target)
        levels = np.linspace(0.0, 1.0, n_quantiles)
        return np.quantile(s, levels), np.quantile(t, levels)
