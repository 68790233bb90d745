import warnings

import numpy as np
import pytest
import xarray as xr
from pydantic import ValidationError

from climai.config import ConfigError, validate_config
from climai.config.grid import SplitConfig
from climai.grids import GridError
from climai.preprocess import (
    coarsen_block_mean,
    make_split_labels,
    normalisation_stats,
    split_labels,
)
from climai.preprocess.splits import SPLITS
from climai.stages.preprocess import build_dataset, compute_stats
from climai.testing import create_test_data, random_field
from climai.variables import transform_for


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
    stats = compute_stats(ds, {"tas": "temperature", "pr": "precipitation"}, 8)
    assert set(stats["static"]) == {"orography", "lsm"}
    assert stats["splits"]["train"][0].startswith(str(target["time"].values[0])[:13])


@pytest.mark.parametrize("fraction", [0.25, 0.75, 1.0])
def test_min_valid_fraction_decides_which_lr_cells_are_valid(fraction):
    values = random_field((2, 16, 16), seed=4)
    blocks_view = values.reshape(2, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(32, 16)
    for b in range(32):  # block b has b % 17 NaN cells: every valid count 0..16 occurs
        blocks_view[b, : b % 17] = np.nan
    values = blocks_view.reshape(2, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(2, 16, 16)
    out = coarsen_block_mean(_da(values), 4, min_valid_fraction=fraction).values
    blocks = values.reshape(2, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(2, 4, 4, 16)
    count = np.isfinite(blocks).sum(-1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.where(count >= fraction * 16, np.nanmean(blocks, axis=-1), np.nan)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    # valid iff at least fraction × 16 of the 16 HR cells are: count the valid LR cells directly
    assert np.isfinite(out).sum() == sum(16 - b % 17 >= fraction * 16 for b in range(32))


def test_block_mean_fast_path_agrees_with_masked_path():
    values = random_field((1, 16, 16), seed=5)
    clean = coarsen_block_mean(_da(values), 4).values
    values[0, 0, 0] = np.nan  # forces the masked path for the whole array
    holed = coarsen_block_mean(_da(values), 4).values
    np.testing.assert_array_equal(clean[0, 1:], holed[0, 1:])  # bitwise, other cells untouched
    np.testing.assert_array_equal(clean[0, 0, 1:], holed[0, 0, 1:])


def test_split_gap_leaves_steps_out():
    labels = split_labels(20, {"train": 0.5, "val": 0.25, "test": 0.25}, gap=2)
    assert labels.tolist() == [0] * 10 + [-1] * 2 + [1] * 3 + [-1] * 2 + [2] * 3


def test_gap_that_empties_a_split_is_an_error():
    with pytest.raises(ValueError, match="'val'.*minus a gap of 3.*would be empty"):
        split_labels(20, {"train": 0.8, "val": 0.1, "test": 0.1}, gap=3)


def test_split_by_iso_time_ranges():
    times = np.arange("2016-09-28T14:00", "2016-09-28T20:00", 15, dtype="datetime64[m]")
    labels = make_split_labels(
        times,
        {
            "train": ["2016-09-28T14:45", "2016-09-28T17:00"],
            "val": ["2016-09-28T17:30", "2016-09-28T18:00"],
            "test": ["2016-09-28T18:15", "2016-09-28T19:45"],
        },
    )
    t = times.astype(str)
    assert (labels[(t >= "2016-09-28T14:45") & (t <= "2016-09-28T17:00")] == 0).all()
    assert labels[t == "2016-09-28T17:00"][0] == 0  # both ends inclusive
    assert labels[t == "2016-09-28T17:15"][0] == -1  # between ranges: unused
    assert labels.tolist().count(1) == 3 and labels.tolist().count(2) == 7
    assert (labels[t < "2016-09-28T14:45"] == -1).all()


def test_time_range_without_data_is_an_error():
    times = np.arange("2016-09-28T14:00", "2016-09-28T16:00", 15, dtype="datetime64[m]")
    with pytest.raises(ValueError, match=r"split 'test' \['2016-09-29T00:00'.*holds no time step"):
        make_split_labels(
            times,
            {
                "train": ["2016-09-28T14:00", "2016-09-28T15:00"],
                "val": ["2016-09-28T15:15", "2016-09-28T15:45"],
                "test": ["2016-09-29T00:00", "2016-09-29T01:00"],
            },
        )


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (
            {
                "train": ["2016-09-28T14:45", "2016-09-28T17:00"],
                "val": ["2016-09-28T16:00", "2016-09-28T18:00"],
                "test": ["2016-09-28T19:00", "2016-09-28T20:00"],
            },
            r"split.train=.*and split.val=.* overlap",
        ),
        (
            {"train": ["2016-09-28T14:45", "2016-09-28T17:00"], "val": 0.1, "test": 0.2},
            "as fractions or all as",
        ),
        (
            {
                "train": ["2016-09-28T18:00", "2016-09-28T17:00"],
                "val": ["2016-09-28T18:30", "2016-09-28T19:00"],
                "test": ["2016-09-28T19:30", "2016-09-28T20:00"],
            },
            "last time is before first time",
        ),
        (
            {
                "train": ["yesterday", "2016-09-28T17:00"],
                "val": ["2016-09-28T18:30", "2016-09-28T19:00"],
                "test": ["2016-09-28T19:30", "2016-09-28T20:00"],
            },
            "not a pair of ISO 8601 times",
        ),
    ],
)
def test_bad_split_config_is_a_clear_error(split, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"split": split})


@pytest.mark.parametrize("kind", ["precipitation", "temperature", "generic"])
def test_transform_round_trip_within_1e6_relative(kind):
    import torch

    tr = transform_for(kind)
    x = np.abs(random_field((4, 16, 16), seed=6)).astype(np.float64) * 20
    if kind == "temperature":
        x += 250
    np.testing.assert_allclose(tr.inverse(tr.forward(x)), x, rtol=1e-6, atol=0)
    x32 = torch.from_numpy(x.astype(np.float32))
    np.testing.assert_allclose(
        tr.inverse(tr.forward(x32)).numpy(), x32.numpy(), rtol=1e-6, atol=1e-12
    )


def test_a_date_as_the_last_time_of_a_split_is_the_whole_day():
    """Splits by calendar day on hourly data: ["2021-01-01", "2021-01-01"] is that whole day, as
    in xarray's sel; it was 00:00 alone, leaving 23 of every 24 steps silently unused."""
    times = np.arange("2021-01-01T00", "2021-01-04T00", dtype="datetime64[h]")
    days = {s: [f"2021-01-0{i}", f"2021-01-0{i}"] for i, s in enumerate(SPLITS, start=1)}
    labels = make_split_labels(times, days)
    assert labels.tolist() == [0] * 24 + [1] * 24 + [2] * 24
    hour = {**days, "test": ["2021-01-03T00", "2021-01-03T05"]}  # an hour: the whole hour
    assert make_split_labels(times, hour).tolist().count(2) == 6
    with pytest.raises(ValidationError, match="overlap"):  # the day 01-02 holds 01-02T12
        SplitConfig(**{**days, "test": ["2021-01-02T12:00", "2021-01-03"]})
