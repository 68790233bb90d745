"""Ingest of raw files as published (../shared/data/SOURCES.md): MRMS GRIB2 (a local parameter,
0–360 longitudes, −3 = no coverage) and BOM NetCDF (one step per file without a time dimension,
km coordinates), checked against values decoded independently with ecCodes and netCDF4."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pandas as pd
import pytest
import yaml

from climai.config import deep_merge, validate_config
from tests.conftest import REPO, shared_data
from tests.unit.test_ingest import assert_fails_without_output, ingest

MRMS = "mrms_conus_preciprate_1km_20190610"
BOM = "bom_melbourne_precip6min_500m_20180616"
CAMPAIGNS = REPO / "config" / "campaigns"
# a 2°×2° box over the upper Midwest with rain and no-coverage cells at 00:00 UTC (given in 0–360)
MRMS_DOMAIN = {"x": [267.5, 269.5], "y": [50.5, 52.5]}
PR = {"name": "pr", "units": "mm h-1", "kind": "precipitation"}


def mrms_files(n: int) -> list[str]:
    return [str(p) for p in sorted((shared_data() / MRMS).glob("*.grib2"))[:n]]


def campaign(name: str) -> dict[str, Any]:
    """config.yaml + config/campaigns/<name>.yaml merged as Snakemake does."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return deep_merge(raw, yaml.safe_load((CAMPAIGNS / f"{name}.yaml").read_text()))


def mrms_config(n: int = 2, **source: Any) -> dict[str, Any]:
    """The mrms-conus campaign's source keys on the first ``n`` files, cut to MRMS_DOMAIN."""
    target = {**campaign("mrms-conus")["data"]["target"], "path": mrms_files(n), **source}
    return {
        "campaign": "mrms-test",
        "scale": 8,
        "variables": campaign("mrms-conus")["variables"],
        "data": {"target": target, "static": {"lon": {"source": "derived", "field": "x"}}},
        "domain": MRMS_DOMAIN,
    }


@pytest.mark.parametrize("name", ["mrms-conus", "bom-melbourne"])
def test_campaigns_validate_with_the_issue_settings(name):
    cfg = validate_config(campaign(name))
    assert cfg.scale == 8 and cfg.split.train == 0.7 and cfg.split.test == 0.2
    methods = {k for k, v in cfg.methods.root.items() if v is not None}
    # issue 18's three methods; BOM also scores xsdba's per-cell QDM (issue 21)
    assert methods - {"qdm"} == {"bicubic", "quantile-mapping", "unet"}
    assert cfg.domain is None  # the whole mosaic / radar domain


def eccodes_step(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.Timestamp]:
    """Values (ny, nx), latitudes, longitudes (as in the file) and valid time, via ecCodes."""
    import eccodes

    with open(path, "rb") as f:
        h = eccodes.codes_grib_new_from_file(f)
        try:
            ny, nx = eccodes.codes_get(h, "Ny"), eccodes.codes_get(h, "Nx")
            values = eccodes.codes_get_values(h).reshape(ny, nx)
            lat0 = eccodes.codes_get(h, "latitudeOfFirstGridPointInDegrees")
            lon0 = eccodes.codes_get(h, "longitudeOfFirstGridPointInDegrees")
            dlat = eccodes.codes_get(h, "jDirectionIncrementInDegrees")
            dlon = eccodes.codes_get(h, "iDirectionIncrementInDegrees")
            south = eccodes.codes_get(h, "jScansPositively") == 0
            date, time = eccodes.codes_get(h, "validityDate"), eccodes.codes_get(h, "validityTime")
        finally:
            eccodes.codes_release(h)
    lat = lat0 + (-dlat if south else dlat) * np.arange(ny)
    lon = lon0 + dlon * np.arange(nx)
    return values, lat, lon, pd.Timestamp(f"{date}{time:04d}")


def test_pyproj_rasterio_and_cfgrib_work_in_one_process(tmp_path):
    """The ecCodes wheels next to pyproj's and rasterio's PROJ: each loaded first in turn."""
    script = """
import sys
from pathlib import Path
def grib():
    import eccodes, xarray as xr
    path = Path(sys.argv[2]) / "t.grib2"
    h = eccodes.codes_grib_new_from_samples("GRIB2")
    eccodes.codes_set_values(h, [1.5] * eccodes.codes_get(h, "numberOfValues"))
    path.write_bytes(eccodes.codes_get_message(h))
    ds = xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""})
    assert float(next(iter(ds.data_vars.values())).mean()) == 1.5
def proj():
    from pyproj import CRS, Transformer
    assert CRS.from_epsg(3577).name == "GDA94 / Australian Albers"
    x, _ = Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, 50.0)
    assert abs(x - 1113194.9079) < 1e-3
def rio():
    import numpy as np, rioxarray, xarray as xr
    da = xr.DataArray(np.ones((4, 4), np.float32), dims=("y", "x"),
                      coords={"y": [3.5, 2.5, 1.5, 0.5], "x": [0.5, 1.5, 2.5, 3.5]})
    out = da.rio.write_crs(4326).rio.reproject("EPSG:3857")
    assert out.rio.crs.to_epsg() == 3857
for step in sys.argv[1]:
    {"g": grib, "p": proj, "r": rio}[step]()
print("ok")
"""
    for order in ("gpr", "prg", "rgp"):
        out = subprocess.run(
            [sys.executable, "-c", script, order, str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert out.returncode == 0 and out.stdout.strip() == "ok", (order, out.stderr[-2000:])


def test_mrms_grib_steps_match_eccodes(in_tmp):
    target, static = ingest(mrms_config(2))
    pr = target["pr"]
    assert pr.shape == (2, 200, 200) and pr.attrs["units"] == "mm h-1"
    assert pr.attrs["source_units"] == "mm h-1"
    np.testing.assert_array_equal(
        target["time"].values, pd.to_datetime(["2019-06-10T00:00", "2019-06-10T00:02"])
    )
    for t, path in enumerate(mrms_files(2)):
        values, lat, lon, valid = eccodes_step(path)
        assert pd.Timestamp(target["time"].values[t]) == valid
        rows = np.flatnonzero((lat >= 50.5) & (lat <= 52.5))
        cols = np.flatnonzero((lon >= 267.5) & (lon <= 269.5))
        np.testing.assert_allclose(target["y"].values, lat[rows], atol=1e-9)
        np.testing.assert_allclose(target["x"].values, lon[cols] - 360.0, atol=1e-9)
        src = values[np.ix_(rows, cols)]
        expect = np.where(src == -3.0, np.nan, src)
        np.testing.assert_array_equal(np.isnan(pr.values[t]), src == -3.0)
        np.testing.assert_allclose(pr.values[t], expect, rtol=1e-6)
        assert 0.1 < np.isnan(expect).mean() < 0.9 and (expect > 0).any()
    assert target["y"].values[0] > target["y"].values[-1]  # latitude decreasing, as in the file
    assert target["x"].attrs["units"] == "degrees_east"
    assert -92.5 < float(target["x"].min()) < float(target["x"].max()) < -90.5
    lon = static["lon"].values
    np.testing.assert_allclose(lon[0], target["x"].values - target["x"].values.mean(), atol=1e-5)


def test_mrms_wrong_filter_by_keys_names_the_key_and_the_fields(in_tmp):
    msg = assert_fails_without_output(
        mrms_config(1, filter_by_keys={"discipline": 0, "parameterNumber": 8}),
        r"data\.target\.filter_by_keys: .* selects no field in .*\.grib2",
    )
    assert "'discipline': 209, 'parameterCategory': 6, 'parameterNumber': 1" in msg
    assert "set data.target.filter_by_keys" in msg


def test_mrms_unknown_units_need_the_override(in_tmp):
    raw = mrms_config(1)
    del raw["data"]["target"]["units_override"]
    assert_fails_without_output(
        raw,
        r"data\.target\.units_override: field 'PrecipRate' .* has units 'unknown'; "
        r"set data\.target\.units_override",
    )


def test_mrms_sentinel_left_unset_stops_ingest(in_tmp):
    raw = mrms_config(1)
    del raw["data"]["target"]["missing_value"]
    assert_fails_without_output(
        raw, r"negative precipitation \(minimum -3 mm h-1\).*set data\.target\.missing_value"
    )


def test_bom_series_without_time_dimension(in_tmp):
    files = sorted((shared_data() / BOM).glob("*.nc"))
    raw = {
        "campaign": "bom-test",
        "scale": 8,
        "variables": [{**PR, "source_name": "precipitation"}],
        "data": {
            "target": {"source": "netcdf", "path": str(shared_data() / BOM / "*.nc")},
            "static": {"x_km": {"source": "derived", "field": "x"}},
        },
    }
    target, static = ingest(raw)
    pr = target["pr"]
    with netCDF4.Dataset(files[30]) as nc:
        amount = np.ma.filled(nc["precipitation"][:].astype(np.float64), np.nan)
        x_km, y_km = nc["x"][:].astype(np.float64), nc["y"][:].astype(np.float64)
        end = netCDF4.num2date(nc["valid_time"][:], nc["valid_time"].units)
        start = netCDF4.num2date(nc["start_time"][:], nc["start_time"].units)
    period = (end - start).total_seconds()
    assert period == 360.0
    times = pd.DatetimeIndex(target["time"].values)
    assert times.size == len(files) == 61 and target.attrs["time_steps_dropped_all_nan"] == 0
    assert times[0] == pd.Timestamp("2018-06-16T10:00") and times[-1] == pd.Timestamp(
        "2018-06-16T16:00"
    )
    assert target.attrs["time_step_seconds"] == 360.0 and target.attrs["time_regular"] == 1
    assert pd.Timestamp(str(end)) == times[30]
    np.testing.assert_array_equal(target["x"].values, x_km * 1000.0)
    np.testing.assert_array_equal(target["y"].values, y_km * 1000.0)
    assert target["x"].attrs["units"] == "m" and target["y"].values[0] > target["y"].values[1]
    rate = amount * 3600.0 / period
    np.testing.assert_allclose(pr.values[30], rate.astype(np.float32), rtol=1e-6, equal_nan=True)
    assert float(np.nanmax(rate)) > 0
    assert static["x_km"].attrs["units"] == "km"
    np.testing.assert_allclose(static["x_km"].values[0, [0, -1]], [-127.75, 127.75])


def test_bom_files_each_become_one_step(in_tmp):
    """The reader alone: a scalar valid_time/start_time pair is a time axis with its bounds."""
    import xarray as xr

    from climai.io.readers import scalar_time_to_axis

    path = sorted((shared_data() / BOM).glob("*.nc"))[0]
    with xr.open_dataset(path) as ds:
        out = scalar_time_to_axis(ds, ["precipitation"])
        assert out["precipitation"].dims == ("time", "y", "x")
        assert out["time"].attrs["bounds"] == "time_bnds"
        start, end = out["time_bnds"].values[0]
        assert end == out["time"].values[0] == np.datetime64("2018-06-16T10:00")
        assert (end - start) == np.timedelta64(6, "m")
        assert "proj" in out and out["proj"].ndim == 0  # the grid mapping stays scalar


def test_static_dem_path_is_untouched_by_scalar_times(in_tmp):
    dem = Path(shared_data() / "srtm3_dem_oetztal_alps_90m.nc")
    import xarray as xr

    from climai.io.readers import scalar_time_to_axis

    with xr.open_dataset(dem) as ds:
        assert scalar_time_to_axis(ds, ["surface_altitude"]) is ds
