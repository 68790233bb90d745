"""Model calendars: daily means in yearly files across a leap year, on each calendar climai runs
on (read back in that calendar from every store and export), and refused ones named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climai.config import validate_config
from climai.io import open_store
from climai.io.cf import cf_dataset, cf_encoding
from climai.io.headers import check_before_jobs
from climai.io.readers import SourceError
from climai.stages import StageContext
from climai.stages.ingest import IngestError
from climai.stages.ingest import run as run_ingest
from climai.testing import write_calendar_series

PR = {"name": "pr", "units": "mm h-1", "kind": "precipitation"}


def _raw(path: str, **extra: object) -> dict:
    raw = {
        "campaign": "cal",
        "scale": 2,
        "variables": [PR],
        "data": {
            "target": {"source": "netcdf", "path": path},
            "static": {"xk": {"source": "derived", "field": "x"}},
        },
        "methods": {"unet": None, "unet-crps": None},
    }
    raw.update(extra)
    return raw


def _source(paths: list[Path]) -> xr.Dataset:
    parts = [xr.open_dataset(p) for p in paths]
    return xr.concat(parts, "time", data_vars="minimal", coords="minimal", compat="override")


@pytest.mark.parametrize(
    "calendar", ["standard", "gregorian", "proleptic_gregorian", "noleap", "365_day"]
)
def test_yearly_files_of_a_model_calendar_keep_times_bounds_and_calendar(in_tmp, calendar):
    """A noleap series was refused (a glob of yearly files even as 'has no time dimension');
    now each calendar whose dates are Gregorian dates runs, and the ingested store and the
    export read back with the source's own times, bounds and calendar."""
    paths = write_calendar_series(in_tmp / "src", calendar, [2003, 2004])
    src = _source(paths)
    cfg = validate_config(_raw(str(in_tmp / "src" / "pr_*.nc")))
    check_before_jobs(cfg, cache=False)
    ctx = StageContext(cfg, "0" * 64, "ingest", 1)
    run_ingest(ctx)

    stored = xr.open_zarr(ctx.paths.target)  # as a user reads it
    assert stored.sizes["time"] == src.sizes["time"]  # no day dropped or doubled at New Year
    np.testing.assert_array_equal(stored["time"].values, src["time"].values)
    assert stored["time"].encoding["calendar"] == calendar
    assert stored["time"].encoding["units"] == "days since 1950-01-01"  # the source's encoding
    assert stored.attrs["time_regular"] == 1  # a noleap 28 Feb to 1 Mar 2004 is one day
    # kg m-2 s-1 to mm h-1: 1 kg m-2 is 1 mm, 3,600 s an hour
    np.testing.assert_allclose(stored["pr"].values, src["pr"].values * 3600.0, rtol=1e-6)

    target = open_store(ctx.paths.target)  # as climai reads it: datetime64
    assert np.issubdtype(target["time"].dtype, np.datetime64)
    ds = cf_dataset(target, ["pr"], {"pr": "precipitation"})
    ds.to_netcdf(in_tmp / "out.nc", encoding=cf_encoding(ds, ["pr"]))
    out = xr.open_dataset(in_tmp / "out.nc")
    assert out["time"].encoding["calendar"] == calendar
    assert out["time"].encoding["units"] == "days since 1950-01-01"
    np.testing.assert_array_equal(out["time"].values, src["time"].values)
    np.testing.assert_array_equal(out["time_bnds"].values, src["time_bnds"].values)


@pytest.mark.parametrize("calendar", ["360_day", "all_leap", "366_day", "julian"])
def test_a_calendar_with_dates_gregorian_time_lacks_is_refused_at_validate(in_tmp, calendar):
    write_calendar_series(in_tmp / "src", calendar, [2003])
    cfg = validate_config(_raw(str(in_tmp / "src" / "pr_*.nc")))
    with pytest.raises(SourceError) as err:
        check_before_jobs(cfg, cache=False)
    msg = str(err.value)
    assert "data.target" in msg and "pr_2003.nc" in msg, msg
    assert f"the {calendar!r} calendar" in msg, msg
    assert "standard, gregorian, proleptic_gregorian, noleap, 365_day" in msg, msg
    with pytest.raises(IngestError, match=f"the {calendar!r} calendar"):
        run_ingest(StageContext(cfg, "0" * 64, "ingest", 1))
    assert not Path("results/cal/ingest/target.zarr").exists()


def test_split_dates_on_a_noleap_calendar(in_tmp):
    """Date bounds select the noleap days of a leap year: 2004 holds 365 of them."""
    from climai.stages.preprocess import run as run_preprocess

    write_calendar_series(in_tmp / "src", "noleap", [2003, 2004, 2005])
    split = {"train": ["2003-01-01", "2003-12-31"], "val": ["2004-01-01", "2004-12-31"]}
    split["test"] = ["2005-01-01", "2005-12-31"]
    cfg = validate_config(_raw(str(in_tmp / "src" / "pr_*.nc"), split=split))
    run_ingest(StageContext(cfg, "0" * 64, "ingest", 1))
    ctx = StageContext(cfg, "0" * 64, "preprocess", 1)
    run_preprocess(ctx)
    prep = xr.open_zarr(ctx.paths.dataset)
    assert prep["time"].encoding["calendar"] == "noleap"
    assert np.bincount(prep["split"].values).tolist() == [365, 365, 365]
    # the statistics a model card carries say which calendar the train period's dates are of
    stats = json.loads(ctx.paths.preprocessed_stats.read_text())
    assert stats["splits"]["train"][0].startswith("2003-01-01T12")
    assert stats["time_axis"] == {"calendar": "noleap", "units": "days since 1950-01-01"}


@pytest.mark.parametrize(
    ("method", "units", "expected"),
    [("time: mean", "K", "time: mean"), ("time: maximum", "K", "time: maximum"),
     (None, "K", "time: point"), ("time: sum", "kg m-2", "time: mean")],
)  # fmt: skip
def test_the_exports_cell_methods_are_the_sources_time_method(in_tmp, method, units, expected):
    """Daily-mean tas with time bounds [00, 24) was exported as 'time: point' (ingest dropped
    the source's cell_methods; the export chose by kind alone); a daily amount turned into a
    rate is its mean over the day."""
    (path,) = write_calendar_series(in_tmp / "src", "noleap", [2003])
    ds = xr.open_dataset(path).load()
    ds = ds.rename(pr="v").assign(v=lambda d: (d["v"] * 1e5 + 270).assign_attrs(units=units))
    if method is None:
        del ds["v"].attrs["cell_methods"]
    else:
        ds["v"].attrs["cell_methods"] = method
    ds.to_netcdf(in_tmp / "v.nc")
    kind = "precipitation" if units == "kg m-2" else "temperature"
    var = {"name": "v", "units": "mm h-1" if units == "kg m-2" else "K", "kind": kind}
    cfg = validate_config(_raw(str(in_tmp / "v.nc"), variables=[var]))
    ctx = StageContext(cfg, "0" * 64, "ingest", 1)
    run_ingest(ctx)
    target = open_store(ctx.paths.target)
    out = cf_dataset(target, ["v"], {"v": kind})
    assert out["v"].attrs["cell_methods"] == expected
    if units == "kg m-2":  # 270 kg m-2 over 24 h: 11.25 mm h-1
        np.testing.assert_allclose(target["v"].values, ds["v"].values / 24.0, rtol=1e-6)


def _tas_files(paths: list[Path]) -> None:
    """``tas_<year>.nc`` beside each ``pr_<year>.nc``: the same days, in K."""
    for path in paths:
        with xr.open_dataset(path) as ds:
            tas = ds.rename(pr="tas").load()
        tas["tas"] = (tas["tas"] * 1e5 + 270.0).assign_attrs(units="K", grid_mapping="crs")
        tas.to_netcdf(path.with_name(path.name.replace("pr_", "tas_")))


def test_variables_in_files_of_their_own_are_joined_on_their_times(in_tmp):
    """tas_*.nc and pr_*.nc (one variable per file, as CMIP/CORDEX publish) were refused:
    'variable pr is not in tas_2003.nc'; each variable's series is now read and the two put
    side by side, the same days as the files', no step dropped or doubled at New Year."""
    paths = write_calendar_series(in_tmp / "src", "noleap", [2003, 2004])
    _tas_files(paths)
    tas = {"name": "tas", "units": "K", "kind": "temperature"}
    files = [str(in_tmp / "src" / "tas_*.nc"), str(in_tmp / "src" / "pr_*.nc")]
    cfg = validate_config(_raw(files, variables=[tas, PR]))  # type: ignore[arg-type]
    check_before_jobs(cfg, cache=False)
    ctx = StageContext(cfg, "0" * 64, "ingest", 1)
    run_ingest(ctx)
    out = xr.open_zarr(ctx.paths.target)
    src = _source(paths)
    np.testing.assert_array_equal(out["time"].values, src["time"].values)
    np.testing.assert_allclose(out["pr"].values, src["pr"].values * 3600.0, rtol=1e-6)
    np.testing.assert_allclose(out["tas"].values, src["pr"].values * 1e5 + 270.0, rtol=1e-6)

    (in_tmp / "src" / "pr_2004.nc").unlink()  # pr one year short of tas
    cfg = validate_config(_raw(files, variables=[tas, PR]))  # type: ignore[arg-type]
    with pytest.raises(IngestError, match=r"pr_2003\.nc.*tas_2003\.nc.*differ in 'time' \(365 "):
        run_ingest(StageContext(cfg, "0" * 64, "ingest", 1))
    wind = {"name": "sfcWind", "units": "m s-1", "kind": "generic"}
    cfg = validate_config(_raw(files, variables=[tas, wind]))  # type: ignore[arg-type]
    with pytest.raises(SourceError, match=r"variable 'sfcWind' is not in '.*tas_2003\.nc'"):
        check_before_jobs(cfg, cache=False)
