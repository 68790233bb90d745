"""Exports pass the IOOS compliance checker's CF-1.10 suite, on a projected and a lat/lon campaign."""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from compliance_checker.runner import CheckSuite, ComplianceChecker

from climai.config import config_sha256, load_config, stage_slice
from climai.stages import StageContext
from climai.stages.export import run as run_export
from climai.stages.infer import run as run_infer
from climai.stages.ingest import run as run_ingest
from climai.stages.preprocess import run as run_preprocess
from climai.synthetic import toy_world
from climai.testing import write_cf_netcdf, write_config

# loading every checker suite warns that the (unused) ioos_sos one is deprecated
pytestmark = pytest.mark.filterwarnings("ignore:The ioos_sos checker:DeprecationWarning")
BASELINES = {"bicubic": {}, "unet": None, "unet-crps": None}
WIND = [
    {"name": "tas", "units": "K", "kind": "temperature"},
    {"name": "pr", "units": "mm h-1", "kind": "precipitation"},
    {"name": "sfcWind", "units": "km h-1", "kind": "generic"},
]
META = {"institution": "Test Institute", "references": "doi:10.0000/test", "comment": "a test"}


def cf_failures(path: Path, out: Path) -> dict[str, list[str]]:
    """The checks of the CF-1.10 suite that ``path`` fails, by priority (high: errors)."""
    suite = CheckSuite()
    suite.load_all_available_checkers()
    ComplianceChecker.run_checker(
        str(path), ["cf:1.10"], 1, "normal", output_filename=str(out), output_format="json"
    )
    report = json.loads(out.read_text())["cf:1.10"]
    return {
        priority: [
            f"{item['name']}: {item['msgs']}"
            for item in report[f"{priority}_priorities"]
            if item["value"][0] < item["value"][1]
        ]
        for priority in ("high", "medium", "low")
    }


def _export(config: Path) -> Path:
    """Run ingest, preprocess, infer and export (bicubic) of ``config``; the export folder."""
    cfg = load_config(config)

    def ctx(rule: str) -> StageContext:
        return StageContext(cfg, config_sha256(stage_slice(cfg, rule)), rule, 1)

    run_ingest(ctx("ingest"))
    run_preprocess(ctx("preprocess"))
    run_infer(ctx("infer"), "bicubic")
    run_export(ctx("export"), "bicubic")
    return cfg.campaign_dir / "export"


def _export_file(root: Path, name: str, path: Path, variables: list[dict] | None = None) -> Path:
    """The bicubic export of campaign ``name`` on the NetCDF ``path`` (pr in mm h-1 unless
    ``variables`` says otherwise), with a derived static field of x."""
    raw = {
        "campaign": name,
        "results": str(root),
        "scale": 8,
        "methods": BASELINES,
        "data": {
            "target": {"source": "netcdf", "path": str(path)},
            "static": {"x_static": {"source": "derived", "field": "x"}},
        },
        "variables": variables or [{"name": "pr", "units": "mm h-1", "kind": "precipitation"}],
    }
    (root / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return _export(root / f"{name}.yaml")


@pytest.fixture(scope="module")
def projected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy world (ETRS89-LAEA, metres) with wind speed in km h-1: bicubic, exported."""
    root = tmp_path_factory.mktemp("projected")
    config = write_config(
        root / "tiny.yaml", results=str(root), methods=BASELINES, variables=WIND, export=META
    )
    return _export(config)


@pytest.fixture(scope="module")
def latlon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lat/lon file (0.01°, north to south, temperature in degC): bicubic, exported."""
    root = tmp_path_factory.mktemp("latlon")
    target, _ = toy_world(nx=32, ny=32, steps=48)
    write_cf_netcdf(
        root / "ll.nc",
        {"pr": (target["pr"].values, "mm h-1"), "t2m": (target["tas"].values - 273.15, "degC")},
        10.0 + 0.01 * np.arange(32),
        47.0 - 0.01 * np.arange(32),
        times=pd.DatetimeIndex(target["time"].values),
        x_name="lon",
        y_name="lat",
    )
    variables = [
        {"name": "tas", "source_name": "t2m", "units": "K", "kind": "temperature"},
        {"name": "pr", "units": "mm h-1", "kind": "precipitation"},
    ]
    return _export_file(root, "latlon", root / "ll.nc", variables)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rotated-pole file (CORDEX-like: rlon/rlat in degrees, rotated_latitude_longitude)."""
    from pyproj import CRS

    root = tmp_path_factory.mktemp("rotated")
    target, _ = toy_world(nx=32, ny=32, steps=48)
    mapping = CRS.from_cf(
        {
            "grid_mapping_name": "rotated_latitude_longitude",
            "grid_north_pole_latitude": 39.25,
            "grid_north_pole_longitude": -162.0,
        }
    ).to_cf()
    axis = {"units": "degrees"}
    ds = xr.Dataset(
        {
            "pr": (("time", "rlat", "rlon"), target["pr"].values, {"units": "mm h-1"}),
            "rotated_pole": ((), np.int32(0), mapping),
        },
        coords={
            "time": target["time"].values,
            "rlat": (
                "rlat",
                -3.0 + 0.0275 * np.arange(32),
                {**axis, "standard_name": "grid_latitude"},
            ),
            "rlon": (
                "rlon",
                -5.0 + 0.0275 * np.arange(32),
                {**axis, "standard_name": "grid_longitude"},
            ),
        },
    )
    ds["pr"].attrs["grid_mapping"] = "rotated_pole"
    ds.to_netcdf(root / "rot.nc")
    return _export_file(root, "rotated", root / "rot.nc")


EXPORTS = [("projected", "tas"), ("projected", "pr"), ("projected", "sfcWind")]
EXPORTS += [("latlon", "tas"), ("latlon", "pr"), ("rotated", "pr")]


@pytest.mark.parametrize(("campaign", "variable"), EXPORTS)
def test_exports_pass_the_cf_checker(campaign, variable, request, tmp_path):
    """Acceptance: the IOOS compliance checker (CF 1.10) finds no errors and no warnings."""
    path = request.getfixturevalue(campaign) / f"bicubic_{variable}.nc"
    failures = cf_failures(path, tmp_path / "report.json")
    assert failures["high"] == [] and failures["medium"] == [], failures


@pytest.mark.parametrize(
    ("campaign", "x", "y"),
    [
        ("projected", ("projection_x_coordinate", "m"), ("projection_y_coordinate", "m")),
        ("latlon", ("longitude", "degrees_east"), ("latitude", "degrees_north")),
        ("rotated", ("grid_longitude", "degrees"), ("grid_latitude", "degrees")),
    ],
)
def test_axes_carry_their_real_attributes(campaign, x, y, request):
    """Rotated-pole axes are grid_longitude/grid_latitude in degrees: they were exported as
    projection_x/y_coordinate in metres (and ingested as true longitude/latitude)."""
    with netCDF4.Dataset(request.getfixturevalue(campaign) / "bicubic_pr.nc") as nc:
        for name, (standard_name, units) in (("x", x), ("y", y)):
            assert (nc[name].standard_name, nc[name].units) == (standard_name, units)
            assert nc[name].axis == name.upper() and "_FillValue" not in nc[name].ncattrs()
        assert nc["pr"].grid_mapping == "crs"
        mapping = {
            "latlon": "latitude_longitude",
            "projected": "lambert_azimuthal_equal_area",
            "rotated": "rotated_latitude_longitude",
        }[campaign]
        assert nc["crs"].grid_mapping_name == mapping
    if campaign == "rotated":
        target = xr.open_zarr(request.getfixturevalue(campaign).parent / "ingest" / "target.zarr")
        assert target["x"].attrs["standard_name"] == "grid_longitude"
        np.testing.assert_allclose(target["x"].values[:2], [-5.0, -4.9725])


def test_global_attributes_come_from_the_config_and_the_run(projected, latlon):
    with netCDF4.Dataset(projected / "bicubic_sfcWind.nc") as nc:
        assert (nc.institution, nc.references, nc.comment) == tuple(META.values())
        assert "method bicubic" in nc.source and "synthetic toy world (seed 0" in nc.source
        created, exported = nc.history.splitlines()
        assert "rule infer downscaled the test split with method bicubic" in created
        assert "climai export --method bicubic" in exported and nc.campaign == "tiny"
        wind = nc["sfcWind"]
        assert (wind.units, wind.standard_name) == ("km h-1", "wind_speed")
        assert 10.0 < float(np.mean(wind[:])) < 60.0  # the toy world's ~9 m s-1 in km h-1
    with netCDF4.Dataset(latlon / "bicubic_tas.nc") as nc:
        assert nc.institution.startswith("unspecified") and "ll.nc" in nc.source
        assert nc["tas"].units == "K" and 250.0 < float(np.mean(nc["tas"][:])) < 320.0


def _same_netcdf(a: Path, b: Path) -> None:
    """Same global attributes, and per variable the same dims, dtype, attributes, chunking,
    filters and stored values (bitwise, fill values included)."""
    with netCDF4.Dataset(a) as x, netCDF4.Dataset(b) as y:
        assert set(x.variables) == set(y.variables)
        assert {k: str(x.getncattr(k)) for k in x.ncattrs()} == {
            k: str(y.getncattr(k)) for k in y.ncattrs()
        }
        for name, u in x.variables.items():
            v = y.variables[name]
            u.set_auto_maskandscale(False)
            v.set_auto_maskandscale(False)
            assert (u.dimensions, u.dtype, u.chunking(), u.filters()) == (
                v.dimensions, v.dtype, v.chunking(), v.filters()
            ), name  # fmt: skip
            assert {k: str(u.getncattr(k)) for k in u.ncattrs()} == {
                k: str(v.getncattr(k)) for k in v.ncattrs()
            }, name
            assert u[:].tobytes() == v[:].tobytes(), name


@pytest.mark.parametrize("members", [0, 2])
def test_chunks_compressed_in_threads_give_the_one_thread_file(projected, tmp_path, members):
    """Export with threads (chunks filtered in a pool, HDF5 direct chunk writes): the variables,
    attributes, filters and values of the one-thread file, edge chunks and NaN cells included,
    for a field with and without members; and it passes the CF checker."""
    from climai.io import open_store
    from climai.io.cf import cf_dataset, cf_encoding
    from climai.io.netcdf import write_netcdf

    hr = open_store(projected.parent / "downscaled" / "bicubic" / "test.zarr")
    hr = hr.assign(pr=hr["pr"].where(hr["pr"] > 0.05))  # NaN cells: stored as _FillValue
    if members:
        hr = hr.assign(pr=hr["pr"].expand_dims(member=np.arange(members)))
        hr["member"].attrs = {}
    kinds = {"pr": "precipitation"}
    ds = cf_dataset(hr, ["pr"], kinds, {"title": "t"})
    enc = cf_encoding(ds, ["pr"], 4, chunk_xy=12)  # 12 does not divide the HR side: edge chunks
    for threads in (1, 3):
        write_netcdf(ds, tmp_path / f"pr_{threads}.nc", enc, threads=threads)
    _same_netcdf(tmp_path / "pr_1.nc", tmp_path / "pr_3.nc")
    if not members:
        failures = cf_failures(tmp_path / "pr_3.nc", tmp_path / "report.json")
        assert failures["high"] == [] and failures["medium"] == [], failures


@pytest.mark.parametrize("campaign", ["projected", "rotated", "latlon"])
def test_exports_carry_true_latitude_and_longitude(campaign, request):
    """A grid whose x/y are not longitude/latitude gets 2-D lat/lon auxiliary coordinates (CF
    5.6), the WGS84 position of every cell centre; a lat/lon grid needs none. They were missing."""
    from pyproj import CRS, Transformer

    path = request.getfixturevalue(campaign) / "bicubic_pr.nc"
    with xr.open_dataset(path) as ds:
        if campaign == "latlon":
            assert "lat" not in ds.variables and "lon" not in ds.variables
            return
        assert ds["pr"].encoding["coordinates"].split() in (["lat", "lon"], ["lon", "lat"])
        assert ds["lat"].attrs["units"] == "degrees_north" and ds["lat"].dims == ("y", "x")
        crs = CRS.from_wkt(ds["crs"].attrs["crs_wkt"])
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
            ds["x"].values[[0, -1]], ds["y"].values[[0, -1]]
        )
        np.testing.assert_allclose(ds["lon"].values[[0, -1], [0, -1]], lon, atol=1e-9)
        np.testing.assert_allclose(ds["lat"].values[[0, -1], [0, -1]], lat, atol=1e-9)


def test_exported_time_bounds_are_the_sources_own(tmp_path):
    """Hourly means labelled at mid-interval (time 00:30, bounds [00:00, 01:00], as CORDEX and
    CMIP files hold them) were exported with bounds [23:30, 00:30]: every step's interval an
    hour early. The source's bounds now reach the export; without bounds, [t - Δt, t] as before."""
    target, _ = toy_world(nx=32, ny=32, steps=48)
    start = pd.DatetimeIndex(target["time"].values)
    write_cf_netcdf(
        tmp_path / "mid.nc",
        {"pr": (target["pr"].values, "mm h-1")},
        target["x"].values,
        target["y"].values,
        crs="EPSG:3035",
        times=start + pd.Timedelta("30min"),
    )
    with netCDF4.Dataset(tmp_path / "mid.nc", "a") as nc:
        nc.createDimension("nv", 2)
        bnds = nc.createVariable("time_bnds", "f8", ("time", "nv"))
        units = nc["time"].units
        bnds.units = units
        t = nc["time"][:]
        bnds[:] = np.stack([t - 0.5 * (t[1] - t[0]), t + 0.5 * (t[1] - t[0])], axis=1)
        nc["time"].bounds = "time_bnds"
    with xr.open_dataset(
        _export_file(tmp_path, "mid", tmp_path / "mid.nc") / "bicubic_pr.nc"
    ) as ds:
        first = pd.Timestamp(ds["time"].values[0])
        np.testing.assert_array_equal(
            ds["time_bnds"].values[0],
            [
                np.datetime64(first - pd.Timedelta("30min")),
                np.datetime64(first + pd.Timedelta("30min")),
            ],
        )
        assert first.minute == 30


def test_latlon_auxiliaries_are_lazy_bands_of_latlon_rows(monkeypatch):
    """The 2-D lat/lon of a projected grid are dask arrays of LATLON_ROWS-row bands, each band
    transformed only when it is computed (they were whole grids at once: ~0.8 GB of float64 for
    a 4096² output), with the values of one pyproj transform of the whole grid."""
    from pyproj import CRS, Transformer

    from climai.grids import crs_variable
    from climai.io import cf

    monkeypatch.setattr(cf, "LATLON_ROWS", 16)
    y = 3.0e6 - 1000.0 * np.arange(40)
    x = 4.0e6 + 1000.0 * np.arange(24)
    hr = xr.Dataset(
        {"crs": crs_variable(CRS.from_epsg(3035))}, coords={"y": ("y", y), "x": ("x", x)}
    )
    calls = []
    real = cf._lonlat_rows
    monkeypatch.setattr(
        cf, "_lonlat_rows", lambda rows, *a: calls.append(rows.size) or real(rows, *a)
    )
    aux = cf.latlon_auxiliaries(hr)
    assert not any(calls)  # nothing computed yet (dask probes the function on empty rows)
    assert set(aux) == {"lat", "lon"}
    for da in aux.values():
        assert da.dims == ("y", "x") and da.chunks == ((16, 16, 8), (24,))
    first = aux["lat"].data.blocks[0].compute()
    assert [n for n in calls if n] == [16] and first.shape == (16, 24)  # one band, not the grid
    xx, yy = np.meshgrid(x, y)
    lon, lat = Transformer.from_crs(3035, 4326, always_xy=True).transform(xx, yy)
    np.testing.assert_allclose(aux["lat"].values, lat, atol=1e-9)
    np.testing.assert_allclose(aux["lon"].values, lon, atol=1e-9)
