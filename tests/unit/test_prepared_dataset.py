"""The prepared dataset's accessor: its keys, its splits, its LR grid and its errors."""

import numpy as np
import pytest
import xarray as xr

from climai.data.prepared import (
    PreparedDataset,
    hr_key,
    lr_key,
    split_code,
    stack_into,
    static_key,
    static_names,
)
from climai.io.cf import CF_KEYS
from climai.preprocess.splits import SPLITS
from climai.testing import create_prepared_test_data


@pytest.fixture(scope="module")
def prep() -> PreparedDataset:
    return PreparedDataset(create_prepared_test_data(steps=20, scale=8))


def test_keys_spell_the_store_layout(prep):
    assert (hr_key("tas"), lr_key("tas"), static_key("lsm")) == ("hr_tas", "lr_tas", "static_lsm")
    assert {hr_key("pr"), lr_key("pr"), static_key("orography")} <= set(prep.ds.data_vars)


def test_variables_and_statics_are_read_from_the_store(prep):
    assert prep.variables == ["tas", "pr"]
    assert prep.statics == ["lsm", "orography"] == static_names(prep.ds)
    assert prep.scale == 8


def test_split_codes_index_splits():
    assert [split_code(s) for s in SPLITS] == [0, 1, 2]


def test_a_contiguous_split_is_a_slice_that_keeps_the_chunks(prep):
    labels = prep.ds["split"].values
    steps = prep.split_steps("val")
    assert isinstance(steps, slice)
    np.testing.assert_array_equal(np.arange(20)[steps], np.flatnonzero(labels == 1))
    val = prep.split("val")
    assert val.sizes["time"] == prep.split_size("val") == 4
    assert val.hr("tas").chunks == prep.hr("tas")[steps].chunks
    xr.testing.assert_identical(val.ds, prep.ds.isel(time=np.flatnonzero(labels == 1)))


def test_a_split_with_gaps_is_an_index_array(prep):
    labels = np.zeros(20, np.int8)
    labels[[3, 7, 8]] = split_code("test")
    gappy = PreparedDataset(prep.ds.assign(split=("time", labels)))
    steps = gappy.split_steps("test")
    assert not isinstance(steps, slice)
    np.testing.assert_array_equal(steps, [3, 7, 8])
    np.testing.assert_array_equal(gappy.split("test").times, prep.times[[3, 7, 8]])


def test_stacks_put_variables_on_axis_1(prep):
    test = prep.split("test")
    hr, lr, static = (
        test.hr_stack(["pr", "tas"]),
        test.lr_stack(["tas"]),
        test.static_stack(["lsm"]),
    )
    assert hr.shape == (4, 2, 32, 32) and lr.shape == (4, 1, 4, 4) and static.shape == (1, 32, 32)
    np.testing.assert_array_equal(hr[:, 0], test.hr("pr").values)
    np.testing.assert_array_equal(lr[:, 0], test.lr("tas").values)


def test_stack_into_reads_each_chunk_into_its_slot_from_dask_and_from_memory():
    """Every chunk of a dask array (chunked along time and space) lands where ``np.stack``
    puts it, the same from in-memory arrays; mixed dtypes promote as ``np.stack`` does."""
    rng = np.random.default_rng(4)
    a = xr.DataArray(rng.random((6, 10, 12), np.float32), dims=("time", "y", "x"))
    b = xr.DataArray(rng.random((6, 10, 12)), dims=("time", "y", "x"))  # float64
    want = np.stack([a.values, b.values], axis=1)
    chunked = [a.chunk({"time": 4, "y": 3, "x": 5}), b.chunk({"time": 2, "y": 10, "x": 7})]
    for arrays in ([a, b], chunked, [chunked[0], b]):
        got = stack_into(arrays)
        assert got.dtype == np.float64 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    one = stack_into([chunked[0]])
    assert one.dtype == np.float32
    np.testing.assert_array_equal(one[:, 0], a.values)


def test_lr_dataset_is_on_the_block_centres_of_the_hr_grid(prep):
    lr = prep.split("test").lr_dataset(["tas", "pr"])
    assert lr["pr"].dims == ("time", "y", "x") and lr["pr"].shape == (4, 4, 4)
    for axis in ("y", "x"):
        hr_coord = prep.ds[axis].values
        np.testing.assert_allclose(lr[axis].values, hr_coord.reshape(-1, 8).mean(axis=1), rtol=0)
        assert lr[axis].attrs == prep.ds[axis].attrs
    np.testing.assert_array_equal(lr["tas"].values, prep.split("test").lr("tas").values)
    assert lr["tas"].attrs.items() >= prep.cf_attrs("tas").items()
    assert "crs" in lr


def test_cf_attrs_are_the_cf_keys_of_the_hr_variable(prep):
    attrs = prep.hr("pr").attrs
    assert prep.cf_attrs("pr") == {k: attrs[k] for k in CF_KEYS if k in attrs}
    assert prep.cf_attrs("pr")["units"] == "mm h-1"
    assert "cell_methods" not in prep.cf_attrs("pr") and "cell_methods" in prep.lr("pr").attrs


def test_statics_dataset_renames_the_static_fields(prep):
    static = prep.statics_dataset(["orography"])
    assert list(static.data_vars) == ["orography"]
    np.testing.assert_array_equal(static["orography"].values, prep.static("orography").values)


@pytest.mark.parametrize(
    ("get", "message"),
    [
        (lambda p: p.hr("uas"), r"no variable 'uas' \(hr_uas\); it has \['tas', 'pr'\]"),
        (lambda p: p.lr("uas"), r"no LR variable 'uas' \(lr_uas\); it has \['tas', 'pr'\]"),
        (
            lambda p: p.static("dem"),
            r"no static field 'dem' \(static_dem\); it has \['lsm', 'orography'\]",
        ),
        (lambda p: p.cf_attrs("uas"), r"no variable 'uas'"),
    ],
)
def test_an_unknown_name_is_named_with_the_valid_ones(prep, get, message):
    with pytest.raises(KeyError, match=message):
        get(prep)


def test_an_unknown_split_is_named_with_the_valid_ones(prep):
    with pytest.raises(
        ValueError, match=r"unknown split 'validation'; .*\['train', 'val', 'test'\]"
    ):
        prep.split("validation")
