"""Scores of a prediction against the truth, NaN-masked, in the variable's canonical units.

Metrics are found by name in :data:`METRICS` (:mod:`climai.evaluation.registry`; :func:`get_metric`
lists the valid names when one is unknown). Every metric takes a :class:`MetricInput` and returns a
number or a small mapping; this module holds the computations of climai's own.

Deterministic point scores (``rmse``, ``mae``, ``bias``, ``corr``) use the prediction, or the
ensemble mean when the prediction has members. Distribution and structure scores (spectra,
quantiles, wet fraction, conservation) pool every member, since each member should look like the
truth; quantiles and wet scores of the prediction and of the truth are taken on the same cells,
those valid in both (:meth:`MetricInput.common`). Ensemble scores (``crps``, ``crps_fair``, ``spread_skill``, ``rank_histogram``) apply only
to ensembles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from climai.evaluation.ensemble import crps_ensemble as crps_ensemble
from climai.evaluation.ensemble import crps_fair as crps_fair
from climai.evaluation.ensemble import rank_histogram as rank_histogram
from climai.evaluation.ensemble import spread_skill as spread_skill
from climai.evaluation.registry import CONTRACT_METRICS as CONTRACT_METRICS
from climai.evaluation.registry import METRICS, get_metric
from climai.evaluation.registry import Metric as Metric
from climai.preprocess.coarsen import block_mean_numpy

log = logging.getLogger("climai")

QUANTILES: dict[str, float] = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p99.9": 0.999}


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


# ---------------------------------------------------------------------------------------------
# Spectra


def largest_valid_rectangle(mask: np.ndarray) -> tuple[slice, slice]:
    """The largest axis-aligned rectangle of True cells in a 2-D mask, as ``(rows, cols)`` slices.

    Raises ``ValueError`` when the mask has no True cell.

    Examples
    --------
    >>> m = np.ones((4, 5), bool); m[0, :] = False; m[:, 4] = False
    >>> largest_valid_rectangle(m)
    (slice(1, 4, None), slice(0, 4, None))
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError("the valid-cell mask has no valid cell")
    ny, nx = mask.shape
    if mask.all():
        return slice(0, ny), slice(0, nx)
    # Row by row, every column's tallest run of True cells ending at this row (height) and how
    # far that run extends left and right at full height (the classic maximal-rectangle DP, each
    # row in whole-array steps): the same candidates as the largest rectangle under each row's
    # histogram, and the same choice among equal areas (the first row; then the smallest right
    # edge, then the tallest).
    cols = np.arange(nx)
    heights = np.zeros(nx, np.int64)
    left = np.zeros(nx, np.int64)
    right = np.full(nx, nx, np.int64)
    best = (0, 0, 0, 0, 0)  # area, top, bottom (exclusive), left, right (exclusive)
    for row in range(ny):
        m = mask[row]
        heights = np.where(m, heights + 1, 0)
        run_left = np.maximum.accumulate(np.where(m, 0, cols + 1))
        left = np.where(m, np.maximum(left, run_left), 0)
        run_right = np.minimum.accumulate(np.where(m, nx, cols)[::-1])[::-1]
        right = np.where(m, np.minimum(right, run_right), nx)
        area = heights * (right - left)
        top = int(area.max())
        if top > best[0]:
            tied = np.flatnonzero(area == top)
            j = tied[np.lexsort((-heights[tied], right[tied]))[0]]
            best = (top, row + 1 - int(heights[j]), row + 1, int(left[j]), int(right[j]))
    _, r0, r1, c0, c1 = best
    return slice(r0, r1), slice(c0, c1)


@dataclass(frozen=True)
class SpectralRegion:
    """Where spectra are taken: a rectangle valid in every used time step (no filled cells)."""

    rows: slice
    cols: slice
    steps: np.ndarray  # indices of the time steps fully valid inside the rectangle

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)


MIN_SPECTRAL_SIDE = 8


def spectral_region(*cubes: np.ndarray) -> SpectralRegion:
    """The common region of (T, H, W) cubes (or (M, T, H, W) ensembles) for honest spectra.

    Cells valid in at least half of the time steps of every cube form the static mask; its
    largest valid rectangle is the region, and only time steps with every cell of the rectangle
    valid in every cube are used. No missing cell is ever filled, so no artificial edge enters
    the FFT. Raises ``ValueError`` when the rectangle is shorter than 8 cells or no step is
    complete.
    """
    valid = None
    for cube in cubes:
        c = np.asarray(cube)
        ok = np.isfinite(c)
        if c.ndim == 4:  # members: a cell is valid when every member has it
            ok = ok.all(axis=0)
        elif c.ndim == 2:
            ok = ok[None]
        valid = ok if valid is None else valid & ok
    assert valid is not None
    static = valid.mean(axis=0) >= 0.5
    if not static.any():
        raise ValueError("no cell is valid in at least half of the time steps: no spectrum")
    rows, cols = largest_valid_rectangle(static)
    steps = np.flatnonzero(valid[:, rows, cols].all(axis=(1, 2)))
    region = SpectralRegion(rows, cols, steps)
    if min(region.shape) < MIN_SPECTRAL_SIDE or steps.size == 0:
        raise ValueError(
            f"the largest valid rectangle is {region.shape[0]}×{region.shape[1]} cells with "
            f"{steps.size} complete time steps; spectra need at least "
            f"{MIN_SPECTRAL_SIDE}×{MIN_SPECTRAL_SIDE} cells and one complete step"
        )
    return region


SPECTRUM_BYTES = 64 << 20
"""Float64 bytes of the fields Fourier-transformed at once (at least one field)."""


def _detrend_window(fields: np.ndarray) -> np.ndarray:
    """Remove each (N, H, W) float64 field's least-squares plane, then taper with a 2-D Hann
    window, in place. On centred coordinates the plane's three terms are orthogonal, so each
    coefficient is a projection of the field's row or column sums: no (H·W, 3) design matrix."""
    _, ny, nx = fields.shape
    y = np.arange(ny) - (ny - 1) / 2
    x = np.arange(nx) - (nx - 1) / 2
    mean = fields.mean(axis=(1, 2))
    slope_y = fields.sum(axis=2) @ y / (nx * (y @ y)) if ny > 1 else np.zeros_like(mean)
    slope_x = fields.sum(axis=1) @ x / (ny * (x @ x)) if nx > 1 else np.zeros_like(mean)
    fields -= (mean[:, None] + slope_y[:, None] * y[None, :])[:, :, None]
    fields -= (slope_x[:, None] * x[None, :])[:, None, :]
    fields *= np.hanning(ny)[None, :, None]
    fields *= np.hanning(nx)[None, None, :]
    return fields


def _half_plane_bins(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer wavenumber of every cell of a real FFT's half plane (``rfft2``: ``nx // 2 + 1``
    columns), each cell's weight in the full plane (2 where its conjugate twin is left out: the
    same wavenumber, the same power), and the number of full-plane wavenumbers (0 to n/2)."""
    n = min(ny, nx)
    k = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.rfftfreq(nx)[None, :])
    weight = np.full(k.shape, 2.0)
    weight[:, 0] = 1.0
    if nx % 2 == 0:
        weight[:, -1] = 1.0  # the Nyquist column is its own twin
    return np.rint(k * n).astype(int).ravel(), weight, n // 2 + 1


def radial_power_sums(
    fields: np.ndarray, region: SpectralRegion, chunk_bytes: int = SPECTRUM_BYTES
) -> tuple[np.ndarray, int]:
    """Summed radial power per integer wavenumber (0 to n/2, n the region's shorter side) of the
    region's steps of (T, H, W) fields (or (M, T, H, W)), and the number of fields summed: the
    part of :func:`radial_power_spectrum` that adds up over time blocks.

    Fields are cut, detrended and transformed (real FFT, the half plane weighted as the full
    one) ``chunk_bytes`` of float64 at a time: memory grows with the region, not with the
    number of members or steps."""
    if fields.ndim == 3:
        fields = fields[None]
    ny, nx = region.shape
    bins, weight, nbins = _half_plane_bins(ny, nx)
    power = np.zeros(nbins)
    cut = fields[:, :, region.rows, region.cols]  # a view: fields are copied chunk by chunk
    pairs = [(m, int(t)) for m in range(fields.shape[0]) for t in region.steps]
    per_chunk = max(1, chunk_bytes // (8 * ny * nx))
    for start in range(0, len(pairs), per_chunk):
        group = pairs[start : start + per_chunk]
        block = np.empty((len(group), ny, nx))
        for j, (m, t) in enumerate(group):
            block[j] = cut[m, t]
        spec = np.abs(np.fft.rfft2(_detrend_window(block))) ** 2
        del block
        spec = (spec.sum(axis=0) * weight).ravel()
        power += np.bincount(bins, spec, minlength=bins.max() + 1)[:nbins]
    return power, len(pairs)


def radial_spectrum_of_sums(
    power: np.ndarray, used: int, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(wavelength_cells, power)`` from :func:`radial_power_sums` over ``used`` fields of a
    region of ``shape``: the mean power per field and per Fourier cell of each wavenumber."""
    ny, nx = shape
    n = min(ny, nx)
    k = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.fftfreq(nx)[None, :])
    bins = np.rint(k * n).astype(int).ravel()
    nbins = n // 2 + 1
    counts = np.bincount(bins, minlength=bins.max() + 1)[:nbins]
    mean = power / max(used, 1) / np.maximum(counts, 1)
    return n / np.arange(1, nbins), mean[1:]


def radial_power_spectrum(
    fields: np.ndarray, region: SpectralRegion | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of (T, H, W) fields (or (M, T, H, W)), averaged over T
    (and members).

    Each field is cut to ``region`` (default: :func:`spectral_region` of ``fields``), detrended
    and Hann-windowed. Returns ``(wavelength_cells, power)`` from the longest wavelength to the
    shortest (2 cells).

    Examples
    --------
    >>> x = np.arange(64)
    >>> wave = np.sin(2 * np.pi * x / 8)[None, None, :].repeat(64, axis=1)
    >>> wl, p = radial_power_spectrum(wave)
    >>> float(wl[np.argmax(p)])
    8.0
    """
    fields = np.asarray(fields)
    if fields.ndim == 2:
        fields = fields[None]
    if region is None:
        region = spectral_region(fields)
    power, used = radial_power_sums(fields, region)
    return radial_spectrum_of_sums(power, used, region.shape)


@dataclass(frozen=True)
class SpectraPair:
    """Spectra of a prediction and the truth on their common region."""

    region: SpectralRegion
    wavelength: np.ndarray
    pred: np.ndarray
    truth: np.ndarray

    @classmethod
    def of(
        cls, pred: np.ndarray, truth: np.ndarray, region: SpectralRegion | None = None
    ) -> SpectraPair:
        """Both spectra on ``region`` (default: the common :func:`spectral_region`)."""
        region = region if region is not None else spectral_region(pred, truth)
        wl, p = radial_power_spectrum(pred, region)
        _, t = radial_power_spectrum(truth, region)
        return cls(region, wl, p, t)

    def ratio(self, bands: list[list[float]]) -> dict[str, float]:
        """Power of the prediction over power of the truth in each band ``[lo, hi)``; NaN, with
        a warning naming the band and the region's wavelengths, for a band that holds none."""
        out = {}
        for lo, hi in bands:
            sel = (self.wavelength >= lo) & (self.wavelength < hi)
            if not sel.any():
                ny, nx = self.region.shape
                longest = ", ".join(f"{w:.3g}" for w in self.wavelength[:3])
                log.warning(
                    "spectral ratio band [%g, %g) (evaluate.bands, HR cells) holds no wavelength "
                    "of the %d×%d-cell spectral region (its wavelengths: %s, ... 2 cells): NaN",
                    lo, hi, ny, nx, longest,
                )  # fmt: skip
            denom = self.truth[sel].sum()
            out[f"{lo:g}-{hi:g}"] = (
                float(self.pred[sel].sum() / denom) if denom > 0 else float("nan")
            )
        return out


def spectral_ratio(
    pred: np.ndarray, truth: np.ndarray, bands: list[list[float]]
) -> dict[str, float]:
    """Power of ``pred`` over power of ``truth`` in each wavelength band ``[lo, hi)`` (HR cells),
    both taken on the same valid rectangle and time steps."""
    return SpectraPair.of(pred, truth).ratio(bands)


# ---------------------------------------------------------------------------------------------
# Distributions, precipitation, conservation


def quantiles(values: np.ndarray, levels: dict[str, float] = QUANTILES) -> dict[str, float]:
    """Named quantiles of the valid values (linear interpolation between order statistics)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no valid value to take quantiles of")
    return {
        name: float(q)
        for name, q in zip(levels, np.quantile(v, list(levels.values())), strict=True)
    }


def wet_fraction(values: np.ndarray, threshold: float) -> float:
    """Fraction of valid cells with values at or above ``threshold``."""
    v = np.asarray(values)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no valid value to take the wet fraction of")
    return float(np.mean(v >= threshold))


def wet_intensity(values: np.ndarray, threshold: float) -> float:
    """Mean of the valid values at or above ``threshold`` (NaN when no cell is wet)."""
    v = np.asarray(values, np.float64)
    wet = v[np.isfinite(v) & (v >= threshold)]
    return float(wet.mean()) if wet.size else float("nan")


def block_mean(fields: np.ndarray, scale: int) -> np.ndarray:
    """Mean over ``scale`` × ``scale`` blocks of the last two axes in float64, NaN cells ignored
    (a block with no valid cell is NaN): preprocess's block mean with no valid-cell threshold."""
    f = np.asarray(fields, np.float64)
    ny, nx = f.shape[-2:]
    if ny % scale or nx % scale:
        raise ValueError(f"field of {ny}×{nx} cells is not a multiple of scale={scale}")
    return block_mean_numpy(f, scale, min_valid_fraction=0.0)


def conservation_error(pred: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """RMS of the block mean of the HR output minus the LR input, over LR cells valid in both.

    ``pred`` is (…, T, H, W) (members broadcast against the LR input), ``lr`` is (T, h, w).
    """
    means = block_mean(pred, scale)
    lr_b = np.broadcast_to(np.asarray(lr, np.float64), means.shape)
    return rmse(means, lr_b)


def block_mean_error(pred: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """Largest |block mean of ``pred`` − LR| over blocks valid in both, relative to mean |LR|.

    ``pred`` is (T, H, W) on the HR grid, ``lr`` (T, H/scale, W/scale): how far a prediction is
    from conserving the LR input (0 for an exactly conservative method).
    """
    blocks = block_mean(pred, scale)
    ok = np.isfinite(blocks) & np.isfinite(lr)
    if not ok.any():
        raise ValueError("prediction and LR share no valid block")
    lr64 = lr.astype(np.float64)[ok]
    scale_ = np.abs(lr64).mean() or 1.0
    return float(np.abs(blocks[ok] - lr64).max() / scale_)


# ---------------------------------------------------------------------------------------------
# What a metric is given


@dataclass
class MetricInput:
    """Everything a metric may need for one variable on the test split, or on a block of its
    time steps (a streamed evaluation, :mod:`climai.evaluation.stream`).

    ``pred`` is (T, H, W) or, for ensembles, (M, T, H, W); ``truth`` is (T, H, W) and ``lr`` the
    LR input (T, h, w) in the same units. A block also carries ``start`` (its first step in the
    split), ``region`` (the split's spectral region, its steps those of the block, counted from
    the block's start), ``value_range`` (``(lo, hi)`` of every prediction and truth value of
    the split, for histograms) and ``draws_before`` (the cells valid in the truth and every member
    in the split's steps before the block: the rank histogram's tie-breaking draws before it).
    """

    pred: np.ndarray
    truth: np.ndarray
    kind: str = "generic"
    lr: np.ndarray | None = None
    scale: int = 1
    bands: list[list[float]] = field(default_factory=lambda: [[2, 4], [4, 8], [8, 16], [16, 32]])
    wet_threshold: float = 0.1
    seed: int = 0
    start: int = 0
    region: SpectralRegion | None = None
    value_range: tuple[float, float] | None = None
    draws_before: int = 0

    def __post_init__(self) -> None:
        if self.pred.shape[-self.truth.ndim :] != self.truth.shape or self.pred.ndim not in (
            self.truth.ndim,
            self.truth.ndim + 1,
        ):
            raise ValueError(
                f"prediction of shape {self.pred.shape} does not match truth of shape "
                f"{self.truth.shape}: expected the same shape or (members, *truth.shape)"
            )

    _spectra: SpectraPair | None = field(default=None, repr=False)
    _common: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def common(self) -> tuple[np.ndarray, np.ndarray]:
        """The prediction and the truth, each NaN wherever the other is missing (ensembles: the
        truth or any member), computed once: distribution scores (quantiles, wet fraction and
        intensity) compare the same cells, as the point scores do."""
        if self._common is None:
            ok = np.isfinite(self.truth)
            ok &= np.isfinite(self.pred).all(axis=0) if self.is_ensemble else np.isfinite(self.pred)
            self._common = (np.where(ok, self.pred, np.nan), np.where(ok, self.truth, np.nan))
        return self._common

    def spectra(self) -> SpectraPair:
        """Spectra of the prediction (members pooled) and the truth, computed once."""
        if self._spectra is None:
            self._spectra = SpectraPair.of(self.pred, self.truth, self.region)
        return self._spectra

    @property
    def is_ensemble(self) -> bool:
        return self.pred.ndim == self.truth.ndim + 1

    @property
    def point(self) -> np.ndarray:
        """The deterministic prediction: the ensemble mean for ensembles."""
        if not self.is_ensemble:
            return self.pred
        with np.errstate(invalid="ignore"):
            return self.pred.mean(axis=0)


def quantile_error(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Each named quantile of the prediction minus that of the truth (give both on the same
    cells: :meth:`MetricInput.common`)."""
    p, t = quantiles(pred), quantiles(truth)
    return {k: p[k] - t[k] for k in p}


def compute_metrics(
    pred: np.ndarray | MetricInput,
    truth: np.ndarray | None = None,
    bands: list[list[float]] | None = None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """The metrics ``names`` (default: every registered one) that apply to this input.

    Accepts a :class:`MetricInput`, or ``(pred, truth, bands)`` arrays for the plain case.
    """
    if isinstance(pred, MetricInput):
        inp = pred
    else:
        if truth is None:
            raise ValueError("compute_metrics needs the truth")
        inp = MetricInput(np.asarray(pred), np.asarray(truth))
        if bands is not None:
            inp.bands = bands
    out: dict[str, Any] = {}
    for name in names if names is not None else list(METRICS.builtins):
        metric = get_metric(name)
        if metric.applies(inp):
            out[name] = metric.func(inp)
    return out
