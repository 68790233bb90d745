"""Ingest of the shared real data (KNMI, FMI radar; SRTM DEM), checked against values read
independently from the source files with netCDF4."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pandas as pd
import pytest
import yaml
from pyproj import CRS, Transformer

from climai.config import deep_merge, validate_config
from climai.io import open_store
from climai.stages import StageContext
from climai.stages.ingest import IngestError
from climai.stages.ingest import run as run_ingest
from climai.testing import write_cf_netcdf
from tests.conftest import REPO, shared_data

KNMI = "knmi_radar_precip5min_1km_20100826.nc"
FMI = "fmi_radar_dbz_250m_crop1024_20160928.nc"
DEM = "srtm3_dem_oetztal_alps_90m.nc"


def campaign_config(name: str, **overrides: Any) -> dict[str, Any]:
    """config.yaml + config/campaigns/<name>.yaml merged as Snakemake does, path → shared data."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw = deep_merge(
        raw, yaml.safe_load((REPO / "config" / "campaigns" / f"{name}.yaml").read_text())
    )
    raw["data"]["target"]["path"] = str(shared_data() / Path(raw["data"]["target"]["path"]).name)
    return deep_merge(raw, overrides)


def run(raw: dict[str, Any]):
    cfg = validate_config(raw)
    ctx = StageContext(cfg, "0" * 64, "ingest", 2)
    run_ingest(ctx)
    return cfg, open_store(ctx.paths.target), open_store(ctx.paths.static)


def read(name: str, var: str, *index: Any) -> np.ndarray:
    with netCDF4.Dataset(shared_data() / name) as nc:
        return np.ma.filled(nc[var][index].astype(np.float64), np.nan)


def test_knmi_campaign_target(in_tmp):
    _cfg, target, static = run(campaign_config("knmi"))
    pr = target["pr"]
    assert pr.shape == (92, 288, 288) and pr.attrs["units"] == "mm h-1"
    with netCDF4.Dataset(shared_data() / KNMI) as nc:
        assert CRS.from_wkt(target["crs"].attrs["crs_wkt"]) == CRS.from_wkt(nc["crs"].crs_wkt)
        np.testing.assert_array_equal(target["x"].values, nc["x"][222:510])
        np.testing.assert_array_equal(target["y"].values, nc["y"][280:568])
    src = read(KNMI, "precipitation_amount", slice(None), slice(280, 568), slice(222, 510)) * 12
    values = pr.values
    for t, i, j in [(0, 0, 0), (45, 100, 200), (91, 287, 287), (60, 150, 10)]:
        assert values[t, i, j] == pytest.approx(src[t, i, j], rel=1e-6, abs=1e-7)
    assert float(np.nanmean(values)) == pytest.approx(float(np.nanmean(src)), rel=1e-6)
    assert np.isnan(values).mean() == np.isnan(src).mean() == 0.0  # the always-valid square
    assert target.attrs["time_step_seconds"] == 300.0 and target.attrs["time_regular"] == 1
    assert "trimmed 7 row(s) and 7 column(s)" in target.attrs["ingest_report"]
    assert sorted(v for v in static.data_vars if v != "crs") == ["x_km", "y_km"]


@pytest.mark.slow
def test_knmi_full_grid_keeps_the_nan_mask(in_tmp):
    raw = campaign_config("knmi")
    raw.pop("domain")
    _, target, _ = run(raw)
    pr = target["pr"].values
    assert pr.shape == (92, 760, 696)  # 765×700 trimmed to a multiple of 8
    src = read(KNMI, "precipitation_amount", slice(None), slice(0, 760), slice(0, 696)) * 12
    np.testing.assert_array_equal(np.isnan(pr), np.isnan(src))
    valid = float(np.isfinite(src).mean())
    assert 0.2 < valid < 0.5
    assert float(np.isfinite(pr).mean()) == pytest.approx(valid)
    assert float(np.nanmean(pr)) == pytest.approx(float(np.nanmean(src)), rel=1e-6)
    assert float(np.nanmax(np.abs(pr - src))) < 1e-5


@pytest.mark.slow
def test_fmi_campaign_converts_reflectivity_before_anything_else(in_tmp):
    _, target, _static = run(campaign_config("fmi"))
    pr = target["pr"]
    assert pr.shape == (40, 1024, 1024) and pr.attrs["units"] == "mm h-1"
    with netCDF4.Dataset(shared_data() / FMI) as nc:
        assert CRS.from_wkt(target["crs"].attrs["crs_wkt"]) == CRS.from_wkt(nc["crs"].crs_wkt)
    assert target["y"].values[0] > target["y"].values[-1]  # y decreasing, as in the file
    dbz = read(FMI, "equivalent_reflectivity_factor", slice(None), slice(None), slice(None))
    rate = np.where(dbz <= -32.0, 0.0, (10 ** (dbz / 10) / 223.0) ** (1 / 1.53))
    values = pr.values
    for t, i, j in [(0, 0, 0), (20, 512, 700), (39, 1023, 1023)]:
        assert values[t, i, j] == pytest.approx(rate[t, i, j], rel=1e-5, abs=1e-7)
    hot = np.unravel_index(np.argmax(dbz), dbz.shape)
    assert values[hot] == pytest.approx(rate[hot], rel=1e-5)
    assert float(values.mean()) == pytest.approx(float(rate.mean()), rel=1e-5)
    assert float((values == 0).mean()) == pytest.approx(float((dbz <= -32).mean()))
    assert np.isfinite(values).all()
    assert pr.attrs["converter"] == "dbz_to_rain_rate"


def _oetztal_target(folder: Path, x0: float, y0: float, n: int = 48, dx: float = 500.0) -> Path:
    """A small target on UTM 32N (projected) with its origin at (x0, y0)."""
    x = x0 + dx * (np.arange(n) + 0.5)
    y = y0 + dx * (n - np.arange(n) - 0.5)  # north-up, y decreasing
    times = pd.date_range("2021-07-01", periods=2, freq="h")
    return write_cf_netcdf(
        folder / "oetztal.nc",
        {"pr": (np.zeros((2, n, n)), "mm h-1")},
        x,
        y,
        crs="EPSG:32632",
        times=times,
    )


def _oetztal_config(target: Path) -> dict[str, Any]:
    return {
        "campaign": "oetztal",
        "variables": [{"name": "pr", "units": "mm h-1", "kind": "precipitation"}],
        "data": {
            "target": {"source": "netcdf", "path": str(target)},
            "static": {
                "orography": {
                    "source": "netcdf",
                    "path": str(shared_data() / DEM),
                    "variable": "surface_altitude",
                    "units": "m",
                }
            },
        },
    }


def test_dem_becomes_area_averaged_orography_on_a_projected_grid(in_tmp):
    target_file = _oetztal_target(in_tmp, 630_000.0, 5_175_000.0)
    _, _target, static = run(_oetztal_config(target_file))
    oro = static["orography"].values
    assert oro.shape == (48, 48) and np.isfinite(oro).all()
    assert CRS.from_wkt(static["crs"].attrs["crs_wkt"]).to_epsg() == 32632
    assert static["orography"].attrs["units"] == "m"
    assert "average" in static["orography"].attrs["regridding"]
    # independent: DEM pixel centres projected to UTM 32N, binned into the 500 m HR cells
    with netCDF4.Dataset(shared_data() / DEM) as nc:
        lat, lon = nc["lat"][:], nc["lon"][:]
        h = np.ma.filled(nc["surface_altitude"][:].astype(np.float64), np.nan)
    lon2, lat2 = np.meshgrid(lon, lat)
    px, py = Transformer.from_crs(4326, 32632, always_xy=True).transform(lon2, lat2)
    col = np.floor((px - 630_000.0) / 500.0).astype(int)
    row = np.floor((5_175_000.0 + 48 * 500.0 - py) / 500.0).astype(int)
    inside = (col >= 0) & (col < 48) & (row >= 0) & (row < 48)
    src = h[inside]
    assert float(oro.mean()) == pytest.approx(float(src.mean()), rel=0.01)
    assert src.min() <= oro.min() and oro.max() <= src.max()
    assert oro.min() >= 387.0 and oro.max() <= 3727.0
    # each HR cell is the mean of the DEM pixels it holds (not a nearest sample)
    sums = np.zeros((48, 48))
    counts = np.zeros((48, 48))
    np.add.at(sums, (row[inside], col[inside]), src)
    np.add.at(counts, (row[inside], col[inside]), 1)
    cell_mean = sums / counts
    assert np.median(np.abs(oro - cell_mean)) < 15.0
    assert oro.std() < src.std()


def test_dem_that_misses_part_of_the_domain_is_named(in_tmp):
    target_file = _oetztal_target(in_tmp, 650_000.0, 5_175_000.0)  # reaches past 11.11°E
    with pytest.raises(
        IngestError, match=r"orography.*does not cover the HR domain: uncovered to the east"
    ):
        run(_oetztal_config(target_file))
    assert not any(Path("results").rglob("*.zarr"))
