"""Streaming statistics: exact moments over the train split only, quantiles, bicubic in numpy."""

import numpy as np
import pytest
import xarray as xr

from climai.preprocess.interp import bicubic_at
from climai.preprocess.stats import (
    lattice_stride,
    normalisation_stats,
    streaming_stats,
    weighted_quantiles,
)
from climai.testing import random_field


def _da(values, chunk=3):
    t, ny, nx = values.shape
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={"time": np.arange(t), "y": np.arange(ny) * 1.0, "x": np.arange(nx) * 1.0},
        name="hr_v",
    ).chunk({"time": chunk})


def test_moments_and_quantiles_equal_numpy_over_train_only():
    values = 280 + 5 * random_field((12, 16, 16), seed=7, nan_fraction=0.1)
    values[8:] = 1e4  # val/test steps: any leak moves mean, std and the top quantiles
    train = np.arange(12) < 8
    stats = normalisation_stats(_da(values), xr.DataArray(train, dims="time"), "temperature", 4)
    tv = values[:8][np.isfinite(values[:8])].astype(np.float64)
    assert stats["count"] == tv.size
    assert stats["mean"] == pytest.approx(tv.mean(), rel=1e-9)
    assert stats["std"] == pytest.approx(tv.std(), rel=1e-6)
    q = stats["quantiles"]
    assert len(q["probabilities"]) == 101 and q["space"] == "transformed"
    np.testing.assert_allclose(q["hr"], np.quantile(tv, q["probabilities"]), rtol=1e-6)


def test_stats_are_in_transformed_space_and_bicubic_quantiles_match_torch():
    import torch

    from climai.models.interpolate import upsample

    values = np.abs(random_field((6, 16, 16), seed=8)) * 3
    da = _da(values, chunk=2)
    stats = normalisation_stats(da, xr.DataArray(np.ones(6, bool), dims="time"), "precipitation", 4)
    t = np.log1p(values.astype(np.float64))
    assert stats["transform"] == "log1p" and stats["offset"] == 1.0
    assert stats["mean"] == pytest.approx(t.mean(), rel=1e-6)
    lr = values.reshape(6, 4, 4, 4, 4).mean(axis=(2, 4))
    bic = upsample(torch.from_numpy(lr.astype(np.float32))[None], 4, "bicubic")[0].numpy()
    expected = np.quantile(np.log1p(np.clip(bic, 0, None)), stats["quantiles"]["probabilities"])
    np.testing.assert_allclose(stats["quantiles"]["lr_bicubic"], expected, rtol=1e-5, atol=1e-6)


def test_sampled_quantiles_stay_within_their_rank_error():
    values = random_field((16, 64, 64), seed=9) ** 2  # skewed: rank errors show in the tail
    train = xr.DataArray(np.ones(16, bool), dims="time")
    hr = _da(values, chunk=4)
    lr = hr.coarsen(y=4, x=4).mean()
    assert lattice_stride(4 * 64 * 64, 4, sample=1024) > 1  # the lattice really samples
    (stats,) = __import__("dask").compute(
        streaming_stats(hr, lr, train.values, "generic", 4, 101, sample=1024)
    )
    flat = np.sort(values.ravel())
    ranks = np.searchsorted(flat, stats["quantiles"]["hr"]) / flat.size
    probs = np.asarray(stats["quantiles"]["probabilities"])
    assert np.abs(ranks - probs)[1:-1].max() < 0.02
    assert stats["mean"] == pytest.approx(values.astype(np.float64).mean(), rel=1e-6)


def test_weighted_quantiles_equal_numpy_with_unit_weights():
    v = np.sort(random_field((101,), seed=10).astype(np.float64))
    p = np.linspace(0, 1, 11)
    np.testing.assert_allclose(weighted_quantiles(v, np.ones(v.size), p), np.quantile(v, p))


def test_no_train_variance_is_a_clear_error():
    values = np.full((4, 8, 8), 3.0, np.float32)
    with pytest.raises(ValueError, match="'v': the train split has no valid values or no variance"):
        normalisation_stats(_da(values), xr.DataArray(np.ones(4, bool), dims="time"), "generic", 2)


def test_numpy_bicubic_equals_torch_upsample_with_nan_cells():
    import torch

    from climai.models.interpolate import upsample

    lr = random_field((3, 5, 7), seed=11, nan_fraction=0.2)
    ref = upsample(torch.from_numpy(lr)[None], 4, "bicubic")[0].numpy()
    np.testing.assert_allclose(bicubic_at(lr, 4), ref, atol=2e-6)
    rows, cols = np.arange(1, 20, 3), np.arange(0, 28, 5)
    np.testing.assert_allclose(bicubic_at(lr, 4, rows, cols), ref[:, rows][:, :, cols], atol=2e-6)
