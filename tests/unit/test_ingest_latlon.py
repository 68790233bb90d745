"""Regular lat/lon targets: longitudes normalised to −180…180, either axis direction, the domain
in lon/lat, and block means with equal weights per lat/lon cell (checked by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from climai.grids import Grid, normalise_longitudes
from climai.preprocess.coarsen import coarsen_block_mean
from climai.testing import write_cf_netcdf
from tests.unit.test_ingest import campaign, ingest


def _hourly_pr(path, values, lon, lat):
    """A lat/lon NetCDF of two hourly steps of ``values`` (pr, mm h-1) on dims lon/lat."""
    times = pd.date_range("2021-07-01", periods=2, freq="h")
    write_cf_netcdf(
        path, {"pr": (values, "mm h-1")}, lon, lat, times=times, x_name="lon", y_name="lat"
    )


def test_longitudes_0_360_become_minus_180_180():
    np.testing.assert_allclose(
        normalise_longitudes(np.array([230.0, 250.0, 299.5])), [-130, -110, -60.5]
    )
    np.testing.assert_allclose(normalise_longitudes(np.array([300.0, 250.0])), [-60.0, -110.0])
    np.testing.assert_allclose(normalise_longitudes(np.array([-10.0, 0.0, 10.0])), [-10, 0, 10])
    across = np.array([170.0, 175.0, 180.0, 185.0, 190.0])  # the antimeridian: kept continuous
    np.testing.assert_array_equal(normalise_longitudes(across), across)
    np.testing.assert_allclose(normalise_longitudes(np.array([0.5, 90.5])), [0.5, 90.5])
    # the antimeridian in a −180…180 file (179.5, 179.75, −180, −179.75): continuous too
    stored = np.array([179.5, 179.75, -180.0, -179.75])
    np.testing.assert_allclose(normalise_longitudes(stored), [179.5, 179.75, 180.0, 180.25])
    np.testing.assert_allclose(normalise_longitudes(stored[::-1]), [180.25, 180.0, 179.75, 179.5])


def test_latlon_target_across_the_antimeridian_stored_in_minus_180_180(in_tmp):
    """A −180…180 file whose domain crosses the antimeridian (lon jumps from 179.75 to −179.75)
    is one regular grid, continuous across 180°, with its values in place; it was refused as
    'not evenly spaced'."""
    lon = (179.25 + 0.5 * np.arange(4) + 180.0) % 360.0 - 180.0  # 179.25, 179.75, -179.75, -179.25
    lat = 40.25 + 0.5 * np.arange(4)
    values = np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4)
    _hourly_pr(in_tmp / "ll.nc", values, lon, lat)
    target, _ = ingest(campaign({"source": "netcdf", "path": str(in_tmp / "ll.nc")}, scale=2))
    np.testing.assert_allclose(target["x"].values, [179.25, 179.75, 180.25, 180.75])
    np.testing.assert_allclose(target["pr"].values, values)


@pytest.mark.parametrize("lat_step", [0.5, -0.5], ids=["lat-increasing", "lat-decreasing"])
def test_latlon_target_block_means_by_hand(in_tmp, lat_step):
    lon = 350.25 + 0.5 * np.arange(8)  # 350.25…353.75 °E
    lat = (40.25 if lat_step > 0 else 43.75) + lat_step * np.arange(8)
    values = np.arange(2 * 8 * 8, dtype=np.float64).reshape(2, 8, 8) % 7
    _hourly_pr(in_tmp / "ll.nc", values, lon, lat)
    raw = campaign(
        {"source": "netcdf", "path": str(in_tmp / "ll.nc")},
        scale=2,
        domain={"x": [351.0, 353.9], "y": [40.5, 43.6]},  # in 0–360 like the file
    )
    target, static = ingest(raw)
    x, y = target["x"].values, target["y"].values
    np.testing.assert_allclose(x, [-8.75, -8.25, -7.75, -7.25, -6.75, -6.25])
    expect_y = (
        [40.75, 41.25, 41.75, 42.25, 42.75, 43.25]
        if lat_step > 0
        else [43.25, 42.75, 42.25, 41.75, 41.25, 40.75]
    )
    np.testing.assert_allclose(y, expect_y)
    rows = np.flatnonzero((lat >= 40.5) & (lat <= 43.6))[:6]
    cols = np.arange(2, 8)
    hr = values[:, rows][:, :, cols]
    np.testing.assert_allclose(target["pr"].values, hr)
    lr = coarsen_block_mean(target["pr"], 2)
    by_hand = (hr[:, 0::2, 0::2] + hr[:, 1::2, 0::2] + hr[:, 0::2, 1::2] + hr[:, 1::2, 1::2]) / 4
    np.testing.assert_allclose(lr.values, by_hand, rtol=1e-6)  # equal weights, not cos(lat)
    np.testing.assert_allclose(lr["x"].values, [-8.5, -7.5, -6.5])
    grid = Grid(x, y, target["crs"].attrs["crs_wkt"])
    np.testing.assert_allclose(grid.coarsen(2).x, lr["x"].values)
    np.testing.assert_allclose(static["xk"].values[0], x - x.mean(), atol=1e-6)
    assert static["xk"].attrs["units"] == "degree"


@pytest.mark.parametrize("step", [0.01, 0.1, 0.11])
def test_a_float32_latlon_axis_is_regular_but_a_jump_is_not(step):
    """Coordinates stored as float32 (common in model and reanalysis files) round each step by
    up to a few units in the last place of the values: such an axis is still regular; a step
    off by more than that is not."""
    from climai.grids import GridError

    lon = (7.0 + step * np.arange(64)).astype(np.float32)
    lat = (45.0 + step * np.arange(64)).astype(np.float32)
    steps = np.diff(lat.astype(np.float64))
    assert np.ptp(steps) > 1e-6 * step  # what a float64 tolerance refused
    Grid(lon, lat, "EPSG:4326").check_regular()
    Grid(lon.astype(np.float64), lat.astype(np.float64), "EPSG:4326").check_regular()
    jump = lat.copy()
    jump[30:] += np.float32(step * 0.01)  # 1 % of a step: a real irregularity
    with pytest.raises(GridError, match=r"grid axis 'y' is not evenly spaced"):
        Grid(lon, jump, "EPSG:4326").check_regular()
    with pytest.raises(GridError, match=r"grid axis 'y' is not evenly spaced"):
        Grid(lon, jump.astype(np.float64), "EPSG:4326").check_regular()


@pytest.mark.parametrize(
    ("first", "domain", "expect"),
    [(0.25, [-10.0, 10.0], -9.75), (-179.75, [170.0, 190.0], 170.25), (0.25, [350, 370], -9.75)],
    ids=["0-360-file-prime-meridian", "180-file-antimeridian", "0-360-domain-as-0-360"],
)
def test_a_domain_across_the_seam_of_a_global_file_is_cut_whole(in_tmp, first, domain, expect):
    """A global 0–360 file cut at x: [-10, 10] kept only 0…10 (half the domain, no error); it
    is now the 40 columns −9.75…9.75 in one piece, each with its own values; likewise a
    −180…180 file cut across the antimeridian."""
    lon = first + 0.5 * np.arange(720)
    lat = 40.25 + 0.5 * np.arange(4)
    values = np.broadcast_to(lon % 360.0, (2, 4, 720)).copy()  # each cell holds its longitude
    _hourly_pr(in_tmp / "g.nc", values, lon, lat)
    raw = campaign(
        {"source": "netcdf", "path": str(in_tmp / "g.nc")},
        scale=2,
        domain={"x": domain, "y": [40.0, 42.0]},
    )
    target, _ = ingest(raw)
    x = target["x"].values
    np.testing.assert_allclose(x, expect + 0.5 * np.arange(40))
    np.testing.assert_allclose(target["pr"].values[0, 0], x % 360.0)


def test_a_global_0_360_static_field_covers_a_domain_across_the_prime_meridian(in_tmp):
    """A global 0–360 static field (a DEM, say) for a target at −1…1° E was refused as 'does not
    cover the HR domain: uncovered to the west'; it is read across the seam, by value."""
    times = pd.date_range("2021-07-01", periods=2, freq="h")
    lon = -0.875 + 0.25 * np.arange(8)
    lat = 40.125 + 0.25 * np.arange(4)
    write_cf_netcdf(
        in_tmp / "t.nc",
        {"pr": (np.ones((2, 4, 8)), "mm h-1")},
        lon,
        lat,
        times=times,
        x_name="lon",
        y_name="lat",
    )
    glon, glat = 0.125 + 0.25 * np.arange(1440), 39.125 + 0.25 * np.arange(16)
    smooth = np.broadcast_to(100.0 * np.sin(np.radians(glon)), (16, 1440)).copy()
    write_cf_netcdf(in_tmp / "dem.nc", {"h": (smooth, "m")}, glon, glat, x_name="lon", y_name="lat")
    raw = campaign({"source": "netcdf", "path": str(in_tmp / "t.nc")}, scale=2)
    raw["data"]["static"] = {
        "h": {"source": "netcdf", "path": str(in_tmp / "dem.nc"), "variable": "h"}
    }
    _, static = ingest(raw)
    want = 100.0 * np.sin(np.radians(lon))
    np.testing.assert_allclose(static["h"].values, np.broadcast_to(want, (4, 8)), atol=1e-3)
