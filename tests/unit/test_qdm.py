"""The per-cell quantile-delta-mapping baseline (method type ``qdm``, xsdba)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from climai.config import validate_config
from climai.data.prepared import PreparedDataset
from climai.inference import qdm as qdm_predict
from climai.inference.predict import bicubic_prediction
from climai.models.qdm import choose_group, jitter_dry, qdm_cells
from climai.registry import method_kind
from climai.testing import TINY_CAMPAIGN, create_prepared_test_data, random_field

pytest.importorskip("xsdba", reason="the qdm method needs climai's [sdba] extra (xsdba)")

HOURS = pd.date_range("2000-01-01", periods=24 * 400, freq="h").values


@pytest.mark.parametrize(
    ("train", "min_steps", "want"),
    [
        (HOURS, 48, "month"),  # 400 days: every month
        (HOURS[: 24 * 100], 48, "none"),  # Jan to Apr: no summer
        (HOURS[: 24 * 340], 24 * 20, "season"),  # December has only 5 days
        (HOURS, 24 * 120, "none"),  # too few steps for any group
    ],
)
def test_auto_grouping_needs_every_month_or_season_of_the_year(train, min_steps, want):
    assert choose_group(train, min_steps) == want
    assert choose_group(train, min_steps, "none") == "none"


def test_a_requested_group_the_train_split_does_not_cover_is_an_error():
    with pytest.raises(
        ValueError, match=r"qdm group 'month'.*months \[5, 6, 7, 8, 9, 10, 11, 12\]"
    ):
        choose_group(HOURS[: 24 * 100], 48, "month")


def test_jitter_replaces_only_dry_values_below_the_threshold_reproducibly():
    x = np.tile(np.array([0.0, 0.005, 0.02, np.nan, 3.0], np.float32), (2, 3, 1))
    a, b = jitter_dry(x, 0.01, 7), jitter_dry(x, 0.01, 7)
    np.testing.assert_array_equal(a, b)
    assert np.all((a[..., :2] > 0) & (a[..., :2] < 0.01))
    np.testing.assert_array_equal(a[..., 2:], x[..., 2:])
    np.testing.assert_array_equal(jitter_dry(x[:, 1:], 0.01, 7, row0=1), a[:, 1:])  # per row
    assert jitter_dry(x, 0.0, 7) is x


def _series(steps: int, shape=(3, 4), seed=0):
    rng = np.random.default_rng(seed)
    return rng.gamma(0.6, 2.0, (steps, *shape)).astype(np.float32)


def test_qdm_corrects_a_multiplicative_bias_per_cell_and_keeps_dry_cells_nearly_dry():
    """hist is ref scaled by a cell-dependent factor: QDM undoes it, cell by cell."""
    times = HOURS[:600]
    ref = _series(600)
    factor = np.linspace(0.5, 2.0, 12, dtype=np.float32).reshape(3, 4)
    hist = ref * factor
    sim = hist[400:].copy()
    sim[:, 0, 0] = 0.0
    out = qdm_cells(
        ref[:400], hist[:400], sim, times[:400], times[400:],
        multiplicative=True, group="none", quantiles=50, dry_threshold=0.01,
    )  # fmt: skip
    assert out.shape == sim.shape and out.dtype == np.float32
    want = ref[400:].mean(axis=0)
    np.testing.assert_allclose(out[:, 1:].mean(axis=0), want[1:], rtol=0.15)
    np.testing.assert_allclose(out.mean(axis=0)[0, 1:], want[0, 1:], rtol=0.15)
    # a cell dry throughout the predicted period stays at most drizzle: its jittered dry values
    # get the cell's low-quantile factor (here 1/0.5) and whatever stays below the threshold is 0
    assert out[:, 0, 0].max() < 2.5 * 0.01 and (out[:, 0, 0] == 0).mean() > 0.3
    assert np.all(out >= 0)


def test_qdm_additive_fit_removes_an_offset_and_keeps_nan():
    times = HOURS[:500]
    ref = 280.0 + random_field((500, 2, 3), seed=1).astype(np.float32)
    hist = ref + 3.0
    sim = hist[300:].copy()
    sim[5, 1, 2] = np.nan
    out = qdm_cells(
        ref[:300], hist[:300], sim, times[:300], times[300:],
        multiplicative=False, group="none", quantiles=30,
    )  # fmt: skip
    assert np.isnan(out[5, 1, 2]) and np.isfinite(np.delete(out.ravel(), 5 * 6 + 5)).all()
    assert abs(float(np.nanmean(out - ref[300:]))) < 0.1


def test_band_bicubic_equals_the_whole_fields_rows():
    lr = random_field((3, 12, 10), seed=2, nan_fraction=0.05).astype(np.float32)
    whole = bicubic_prediction(lr[:, None], 4, ["precipitation"])[:, 0]
    for start, stop in qdm_predict.bands(48, 4, 40, 4 * 40 * 3):
        band = qdm_predict.band_bicubic(lr, 4, start, stop, "precipitation")
        np.testing.assert_array_equal(band, whole[:, start * 4 : stop * 4])


def test_qdm_predict_in_bands_equals_one_band_and_beats_bicubic_bias():
    """The prepared toy dataset predicted with tiny bands (one LR row each) equals the one-band
    prediction, and QDM removes most of bicubic's mean bias on the test split."""
    cfg = validate_config({**TINY_CAMPAIGN, "methods": {"qdm": {"quantiles": 20}, "unet": None}})
    prep = PreparedDataset(create_prepared_test_data(scale=cfg.scale))
    test = prep.split("test")
    names = cfg.variable_names
    lr = test.lr_stack(names)
    baseline = qdm_predict.predict(prep, cfg, "qdm")
    assert baseline.whole_series and baseline.needs_times and baseline.margin is None
    one = baseline(lr, test.times)
    small = validate_config(
        {**TINY_CAMPAIGN, "methods": {"qdm": {"quantiles": 20, "band_cells": 10_000}, "unet": None}}
    )
    many = qdm_predict.predict(prep, small, "qdm")(lr, test.times)
    assert one.shape == (test.sizes["time"], len(cfg.variables), test.sizes["y"], test.sizes["x"])
    np.testing.assert_array_equal(many, one)  # bands bound memory, not the result
    assert method_kind("qdm") == "baseline"
    truth = test.hr_stack(names)
    bic = bicubic_prediction(test.lr_stack(names), cfg.scale, [v.kind for v in cfg.variables])
    for i in range(len(names)):
        assert np.isfinite(one[:, i]).all()
        spread_q = np.nanstd(one[:, i] - truth[:, i])
        spread_b = np.nanstd(bic[:, i] - truth[:, i])
        assert spread_q < 2.0 * spread_b
