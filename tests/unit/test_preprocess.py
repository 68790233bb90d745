import numpy as np
import pytest
import xarray as xr

from climai.grids import GridError
from climai.preprocess import coarsen_block_mean, normalisation_stats, split_labels
from climai.preprocess.stage import build_dataset, compute_stats
from climai.testing import create_test_data, random_field


def _da(values):
    t, ny, nx = values.shape
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={"time": np.arange(t), "y": np.arange(ny) * 1.0, "x": np.arange(nx) * 1.0},
        name="v",
    )


def test_block_mean_with_nan_holes_matches_numpy():
    values = random_field((3, 16, 24), seed=1, nan_fraction=0.3)
    out = coarsen_block_mean(_da(values).chunk({"time": 1}), 4, min_valid_fraction=0.5).values
    blocks = values.reshape(3, 4, 4, 6, 4).transpose(0, 1, 3, 2, 4).reshape(3, 4, 6, 16)
    count = np.isfinite(blocks).sum(-1)
    expected = np.where(count >= 8, np.nanmean(blocks, axis=-1), np.nan)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    assert np.isnan(out).sum() == (count < 8).sum() > 0


def test_block_mean_coordinates_are_block_centres():
    out = coarsen_block_mean(_da(np.ones((1, 8, 8), np.float32)), 4)
    np.testing.assert_allclose(out["x"].values, [1.5, 5.5])


def test_block_mean_rejects_grid_not_multiple_of_scale():
    with pytest.raises(GridError, match="not a multiple of scale=4"):
        coarsen_block_mean(_da(np.ones((1, 10, 8), np.float32)), 4)


def test_split_labels_are_contiguous_in_time_order():
    labels = split_labels(100, {"train": 0.7, "val": 0.1, "test": 0.2})
    assert labels.tolist() == [0] * 70 + [1] * 10 + [2] * 20


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="'val'.*would be empty"):
        split_labels(5, {"train": 0.85, "val": 0.05, "test": 0.1})


def test_stats_use_the_train_split_only():
    values = np.zeros((10, 4, 4), np.float32)
    values[:6] = 1.0 + random_field((6, 4, 4), seed=2)
    values[6:] = 1000.0  # would dominate any statistic that leaked val/test in
    is_train = xr.DataArray(np.arange(10) < 6, dims="time")
    stats = normalisation_stats(_da(values), is_train, "temperature")
    assert stats["mean"] == pytest.approx(values[:6].mean(), rel=1e-6)
    assert stats["std"] == pytest.approx(values[:6].std(), rel=1e-5)


def test_precipitation_stats_are_in_log1p_space():
    values = np.abs(random_field((4, 4, 4), seed=3))
    stats = normalisation_stats(
        _da(values), xr.DataArray(np.ones(4, bool), dims="time"), "precipitation"
    )
    assert stats["transform"] == "log1p"
    assert stats["mean"] == pytest.approx(np.log1p(values).mean(), rel=1e-6)


def test_dataset_holds_hr_lr_static_and_split():
    target, static = create_test_data(nx=32, ny=32, steps=20)
    ds = build_dataset(
        target,
        static,
        {"tas": "temperature", "pr": "precipitation"},
        8,
        {"train": 0.6, "val": 0.2, "test": 0.2},
    )
    assert ds["hr_tas"].shape == (20, 32, 32)
    assert ds["lr_tas"].dims == ("time", "y_lr", "x_lr") and ds["lr_tas"].shape == (20, 4, 4)
    np.testing.assert_allclose(
        ds["lr_pr"].values[3, 1, 2], target["pr"].values[3, 8:16, 16:24].mean(), rtol=1e-5
    )
    assert set(ds["split"].values.tolist()) == {0, 1, 2}
    stats = compute_stats(ds, {"tas": "temperature", "pr": "precipitation"})
    assert set(stats["static"]) == {"orography", "lsm"}
    assert stats["splits"]["train"][0].startswith(str(target["time"].values[0])[:13])
