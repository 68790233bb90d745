"""Every built-in metric computed block by block equals its in-memory value within the stated
tolerances: float64 sums to 1e-9 relative, rank histograms exactly, quantiles within one bin of
the quantile histogram ((hi − lo) / 2**18 of the values' range)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from climai.evaluation import accumulators
from climai.evaluation.metrics import METRICS, Metric, MetricInput, block_mean, compute_metrics
from climai.evaluation.registry import Streams
from climai.evaluation.sketch import NBINS, QuantileHistogram
from climai.evaluation.stream import streamed_metrics, time_blocks
from climai.testing import create_prepared_test_data, random_field

QUANTILE_METRICS = {"quantiles", "quantiles_truth", "quantile_error"}


def assert_close(streamed, in_memory, atol: float, where: str = "") -> None:
    """Nested dicts, lists and numbers equal: NaN to NaN, numbers within 1e-9 rel + ``atol``."""
    if isinstance(in_memory, dict):
        assert set(streamed) == set(in_memory), where
        for k in in_memory:
            assert_close(streamed[k], in_memory[k], atol, f"{where}.{k}")
    elif isinstance(in_memory, list):
        assert streamed == in_memory, where
    elif math.isnan(in_memory):
        assert math.isnan(streamed), where
    else:
        assert streamed == pytest.approx(in_memory, rel=1e-9, abs=atol), where


def assert_streamed_equals_in_memory(inp: MetricInput, block_steps: int, threads: int = 1) -> dict:
    in_memory = compute_metrics(inp)
    streamed = streamed_metrics(inp, block_steps=block_steps, threads=threads)
    assert set(streamed) == set(in_memory)
    values = np.concatenate([inp.pred.ravel(), inp.truth.ravel()])
    bin_width = float(np.nanmax(values) - np.nanmin(values)) / NBINS
    for name, value in in_memory.items():
        atol = 2 * bin_width if name in QUANTILE_METRICS else 1e-12
        assert_close(streamed[name], value, atol, name)
    return streamed


def _fields(kind: str, members: int, nan_fraction: float) -> MetricInput:
    prep = create_prepared_test_data(nx=32, ny=32, steps=20, scale=4)
    var = "pr" if kind == "precipitation" else "tas"
    truth = prep[f"hr_{var}"].values.astype(np.float64)
    noise = random_field((max(members, 1), *truth.shape), seed=3, nan_fraction=nan_fraction)
    pred = truth[None] + 0.3 * np.nanstd(truth) * noise
    if kind == "precipitation":
        pred = np.clip(pred, 0, None)  # dry cells tie with the dry truth
    pred = pred if members else pred[0]
    return MetricInput(
        pred,
        truth,
        kind=kind,
        lr=block_mean(truth, 4),
        scale=4,
        bands=[[2, 4], [4, 8], [8, 16]],
        seed=7,
    )


@pytest.mark.parametrize(("block_steps", "threads"), [(1, 1), (3, 1), (20, 1), (1, 3), (3, 2)])
@pytest.mark.parametrize(
    ("kind", "members", "nan_fraction"),
    [("precipitation", 0, 0.0), ("temperature", 0, 0.001), ("precipitation", 5, 0.0005)],
)
def test_every_builtin_metric_streamed_equals_in_memory(
    kind, members, nan_fraction, block_steps, threads
):
    """In one thread or in runs of blocks scored side by side and merged: the in-memory values
    (sums to 1e-9, the seeded rank histogram exactly)."""
    inp = _fields(kind, members, nan_fraction)
    streamed = assert_streamed_equals_in_memory(inp, block_steps, threads)
    expected = {n for n, m in METRICS.builtins.items() if m.applies(inp)}
    assert set(streamed) == expected


def test_quantile_histogram_is_within_one_bin_and_exact_on_ties():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.zeros(30_000), rng.gamma(0.6, 2.0, 70_000)])  # dry cells tie
    lo, hi = 0.0, float(values.max())
    whole = QuantileHistogram(lo, hi, nbins=1024)
    parts = [QuantileHistogram(lo, hi, nbins=1024) for _ in range(3)]
    for part, chunk in zip(parts, np.array_split(rng.permutation(values), 3), strict=True):
        part.add(chunk)
    whole.add(values)
    for part in parts[1:]:
        parts[0].merge(part)
    probs = np.linspace(0, 1, 201)
    exact = np.quantile(values, probs)
    for h in (whole, parts[0]):
        est = h.quantiles(probs)
        assert np.abs(est - exact).max() <= h.max_error
        np.testing.assert_array_equal(est[probs <= 0.25], 0.0)  # the dry quantiles are exact
    with pytest.raises(ValueError, match="outside the histogram's range"):
        whole.add(np.array([hi + 1.0]))
    with pytest.raises(ValueError, match="no valid value"):
        QuantileHistogram(0, 1).quantiles([0.5])


def test_time_blocks_cover_the_steps_within_the_budget_and_on_chunks():
    blocks = time_blocks(50, bytes_per_step=100, block_bytes=1000, chunk=4)
    assert [b.stop - b.start for b in blocks] == [8] * 6 + [2]
    assert time_blocks(3, bytes_per_step=10**9, block_bytes=1) == [
        slice(0, 1),
        slice(1, 2),
        slice(2, 3),
    ]


class _ExceedanceSums:
    """A plugin-style accumulator: the fraction of cells where the prediction exceeds the truth."""

    def __init__(self) -> None:
        self.above = self.valid = 0

    def update(self, block: MetricInput) -> None:
        ok = np.isfinite(block.point) & np.isfinite(block.truth)
        self.above += int((block.point[ok] > block.truth[ok]).sum())
        self.valid += int(ok.sum())

    def result(self) -> float:
        return self.above / self.valid


def _exceedance(inp: MetricInput) -> float:
    ok = np.isfinite(inp.point) & np.isfinite(inp.truth)
    return float(np.mean(inp.point[ok] > inp.truth[ok]))


@pytest.mark.parametrize("threads", [1, 3])
def test_plugin_metrics_with_and_without_an_accumulator(monkeypatch, caplog, threads):
    """Accumulators without ``merge`` (a plugin's, WholeSplit) are scored in one thread."""
    streamed_plugin = Metric(_exceedance, accumulator=lambda streams: _ExceedanceSums())
    whole_split_plugin = Metric(_exceedance)
    monkeypatch.setitem(METRICS._loaded, "exceedance", streamed_plugin)
    monkeypatch.setitem(METRICS._loaded, "exceedance_whole", whole_split_plugin)
    inp = _fields("temperature", 0, 0.0)
    names = ["rmse", "exceedance", "exceedance_whole"]
    out = streamed_metrics(inp, names, block_steps=2, threads=threads)
    expected = _exceedance(inp)
    assert out["exceedance"] == pytest.approx(expected, rel=1e-12)
    assert out["exceedance_whole"] == pytest.approx(expected, rel=1e-12)
    assert "'exceedance_whole' has no accumulator" in caplog.text
    assert "'exceedance' has" not in caplog.text


def test_shared_streams_are_made_once_per_key():
    streams = Streams()
    a = streams.get("k", _ExceedanceSums)
    assert streams.get("k", _ExceedanceSums) is a and streams.holds(a) and "k" in streams
    assert not streams.holds(_ExceedanceSums())


@pytest.mark.parametrize("cells", [7, 1000])
def test_ensemble_sums_scored_cell_chunk_by_cell_chunk_equal_in_memory(monkeypatch, cells):
    """EnsembleSums takes a block ``ENSEMBLE_CELLS`` cells at a time (bounded float64 copies):
    CRPS and spread/skill as in memory, the seeded rank counts exactly (the tie draws go on
    through the chunks in cell order)."""
    monkeypatch.setattr(accumulators, "ENSEMBLE_CELLS", cells)
    assert_streamed_equals_in_memory(_fields("precipitation", 5, 0.0005), 3, 2)


def test_a_histogram_takes_a_large_array_in_pieces_with_the_same_counts(monkeypatch):
    """QuantileHistogram.add works ``ADD_VALUES`` values at a time: counts, bin minima and
    maxima (and so every quantile) equal one pass's; the range check still names the values."""
    from climai.evaluation import sketch

    rng = np.random.default_rng(1)
    values = np.round(rng.gamma(0.5, 2.0, 50_000), 2)  # ties at every bin's minimum
    values[::97] = np.nan
    whole = QuantileHistogram(0.0, float(np.nanmax(values)), nbins=512)
    whole.add(values)
    monkeypatch.setattr(sketch, "ADD_VALUES", 333)
    pieces = QuantileHistogram(0.0, float(np.nanmax(values)), nbins=512)
    pieces.add(values.reshape(100, 500))
    for name in ("counts", "low", "high", "at_low"):
        np.testing.assert_array_equal(getattr(pieces, name), getattr(whole, name), name)
    probs = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(pieces.quantiles(probs), whole.quantiles(probs))
    with pytest.raises(ValueError, match="outside the histogram's range"):
        pieces.add(np.array([0.5, -1.0]))


@pytest.mark.parametrize("members", [0, 3])
def test_distribution_scores_compare_the_cells_valid_in_both(members):
    """A prediction equal to the truth on every cell the truth has (and filling the radar's gaps
    with rain) gets no quantile error and the truth's wet fraction and intensity, in memory and
    streamed: the truth's missing cells are left out of the prediction's distribution too, and
    the prediction's missing cells out of the truth's."""
    from climai.testing import radar_mask

    full = create_prepared_test_data(nx=32, ny=32, steps=12, scale=4)["hr_pr"].values
    truth = full.astype(np.float64)
    truth[:, ~radar_mask(32, 32)] = np.nan
    pred = np.where(np.isfinite(truth), truth, 5.0)
    pred[:, :2, :2] = np.nan  # and the truth's cells the prediction misses count in neither
    if members:
        pred = np.repeat(pred[None], members, axis=0)
    inp = MetricInput(pred, truth, kind="precipitation", bands=[[2, 4], [4, 8]])
    # pooled copies of the truth: its quantiles up to interpolation between order statistics
    atol = 0.05 if members else 0.0
    for m in (compute_metrics(inp), streamed_metrics(inp, block_steps=5, threads=2)):
        assert set(m["quantile_error"]) == {"p50", "p90", "p99", "p99.9"}
        for name, err in m["quantile_error"].items():
            assert abs(err) <= atol, name
        assert m["wet_fraction"] == pytest.approx(m["wet_fraction_truth"], abs=1e-12)
        assert m["wet_intensity"] == pytest.approx(m["wet_intensity_truth"], rel=1e-12)


#: A metric context of temperature on a scale-4 toy grid.
TAS_CONTEXT = {
    "kind": "temperature",
    "scale": 4,
    "bands": [[2, 4]],
    "wet_threshold": 0.1,
    "seed": 0,
}


def test_an_all_nan_prediction_is_named_not_blamed_on_the_spectrum():
    from climai.evaluation.stream import as_time_array, stream_scores

    truth = create_prepared_test_data(nx=32, ny=32, steps=6, scale=4)["hr_tas"]
    good = truth.values + 0.1
    preds = {"good": as_time_array(good), "diverged": as_time_array(np.full_like(good, np.nan))}
    context = TAS_CONTEXT
    with pytest.raises(ValueError, match=r"prediction 'diverged' of 'hr_tas' has no valid"):
        stream_scores(truth, preds, None, {"good": ["rmse"], "diverged": ["rmse"]}, context)


def test_cube_checks_the_prediction_is_on_the_truths_coordinates():
    from climai.evaluation.stream import cube

    truth = create_prepared_test_data(nx=16, ny=16, steps=4, scale=4)["hr_tas"]
    assert cube(truth.copy(), "tas", truth).equals(truth)
    with pytest.raises(ValueError, match=r"store.zarr: downscaled variable 'tas': x\[0\] is"):
        cube(truth.isel(x=slice(None, None, -1)), "tas", truth, "store.zarr")
    with pytest.raises(ValueError, match=r"has 3 time values, the truth 'hr_tas' 4"):
        cube(truth.isel(time=slice(1, None)), "tas", truth)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_an_infinite_value_is_named_not_blamed_on_the_histogram_or_shared_cells(value):
    """One ±inf cell in a prediction: the error said "a quantile histogram needs a finite range"
    (+inf) or "prediction and truth share no valid cell" (-inf)."""
    from climai.evaluation.stream import as_time_array, stream_scores

    truth = create_prepared_test_data(nx=32, ny=32, steps=6, scale=4)["hr_tas"]
    pred = truth.values + 0.1
    pred[2, 5, 5] = value
    context = TAS_CONTEXT
    with pytest.raises(ValueError, match=r"prediction 'unet' of 'hr_tas' holds 1 infinite values"):
        stream_scores(truth, {"unet": as_time_array(pred)}, None, {"unet": ["rmse"]}, context)
