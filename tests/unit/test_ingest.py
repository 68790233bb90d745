"""Ingest of file sources on tiny seeded grids: readers, units, converters, grids, bad input."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from pyproj import CRS

from climai import synthetic
from climai.config import ConfigError, validate_config
from climai.converters import dbz_to_rain_rate, get_converter
from climai.grids import Grid, GridError
from climai.io import open_store
from climai.io.readers import SourceError, expand_paths, open_source
from climai.stages import StageContext
from climai.stages.ingest import IngestError, describe_times
from climai.stages.ingest import run as run_ingest
from climai.synthetic import TOY_CRS, toy_world
from climai.testing import random_field, write_cf_netcdf, write_toy_series
from climai.units import UnitsError, convert

PR = {"name": "pr", "units": "mm h-1", "kind": "precipitation"}
XY_STATIC = {"xk": {"source": "derived", "field": "x"}}


def campaign(target: dict[str, Any], **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "campaign": "t",
        "variables": [PR],
        "data": {"target": target, "static": XY_STATIC},
    }
    raw.update(extra)
    return raw


def ingest(raw: dict[str, Any]) -> tuple[xr.Dataset, xr.Dataset]:
    cfg = validate_config(raw)
    ctx = StageContext(cfg, "0" * 64, "ingest", 1)
    run_ingest(ctx)
    return open_store(ctx.paths.target), open_store(ctx.paths.static)


def assert_fails_without_output(raw: dict[str, Any], match: str) -> str:
    """Ingest fails with one line matching ``match``, and no store (or temporary) is left."""
    with pytest.raises((IngestError, ConfigError)) as err:
        ingest(raw)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert re.search(match, msg), msg
    results = Path("results")
    assert not results.exists() or not any(results.rglob("*.zarr")), list(results.rglob("*"))
    assert not results.exists() or not any(p.name.startswith(".") for p in results.rglob("*"))
    return msg


# --- units and converters -----------------------------------------------------------------


def test_temperature_kelvin_celsius_round_trip():
    da = xr.DataArray(np.array([273.15, 300.0], dtype=np.float32), attrs={"units": "K"})
    c = convert(da, "degC", "tas")
    np.testing.assert_allclose(c.values, [0.0, 26.85], atol=1e-4)
    assert c.attrs["units"] == "degC"
    np.testing.assert_allclose(convert(c, "K", "tas").values, da.values, atol=1e-4)


def test_rate_units_convert_by_factor():
    da = xr.DataArray(np.array([1.0], dtype=np.float32), attrs={"units": "kg m-2 s-1"})
    np.testing.assert_allclose(convert(da, "mm h-1", "pr").values, [3600.0])
    np.testing.assert_allclose(convert(da, "mm/day", "pr").values, [86400.0])


def test_impossible_conversion_names_variable_and_both_units():
    da = xr.DataArray(np.zeros(2, dtype=np.float32), attrs={"units": "K"})
    with pytest.raises(UnitsError, match=r"variable 'pr'.*cannot convert 'K'.*to 'mm h-1'"):
        convert(da, "mm h-1", "pr")


def test_unknown_units_are_named():
    da = xr.DataArray(np.zeros(2, dtype=np.float32), attrs={"units": "bananas"})
    with pytest.raises(UnitsError, match=r"variable 'pr': unknown units 'bananas'; known units"):
        convert(da, "mm h-1", "pr")


def test_dbz_to_rain_rate_matches_z_r_relation_and_no_echo():
    dbz = xr.DataArray(
        np.array([-32.0, -40.0, 0.0, 20.0, 45.5, np.nan]), attrs={"units": "dBZ"}, name="dbz"
    )
    r = dbz_to_rain_rate(dbz, a=223.0, b=1.53).values
    expected = (10 ** (np.array([0.0, 20.0, 45.5]) / 10) / 223.0) ** (1 / 1.53)
    assert r[0] == 0.0 and r[1] == 0.0
    np.testing.assert_allclose(r[2:5], expected, rtol=1e-5)
    assert np.isnan(r[5])
    assert get_converter("dbz_to_rain_rate") is dbz_to_rain_rate
    with pytest.raises(
        ValueError, match=r"unknown converter 'nope'; valid converters: dbz_to_rain_rate"
    ):
        get_converter("nope")


def test_a_converter_name_or_parameter_is_checked_before_any_job():
    """The workflow (and climai validate) check the converters when the config is read: an
    unknown converter lists the valid ones, an unknown parameter the converter's own."""
    from climai.converters import check_converters

    pr = {**PR, "source_name": "dbz"}
    target = {"source": "netcdf", "path": "r.nc"}

    def check(converter: dict) -> None:
        check_converters(
            validate_config(campaign(target, variables=[{**pr, "converter": converter}]))
        )

    with pytest.raises(
        ConfigError,
        match=r"config key 'variables.0.converter' \(pr\): unknown converter 'dbz_to_rain'; "
        r"valid converters: dbz_to_rain_rate",
    ):
        check({"name": "dbz_to_rain"})
    with pytest.raises(
        ConfigError,
        match=r"converter 'dbz_to_rain_rate' has no parameter\(s\) \['pressure'\]; parameters: "
        r"a, b, no_echo_dbz",
    ):
        check({"name": "dbz_to_rain_rate", "params": {"a": 223, "pressure": 1000}})
    check({"name": "dbz_to_rain_rate", "params": {"a": 223}})


def test_dbz_converter_refuses_other_units():
    with pytest.raises(UnitsError, match=r"needs reflectivity in 'dBZ'.*'mm h-1'"):
        dbz_to_rain_rate(xr.DataArray([1.0], attrs={"units": "mm h-1"}, name="pr"))


# --- grids and times ----------------------------------------------------------------------


def test_grid_with_decreasing_y_subsets_trims_and_has_north_up_transform():
    grid = Grid(np.arange(20) * 2.0 + 1, 100.0 - np.arange(19) * 2.0, TOY_CRS.to_wkt())
    ys, xs = grid.domain_slices((4.0, 30.0), (70.0, 99.0))
    assert (ys, xs) == (slice(1, 16), slice(2, 15))
    a, _, c, _, e, f = grid.transform()
    assert (a, c, e, f) == (2.0, 0.0, -2.0, 101.0)
    trimmed, cut = grid.trim_to_multiple(8)
    assert trimmed.shape == (16, 16) and cut == (3, 4)
    with pytest.raises(GridError, match=r"domain x: \[500, 600\] holds 0 cell"):
        grid.domain_slices((500.0, 600.0), (70.0, 99.0))


def test_describe_times_finds_the_usual_step_and_irregular_ones():
    info = describe_times(pd.date_range("2020-01-01", periods=6, freq="5min"))
    assert info.regular and info.step_seconds == 300.0
    irregular = pd.DatetimeIndex(["2020-01-01 00:00", "2020-01-01 00:05", "2020-01-01 00:15"])
    info = describe_times(irregular)
    assert not info.regular and info.irregular_steps == 1 and info.step_seconds == 300.0


# --- sources ------------------------------------------------------------------------------


def test_multifile_glob_is_sorted_and_equals_the_toy_world(in_tmp):
    paths = write_toy_series(in_tmp / "in", n_files=3, steps_per_file=8, nx=32, ny=24)
    # a list in the wrong order must come back sorted by time
    target, static = ingest(
        campaign({"source": "netcdf", "path": [str(p) for p in reversed(paths)]})
    )
    truth, _ = toy_world(seed=0, nx=32, ny=24, steps=24)
    assert target["pr"].shape == (24, 24, 32)
    np.testing.assert_array_equal(target["time"].values, truth["time"].values)
    np.testing.assert_allclose(target["pr"].values, truth["pr"].values, rtol=1e-6)
    assert target.attrs["time_step_seconds"] == 3600.0 and target.attrs["time_regular"] == 1
    assert CRS.from_wkt(target["crs"].attrs["crs_wkt"]) == TOY_CRS
    assert CRS.from_wkt(static["crs"].attrs["crs_wkt"]) == TOY_CRS
    assert target["pr"].attrs["units"] == "mm h-1" and target["pr"].attrs["grid_mapping"] == "crs"
    # derived static: x in km from the domain centre
    xk = static["xk"].values
    np.testing.assert_allclose(xk[0], (truth["x"].values - truth["x"].values.mean()) / 1000)
    # the glob form gives the same store
    again, _ = ingest(campaign({"source": "netcdf", "path": str(in_tmp / "in" / "toy_*.nc")}))
    np.testing.assert_array_equal(again["pr"].values, target["pr"].values)


@pytest.mark.parametrize(
    "domain, scale, expected",
    [
        (None, 8, (24, 24, 32)),  # 3 files of 8 steps, 24×32 cells, a multiple of 8
        (None, 16, (24, 16, 32)),  # trimmed to a multiple of 16 as ingest does
        ({"x": [4303000.0, 4313000.0], "y": [2601000.0, 2609000.0]}, 2, None),  # cut, trimmed
    ],
)
def test_target_shape_before_ingest_is_what_ingest_writes(in_tmp, domain, scale, expected):
    """The cost model sizes a fresh campaign from the headers (climai.io.headers.target_shape):
    the first file's grid cut and trimmed, the first file's steps times the number of files."""
    from climai.io.headers import SHAPES, check_headers, target_shape
    from climai.sizing import grid_shape

    write_toy_series(in_tmp / "in", n_files=3, steps_per_file=8, nx=32, ny=24)
    raw = campaign({"source": "netcdf", "path": str(in_tmp / "in" / "toy_*.nc")}, scale=scale)
    if domain is not None:
        raw["domain"] = domain
    cfg = validate_config(raw)
    assert not SHAPES.exists()
    check_headers(cfg)  # the header check opens the first file once and remembers the shape
    assert SHAPES.is_file()
    before = target_shape(cfg)
    assert grid_shape(cfg) == before
    if expected is not None:
        assert before == expected
    target, _ = ingest(raw)
    assert before == target["pr"].shape
    assert target_shape(cfg, cache=None) == before  # read again from the file, not the cache


def test_zarr_source_and_celsius_conversion(in_tmp):
    truth, _ = toy_world(seed=2, nx=16, ny=16, steps=8)
    store = truth.copy()
    store["t2m"] = (store["tas"] - 273.15).assign_attrs(units="degC", grid_mapping="crs")
    store[["t2m", "crs"]].to_zarr(in_tmp / "src.zarr", mode="w")
    raw = campaign({"source": "zarr", "path": str(in_tmp / "src.zarr")}, scale=2)
    raw["variables"] = [{"name": "tas", "source_name": "t2m", "units": "K", "kind": "temperature"}]
    target, _ = ingest(raw)
    np.testing.assert_allclose(target["tas"].values, truth["tas"].values, atol=1e-4)
    assert target["tas"].attrs["source_units"] == "degC"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_v2_and_v3_sources_are_ingested(in_tmp, zarr_format):
    """A zarr v2 store (numcodecs compressors in its coordinates' encodings) is read and written
    to climai's v3 stores like a v3 one, with the same values (it crashed writing the stores)."""
    truth, _ = toy_world(seed=2, nx=16, ny=16, steps=8)
    truth[["pr", "crs"]].to_zarr(in_tmp / "src.zarr", mode="w", zarr_format=zarr_format)
    target, static = ingest(campaign({"source": "zarr", "path": str(in_tmp / "src.zarr")}, scale=2))
    np.testing.assert_allclose(target["pr"].values, truth["pr"].values, rtol=1e-6)
    np.testing.assert_array_equal(static["x"].values, truth["x"].values)


def test_accumulation_with_time_bounds_becomes_rate_and_nan_survives(in_tmp):
    times = pd.date_range("2021-07-01 00:05", periods=4, freq="5min")
    amount = np.abs(random_field((4, 16, 16), seed=3, nan_fraction=0.2))
    amount[2] = np.nan  # an all-NaN step: dropped and counted
    write_cf_netcdf(
        in_tmp / "acc.nc",
        {"acc": (amount, "kg m-2")},
        np.arange(16) * 1000.0,
        -np.arange(16) * 1000.0,
        crs="EPSG:3035",
        times=times,
        time_bounds=True,
    )
    raw = campaign({"source": "netcdf", "path": str(in_tmp / "acc.nc")}, scale=4)
    raw["variables"] = [{**PR, "source_name": "acc"}]
    target, _ = ingest(raw)
    kept = amount[[0, 1, 3]]
    np.testing.assert_allclose(target["pr"].values, kept * 12.0, rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(target["pr"].values), np.isnan(kept))
    assert target.attrs["time_steps_dropped_all_nan"] == 1
    assert target.attrs["time_regular"] == 0  # the gap left by the dropped step is reported
    assert target["y"].values[0] > target["y"].values[1]  # decreasing y kept as in the source


def test_latlon_grid_gets_wgs84(in_tmp):
    times = pd.date_range("2021-07-01", periods=3, freq="h")
    write_cf_netcdf(
        in_tmp / "ll.nc",
        {"pr": (np.ones((3, 8, 8)), "mm h-1")},
        10.0 + np.arange(8) * 0.1,
        47.0 - np.arange(8) * 0.1,
        times=times,
        x_name="lon",
        y_name="lat",
    )
    target, _static = ingest(campaign({"source": "netcdf", "path": str(in_tmp / "ll.nc")}, scale=4))
    assert CRS.from_wkt(target["crs"].attrs["crs_wkt"]).to_epsg() == 4326
    assert target["x"].attrs["units"] == "degrees_east" and target["pr"].dims == ("time", "y", "x")
    np.testing.assert_allclose(target["y"].values, 47.0 - np.arange(8) * 0.1)


def test_grib_without_extra_is_a_clear_error(in_tmp, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cfgrib" else real(name, *a)
    )
    (in_tmp / "f.grib2").write_bytes(b"GRIB")
    assert_fails_without_output(
        campaign({"source": "grib", "path": str(in_tmp / "f.grib2")}),
        r"source 'grib' needs cfgrib.*pip install 'climai\[grib\]'",
    )


def test_file_target_inherits_no_toy_keys_but_rejects_changed_ones():
    cfg = validate_config(
        campaign({"source": "netcdf", "path": "a.nc", "nx": 128, "dx": 500.0, "steps": 480})
    )
    assert cfg.data.target.source == "netcdf"
    with pytest.raises(ConfigError, match=r"data.target.netcdf.nx"):
        validate_config(campaign({"source": "netcdf", "path": "a.nc", "nx": 64}))
    with pytest.raises(
        ConfigError,
        match=r"'data.target.netcdf.pth' is not known \(did you mean "
        r"'path'\?\); allowed here: variable, units, crs, missing_value, negative_tolerance, source, path",
    ):
        validate_config(campaign({"source": "netcdf", "path": "a.nc", "pth": "b.nc"}))
    with pytest.raises(
        ConfigError, match=r"unknown source 'hdf'; valid sources: synthetic .*, netcdf, zarr, grib"
    ):
        validate_config(campaign({"source": "hdf", "path": "a.nc"}))


def test_expand_paths_keeps_urls_and_rejects_duplicates(tmp_path):
    f = tmp_path / "a.nc"
    f.write_bytes(b"")
    assert expand_paths(["s3://bucket/x.zarr"], "k") == ["s3://bucket/x.zarr"]
    with pytest.raises(SourceError, match="more than once"):
        expand_paths([str(f), str(f)], "k")


def test_unknown_source_lists_readers():
    from climai.config import NetCDFSource

    spec = NetCDFSource(source="netcdf", path="x.nc").model_copy(update={"source": "hdf4"})
    with pytest.raises(
        SourceError, match=r"unknown reader 'hdf4'; valid readers: netcdf, zarr, grib"
    ):
        open_source(spec, ["pr"], "data.target")


# --- bad input: one clear line, nothing written -------------------------------------------


@pytest.fixture
def series(in_tmp: Path) -> list[Path]:
    return write_toy_series(in_tmp / "in", n_files=2, steps_per_file=4, nx=16, ny=16)


def test_missing_file(series):
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": [str(series[0]), "in/nothere.nc"]}),
        r"data.target.path: file 'in/nothere.nc' does not exist",
    )


def test_empty_glob(series):
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "in/*.grb"}),
        r"data.target.path: glob 'in/\*.grb' matches no file",
    )


def test_variable_not_in_file_lists_the_variables(series):
    raw = campaign({"source": "netcdf", "path": "in/*.nc"})
    raw["variables"] = [{**PR, "source_name": "precip"}]
    assert_fails_without_output(raw, r"variable 'precip' is not in .*; variables there: pr, tas")


def test_unknown_units(in_tmp):
    write_cf_netcdf(
        in_tmp / "u.nc",
        {"pr": (np.ones((2, 8, 8)), "bananas")},
        np.arange(8) * 1000.0,
        np.arange(8) * 1000.0,
        crs="EPSG:3035",
        times=pd.date_range("2021-01-01", periods=2, freq="h"),
    )
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "u.nc"}, scale=4),
        r"variable 'pr' in data.target 'u.nc': unknown units 'bananas'",
    )


def test_impossible_units(in_tmp):
    write_cf_netcdf(
        in_tmp / "k.nc",
        {"pr": (np.ones((2, 8, 8)), "K")},
        np.arange(8) * 1000.0,
        np.arange(8) * 1000.0,
        crs="EPSG:3035",
        times=pd.date_range("2021-01-01", periods=2, freq="h"),
    )
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "k.nc"}, scale=4),
        r"variable 'pr' in .*cannot convert 'K' \(temperature\) to 'mm h-1'",
    )


def test_non_monotonic_times(in_tmp):
    times = pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 02:00", "2021-01-01 01:00"])
    write_cf_netcdf(
        in_tmp / "t.nc",
        {"pr": (np.ones((3, 8, 8)), "mm h-1")},
        np.arange(8) * 1000.0,
        np.arange(8) * 1000.0,
        crs="EPSG:3035",
        times=times,
    )
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "t.nc"}, scale=4),
        r"times in 't.nc' are not increasing: 2021-01-01T02:00:00 is followed by "
        r"2021-01-01T01:00:00",
    )


def test_duplicated_times_across_files(series, in_tmp):
    copy = in_tmp / "in" / "copy.nc"
    copy.write_bytes(series[1].read_bytes())
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "in/*.nc"}),
        r"files overlap in time: .* ends 2020-06-01T07:00:00 and .* starts 2020-06-01T04:00:00",
    )


def _rewrite(path: Path, change) -> None:
    with xr.open_dataset(path) as ds:
        out = change(ds.load())
    out.to_netcdf(path)


def test_a_file_of_a_series_in_other_units_is_converted_and_other_quantities_refused(series):
    """An archive that switched units part-way (mm h-1, then kg m-2 s-1) is read in the first
    file's units (it was refused, and before that read as the first's: a 3600× error); a file
    whose units are another quantity (K among mm h-1) is refused naming both files."""
    raw = campaign({"source": "netcdf", "path": "in/*.nc"})
    want, _ = ingest(raw)
    want = want.load()
    shutil.rmtree("results")

    def to_per_second(ds: xr.Dataset) -> xr.Dataset:
        pr = (ds["pr"] / 3600.0).assign_attrs({**ds["pr"].attrs, "units": "kg m-2 s-1"})
        return ds.assign(pr=pr)

    _rewrite(series[1], to_per_second)
    got, _ = ingest(raw)
    assert got["pr"].attrs["units"] == "mm h-1"
    np.testing.assert_allclose(got["pr"].values, want["pr"].values, rtol=1e-6, atol=1e-9)
    shutil.rmtree("results")

    _rewrite(series[1], lambda ds: ds.assign(pr=ds["pr"].assign_attrs(units="K")))
    assert_fails_without_output(
        raw,
        r"variable 'pr' is in units 'K' in '.*toy_001.nc' but 'mm h-1' in '.*toy_000.nc', and "
        r"these do not convert \(.*cannot convert 'K' \(temperature\).*\): every file of a "
        r"series must hold it in units of the same quantity",
    )


def test_a_file_of_a_series_on_another_grid_is_named(series):
    with xr.open_dataset(series[0]) as ds:
        x = ds["x"].values.copy()
    _rewrite(series[1], lambda ds: ds.assign_coords(x=ds["x"].values + 50.0))
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "in/*.nc"}),
        rf"'.*toy_001.nc' is on another grid than '.*toy_000.nc': its coordinate 'x' has "
        rf"{x[0] + 50.0:.10g} against {x[0]:.10g} at index 0 \(the largest difference 50\)",
    )


def test_negative_tolerance_reads_rounding_noise_as_zero_and_nothing_more(in_tmp):
    """A model's precipitation has tiny negatives (-1e-9 kg m-2 s-1): with negative_tolerance
    they are read as 0; a real sentinel below it still stops ingest, now naming the key too."""
    values = np.full((2, 8, 8), 1.0 / 3600)  # 1 mm h-1 in kg m-2 s-1
    values[0, 1, 2], values[1, 3, 4] = -1e-9, -2e-10
    write_cf_netcdf(
        in_tmp / "m.nc",
        {"pr": (values, "kg m-2 s-1")},
        np.arange(8) * 1000.0,
        np.arange(8) * 1000.0,
        crs="EPSG:3035",
        times=pd.date_range("2021-01-01", periods=2, freq="h"),
    )
    strict = campaign({"source": "netcdf", "path": "m.nc"}, scale=4)
    assert_fails_without_output(
        strict, r"negative precipitation \(minimum -3.6e-06 mm h-1\).*negative_tolerance"
    )
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "m.nc", "negative_tolerance": 1e-6}, scale=4),
        r"minimum -3.6e-06 mm h-1",
    )
    target, _ = ingest(campaign({"source": "netcdf", "path": "m.nc", "negative_tolerance": 1e-5},
                                scale=4))  # fmt: skip
    pr = target["pr"].values
    assert pr[0, 1, 2] == 0 and pr[1, 3, 4] == 0 and pr.min() == 0
    np.testing.assert_allclose(np.delete(pr.ravel(), [1 * 8 + 2, 64 + 3 * 8 + 4]), 1.0, rtol=1e-6)
    assert target["pr"].attrs["negative_tolerance"] == 1e-5


def test_a_model_calendar_is_refused_with_the_conversion_to_make(in_tmp):
    write_cf_netcdf(
        in_tmp / "n.nc",
        {"pr": (np.ones((3, 8, 8)), "mm h-1")},
        np.arange(8) * 1000.0,
        np.arange(8) * 1000.0,
        crs="EPSG:3035",
        times=pd.date_range("2021-01-01", periods=3, freq="h"),
    )
    days = xr.date_range("2021-01-01", periods=3, freq="h", calendar="360_day", use_cftime=True)
    _rewrite(in_tmp / "n.nc", lambda ds: ds.assign_coords(time=days))
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "n.nc"}, scale=4),
        r"data\.target: file 'n\.nc': the time axis uses the '360_day' calendar.*climai runs on "
        r"the calendars standard, gregorian, proleptic_gregorian, noleap, 365_day: .*"
        r"convert_calendar\('noleap', align_on='year'\)",
    )


def test_duplicated_times_in_one_file(in_tmp):
    times = pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 01:00"])
    write_cf_netcdf(
        in_tmp / "d.nc",
        {"pr": (np.ones((3, 8, 8)), "mm h-1")},
        np.arange(8) * 1000.0,
        np.arange(8) * 1000.0,
        crs="EPSG:3035",
        times=times,
    )
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "d.nc"}, scale=4),
        r"time 2021-01-01T01:00:00 appears more than once in 'd.nc'",
    )


def test_truncated_netcdf(series, in_tmp):
    data = series[1].read_bytes()
    series[1].write_bytes(data[: len(data) // 2])
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "in/*.nc"}),
        r"cannot read NetCDF file '.*toy_001.nc' \(truncated or not NetCDF\?\)",
    )


def test_domain_outside_the_data(series):
    assert_fails_without_output(
        campaign({"source": "netcdf", "path": "in/*.nc"}, domain={"x": [0, 1000], "y": [0, 1000]}),
        r"domain is outside the data: domain y: \[0, 1000\] holds 0 cell centre\(s\) of the data",
    )


def test_static_field_that_does_not_cover_the_domain(series, in_tmp):
    # a "DEM" on the toy CRS that covers only the western half of the target
    truth, _ = toy_world(seed=0, nx=16, ny=16, steps=1)
    x, y = truth["x"].values, truth["y"].values
    write_cf_netcdf(in_tmp / "dem.nc", {"h": (np.ones((16, 8)), "m")}, x[:8], y, crs=TOY_CRS)
    raw = campaign({"source": "netcdf", "path": "in/*.nc"})
    raw["data"]["static"] = {"orography": {"source": "netcdf", "path": "dem.nc", "variable": "h"}}
    assert_fails_without_output(
        raw, r"data.static.orography \('h'\) does not cover the HR domain: uncovered to the east"
    )


def test_times_with_a_utc_offset_come_out_in_utc(in_tmp):
    import netCDF4

    times = pd.date_range("2021-01-01 06:00", periods=3, freq="h")
    path = write_cf_netcdf(
        in_tmp / "tz.nc",
        {"pr": (np.ones((3, 8, 8)), "mm h-1")},
        np.arange(8) * 1000.0,
        np.arange(8) * 1000.0,
        crs="EPSG:3035",
        times=times,
    )
    with netCDF4.Dataset(path, "a") as nc:  # same numbers, but local time at UTC+02:00
        nc["time"].units = "minutes since 1970-01-01 00:00:00+02:00"
    target, _ = ingest(campaign({"source": "netcdf", "path": "tz.nc"}, scale=4))
    expected = (times - pd.Timedelta(hours=2)).values
    np.testing.assert_array_equal(target["time"].values, expected)


# --- data.input: coarse driving data on the LR grid --------------------------------------


def _input_campaign(in_tmp: Path, input_path: str) -> dict[str, Any]:
    raw = campaign({"source": "netcdf", "path": "in/*.nc"}, scale=4)
    raw["variables"] = [
        {"name": "tas", "units": "K", "kind": "temperature", "input_name": "t2m"},
        {**PR, "input_name": "tp"},
    ]
    raw["data"]["input"] = {"source": "netcdf", "path": input_path}
    return raw


def test_input_is_area_averaged_onto_the_lr_grid_in_canonical_units(series, in_tmp):
    from climai.preprocess.coarsen import coarsen_block_mean
    from climai.stages.preprocess import build_dataset

    truth, _ = toy_world(seed=0, nx=16, ny=16, steps=8)
    # the "model" input: the HR fields in other units and names, on the HR grid (finer than LR)
    write_cf_netcdf(
        in_tmp / "model.nc",
        {
            "t2m": (truth["tas"].values - 273.15, "degC"),
            "tp": (truth["pr"].values / 3600.0, "kg m-2 s-1"),
        },
        truth["x"].values,
        truth["y"].values,
        crs=TOY_CRS,
        times=truth["time"].values,
    )
    target, static = ingest(_input_campaign(in_tmp, "model.nc"))
    inputs = open_store(Path("results/t/ingest/input.zarr"))
    assert inputs["tas"].shape == (8, 4, 4) and inputs["tas"].attrs["units"] == "K"
    assert "average" in inputs["tas"].attrs["regridding"]
    for name in ("tas", "pr"):
        block = coarsen_block_mean(truth[name], 4).values
        np.testing.assert_allclose(inputs[name].values, block, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inputs["x"].values, truth["x"].values.reshape(4, 4).mean(axis=1))
    ds = build_dataset(
        target,
        static,
        {"tas": "temperature"},
        4,
        {"train": 0.5, "val": 0.25, "test": 0.25},
        inputs=inputs,
    )
    np.testing.assert_array_equal(ds["lr_tas"].values, inputs["tas"].values)
    # the LR is the input's field: not described as the HR's block mean (it said
    # 'area: mean (block 4x4)' and min_valid_fraction 0.5, which it was not)
    lr_attrs = ds["lr_tas"].attrs
    assert "min_valid_fraction" not in lr_attrs and "block" not in lr_attrs.get("cell_methods", "")
    assert lr_attrs["source"] == inputs.attrs["source"] and "regridding" in lr_attrs


def test_input_missing_target_times(series, in_tmp):
    truth, _ = toy_world(seed=0, nx=16, ny=16, steps=5)
    write_cf_netcdf(
        in_tmp / "short.nc",
        {"t2m": (truth["tas"].values, "K"), "tp": (truth["pr"].values, "mm h-1")},
        truth["x"].values,
        truth["y"].values,
        crs=TOY_CRS,
        times=truth["time"].values,
    )
    assert_fails_without_output(
        _input_campaign(in_tmp, "short.nc"),
        r"data.input: no data at 3 of the 8 target times \(first 2020-06-01T05:00:00\)",
    )


def test_synthetic_ingest_computes_each_chunk_once_and_equals_the_toy_world(in_tmp, monkeypatch):
    calls: list[tuple[str, int, int]] = []
    for cls in (synthetic._Tas, synthetic._Pr):
        original = cls.block

        def counted(self, start, stop, original=original, name=cls.__name__):
            calls.append((name, start, stop))
            return original(self, start, stop)

        monkeypatch.setattr(cls, "block", counted)
    target = {"source": "synthetic", "nx": 64, "ny": 64, "steps": 30}
    hr, _ = ingest(campaign(target, variables=[{"name": "tas", "units": "K"}, PR]))
    assert sorted(calls) == sorted(set(calls))  # no chunk of the world computed twice
    assert {(start, stop) for _, start, stop in calls} == {(0, 24), (24, 30)}
    truth, _ = toy_world(seed=0, nx=64, ny=64, steps=30)
    for name in ("tas", "pr"):
        assert np.array_equal(hr[name].values, truth[name].values)


def test_synthetic_target_reads_the_toy_field_named_by_source_name(in_tmp):
    """The config checks a synthetic target's variables by source_name (``temp`` from the toy
    world's ``tas``); ingest looked the toy world up by name and stopped with 'variables ['temp']
    are not in the synthetic toy world' after validate had passed."""
    target = {"source": "synthetic", "nx": 64, "ny": 64, "steps": 8}
    temp = {"name": "temp", "source_name": "tas", "units": "degC", "kind": "temperature"}
    hr, _ = ingest(campaign(target, variables=[temp, PR], data={"target": target}))
    truth, _ = toy_world(seed=0, nx=64, ny=64, steps=8)
    assert hr["temp"].attrs["units"] == "degC"
    np.testing.assert_allclose(hr["temp"].values, truth["tas"].values - 273.15, atol=1e-4)
    assert np.array_equal(hr["pr"].values, truth["pr"].values)


def test_synthetic_domain_is_checked_before_any_job():
    """A synthetic target's domain was checked only by ingest (outside the toy world) and train
    (a patch larger than the cut grid): 'climai validate' said OK. The checks before jobs now cut
    the toy grid as ingest does."""
    from climai.io.headers import check_before_jobs

    target = {"source": "synthetic", "nx": 32, "ny": 32, "steps": 48}
    unet = {"unet": {"patch": 32, "channels": [8, 16]}}
    x0, y0 = synthetic._ORIGIN
    inside = {"x": [x0, x0 + 8000], "y": [y0, y0 + 8000]}  # 16 × 16 HR cells
    cfg = validate_config({"data": {"target": target}, "domain": inside, "methods": unet})
    with pytest.raises(SourceError, match=r"methods.unet.patch=32 is larger than the HR domain 16"):
        check_before_jobs(cfg, cache=False)
    far = {"x": [0, 8000], "y": [0, 8000]}
    cfg = validate_config({"data": {"target": target}, "domain": far, "methods": unet})
    with pytest.raises(SourceError, match="domain is outside the data"):
        check_before_jobs(cfg, cache=False)
    small = {"unet": {"patch": 16, "channels": [8, 16]}}
    check_before_jobs(
        validate_config({"data": {"target": target}, "domain": inside, "methods": small}),
        cache=False,
    )


def test_synthetic_split_ranges_are_checked_before_any_job():
    """A split range outside the toy world's times passed 'climai validate' and stopped
    preprocess, after ingest; the checks before jobs now label the toy world's times."""
    from climai.io.headers import check_before_jobs

    target = {"source": "synthetic", "nx": 32, "ny": 32, "steps": 48}
    unet = {"unet": {"patch": 32, "channels": [8, 16]}}
    day = {"train": ["2020-06-01T00:00", "2020-06-01T23:00"],
           "val": ["2020-06-02T00:00", "2020-06-02T05:00"]}  # fmt: skip
    late = {**day, "test": ["2021-01-01T00:00", "2021-01-02T00:00"]}
    cfg = validate_config({"data": {"target": target}, "split": late, "methods": unet})
    with pytest.raises(SourceError, match=r"split 'test' .* holds no time step of the data"):
        check_before_jobs(cfg, cache=False)
    fine = {**day, "test": ["2020-06-02T06:00", "2020-06-02T23:00"]}
    check_before_jobs(
        validate_config({"data": {"target": target}, "split": fine, "methods": unet}),
        cache=False,
    )


def test_a_decimal_sentinel_in_a_float32_file_is_missing_data(in_tmp):
    """missing_value: -999.9 on a float32 temperature file: the sentinel cells were kept as
    -999.9 K (isin compared float64 -999.9 with float32 values and never matched); they are
    NaN, the rest unchanged."""
    values = np.full((2, 8, 8), 280.0, dtype=np.float32)
    values[:, :2, :3] = np.float32(-999.9)
    write_cf_netcdf(
        in_tmp / "t.nc",
        {"t2m": (values, "K")},
        np.arange(8) * 1000.0,
        np.arange(8) * 1000.0,
        crs=TOY_CRS,
        times=pd.date_range("2021-07-01", periods=2, freq="h"),
    )
    raw = campaign({"source": "netcdf", "path": str(in_tmp / "t.nc"), "missing_value": -999.9})
    raw["variables"] = [{"name": "tas", "source_name": "t2m", "units": "K", "kind": "temperature"}]
    target, _ = ingest({**raw, "scale": 2})
    tas = target["tas"].values
    assert np.isnan(tas[:, :2, :3]).all() and int(np.isnan(tas).sum()) == 2 * 6
    np.testing.assert_array_equal(tas[~np.isnan(tas)], 280.0)


def test_a_grid_without_coordinate_values_is_refused_early(in_tmp):
    """A file with a grid mapping but no x/y coordinate variables was ingested with x, y =
    0, 1, 2... taken as metres: a 1 m grid at the projection's origin, no error."""
    write_cf_netcdf(
        in_tmp / "t.nc",
        {"pr": (np.ones((2, 8, 8)), "mm h-1")},
        np.arange(8) * 1000.0,
        np.arange(8) * 1000.0,
        crs=TOY_CRS,
        times=pd.date_range("2021-07-01", periods=2, freq="h"),
    )
    xr.open_dataset(in_tmp / "t.nc").load().drop_vars(["x", "y"]).to_netcdf(in_tmp / "bare.nc")
    raw = campaign({"source": "netcdf", "path": str(in_tmp / "bare.nc")}, scale=2)
    assert_fails_without_output(raw, r"data\.target: .*'pr'.*\['x', 'y'\] have no coordinate")


def test_a_360_day_input_is_refused_before_any_job(in_tmp):
    """data.input in a 360_day calendar passed 'climai validate' (only the target's calendar was
    checked there) and stopped ingest; the checks before jobs now run the grid and time checks
    of ingest on every source's first file."""
    from climai.io.headers import check_before_jobs

    truth, _ = toy_world(seed=2, nx=16, ny=16, steps=8)
    truth[["pr", "crs"]].to_netcdf(in_tmp / "target.nc")
    lr = truth[["pr", "crs"]].coarsen(x=2, y=2).mean()
    lr["crs"] = truth["crs"]
    lr["pr"].attrs = dict(truth["pr"].attrs)
    lr = lr.convert_calendar("360_day", align_on="date")
    lr.to_netcdf(in_tmp / "input.nc")
    raw = campaign({"source": "netcdf", "path": str(in_tmp / "target.nc")}, scale=2)
    raw["data"]["input"] = {"source": "netcdf", "path": str(in_tmp / "input.nc")}
    raw["methods"] = {"unet": None, "unet-crps": None}  # baselines: no patch to check
    with pytest.raises(SourceError, match=r"data\.input: file .*input\.nc.*'360_day' calendar"):
        check_before_jobs(validate_config(raw), cache=False)
