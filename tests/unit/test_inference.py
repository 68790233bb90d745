"""`climai downscale`, the streamed zarr store, ensembles and the CF NetCDF export."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr
from pyproj import CRS

from climai.cli import main
from climai.config import InferConfig
from climai.inference.downscale import downscale_emulator, downscale_to_store
from climai.inference.predict import Emulator, model_predictor
from climai.io import open_store, provenance_attrs, streamed_store, write_store
from climai.io.cf import cf_dataset, cf_encoding
from climai.io.checkpoints import save_model
from climai.io.netcdf import write_netcdf
from climai.models.unet import ResidualUNet
from climai.testing import (
    NoisyUNet,
    lr_inputs,
    model_card_for,
    reference_roughness,
    toy_feature_spec,
    trained_like_unet,
)

KINDS = {"tas": "temperature", "pr": "precipitation"}


@pytest.fixture(scope="module")
def new_domain(tmp_path_factory: pytest.TempPathFactory):
    """A model file, an LR store of a 96 × 80 HR-cell domain with a hole, and its static store."""
    root = tmp_path_factory.mktemp("downscale")
    spec = toy_feature_spec()
    model = trained_like_unet(spec, [8, 16])
    save_model(root / "model.pt", model.state_dict(), model_card_for(spec, [8, 16]))
    lr, static = lr_inputs(96, 80, 3, seed=1)
    lr["pr"][1, 2:4, 3] = np.nan
    write_store(lr, root / "lr.zarr")
    write_store(static, root / "static.zarr")
    return root


def _downscale_files(model, input_path, static, output, *extra: str) -> int:
    """``climai downscale`` of ``input_path`` with ``model`` and ``static`` into ``output``."""
    return main(
        [
            "downscale",
            "--model", str(model),
            "--input", str(input_path),
            "--static", str(static),
            "--output", str(output),
            "--no-progress",
            *extra,
        ]
    )  # fmt: skip


_TILED = ("--tile", "48", "--overlap", "16", "--threads", "1")


def _downscale(root, output, *extra: str) -> int:
    return _downscale_input(root, root / "lr.zarr", output, *extra)


def test_both_outputs_record_the_input_static_and_model_they_came_from(new_domain, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    """Absolute paths (the command may run from anywhere) and the model file's sha256, in the
    zarr store and in the NetCDF file alike (the NetCDF lost them: it is written from a
    staged store)."""
    import hashlib

    import xarray as xr

    monkeypatch.chdir(new_domain)
    sha = hashlib.sha256((new_domain / "model.pt").read_bytes()).hexdigest()
    code = main(["downscale", "--model", "model.pt", "--input", "lr.zarr", "--static",
                 "static.zarr", "--output", str(tmp_path / "hr.zarr"), "--tile", "48",
                 "--overlap", "16", "--no-progress", "--threads", "1"])  # fmt: skip
    assert code == 0
    assert _downscale(new_domain, tmp_path / "hr.nc") == 0
    with xr.open_dataset(tmp_path / "hr.nc") as nc:
        for attrs in (open_store(tmp_path / "hr.zarr").attrs, nc.attrs):
            assert attrs["source_input"] == str(new_domain / "lr.zarr")
            assert attrs["source_static"] == str(new_domain / "static.zarr")
            assert attrs["source_model"] == str(new_domain / "model.pt")
            assert attrs["source_model_sha256"] == sha
        assert f"climai downscale of {new_domain / 'lr.zarr'} with " in nc.attrs["history"]


def test_downscale_writes_the_hr_store_with_the_lr_mask(new_domain, tmp_path):
    assert _downscale(new_domain, tmp_path / "hr.zarr") == 0
    hr = open_store(tmp_path / "hr.zarr")
    assert dict(hr["tas"].sizes) == {"time": 3, "y": 96, "x": 80}
    assert hr.attrs["created_by_rule"] == "downscale" and "crs_wkt" in hr["crs"].attrs
    assert hr["pr"].attrs["units"] == "mm h-1" and hr["pr"].attrs["grid_mapping"] == "crs"
    hole = np.isnan(hr["pr"].values)
    assert hole[1, 16:32, 24:32].all() and hole.sum() == 16 * 8
    assert np.isfinite(hr["tas"].values).all()
    lr = open_store(new_domain / "lr.zarr")
    np.testing.assert_allclose(hr["x"].values.reshape(-1, 8).mean(1), lr["x"].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr.zarr"]


def test_downscale_to_netcdf_equals_the_zarr_output(new_domain, tmp_path):
    assert _downscale(new_domain, tmp_path / "hr.zarr") == 0
    assert _downscale(new_domain, tmp_path / "hr.nc") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr.nc", "hr.zarr"]
    nc, zr = xr.open_dataset(tmp_path / "hr.nc"), open_store(tmp_path / "hr.zarr")
    for v in ("tas", "pr"):
        np.testing.assert_array_equal(nc[v].values, zr[v].values)


def test_downscale_reads_inputs_whose_axes_are_not_named_x_and_y(new_domain, tmp_path, capsys):
    """LR input and static on dims named like a user's file (lat/lon, northing/easting) give the
    output of the x/y stores; they crashed with KeyError: "No variable named 'x'". Axes that
    cannot be told are a one-line error naming the file."""
    lr, static = open_store(new_domain / "lr.zarr"), open_store(new_domain / "static.zarr")
    lr.rename({"x": "easting", "y": "northing"}).to_netcdf(tmp_path / "lr.nc")
    static.rename({"x": "easting", "y": "northing"}).to_netcdf(tmp_path / "static.nc")
    assert _downscale(new_domain, tmp_path / "hr.zarr") == 0
    out = tmp_path / "hr_named.zarr"
    assert (
        _downscale_files(
            new_domain / "model.pt", tmp_path / "lr.nc", tmp_path / "static.nc", out, *_TILED
        )
        == 0
    )
    want, got = open_store(tmp_path / "hr.zarr"), open_store(out)
    for v in ("tas", "pr"):
        np.testing.assert_array_equal(got[v].values, want[v].values)
    odd = lr.rename({"x": "i", "y": "j"})
    for c in ("i", "j"):
        odd[c].attrs = {}
    odd.to_netcdf(tmp_path / "odd.nc")
    code = _downscale_input(new_domain, tmp_path / "odd.nc", tmp_path / "o.zarr")
    err = capsys.readouterr().err
    assert code == 1 and re.search(r"input '.*odd\.nc'.*cannot tell which are x and y", err), err
    assert not (tmp_path / "o.zarr").exists()


def test_downscale_reads_the_crs_of_any_cf_grid_mapping(new_domain, tmp_path, capsys):
    """An input whose grid mapping is not called ``crs`` or has CF parameters but no WKT (as
    CF files often do, and as ingest accepts) was refused: 'has no CRS (a 'crs' variable with
    crs_wkt); the model expects ...'. It now gives the output of the store, with its CRS."""
    lr = open_store(new_domain / "lr.zarr")
    cf = {k: v for k, v in lr["crs"].attrs.items() if k not in ("crs_wkt", "spatial_ref")}
    mine = lr.drop_vars("crs").assign(laea=((), np.int32(0), cf))
    for v in ("tas", "pr"):
        mine[v].attrs["grid_mapping"] = "laea"
    mine.to_netcdf(tmp_path / "lr.nc")
    assert _downscale(new_domain, tmp_path / "hr.zarr") == 0
    assert _downscale_input(new_domain, tmp_path / "lr.nc", tmp_path / "hr_cf.zarr") == 0
    want, got = open_store(tmp_path / "hr.zarr"), open_store(tmp_path / "hr_cf.zarr")
    for v in ("tas", "pr"):
        np.testing.assert_array_equal(got[v].values, want[v].values)
    from climai.inference.inputs import same_crs

    found, want = (CRS.from_wkt(d["crs"].attrs["crs_wkt"]) for d in (got, lr))
    assert same_crs(found, want) and not same_crs(found, CRS.from_epsg(3067))
    bad = mine.assign(laea=((), np.int32(0), {"grid_mapping_name": "no_such_projection"}))
    bad.to_netcdf(tmp_path / "bad.nc")
    assert _downscale_input(new_domain, tmp_path / "bad.nc", tmp_path / "o.zarr") == 1
    assert re.search(r"input '.*bad\.nc'.*grid_mapping 'laea'", capsys.readouterr().err)


def test_downscale_converts_inputs_to_the_models_units(new_domain, tmp_path):
    """pr in kg m-2 s-1 and tas in degC (how many files hold them) are converted to the model's
    mm h-1 and K, as ingest converts; they were refused ('has units ...; the model expects')."""
    lr = open_store(new_domain / "lr.zarr").load()
    other = lr.assign(
        pr=(lr["pr"] / 3600.0).assign_attrs(units="kg m-2 s-1"),
        tas=(lr["tas"] - 273.15).assign_attrs(units="degC"),
    )
    write_store(other, tmp_path / "other.zarr")
    assert _downscale(new_domain, tmp_path / "hr.zarr") == 0
    assert _downscale_input(new_domain, tmp_path / "other.zarr", tmp_path / "hr_other.zarr") == 0
    want, got = open_store(tmp_path / "hr.zarr"), open_store(tmp_path / "hr_other.zarr")
    for v, atol in (("tas", 1e-3), ("pr", 1e-4)):
        assert got[v].attrs["units"] == want[v].attrs["units"]
        np.testing.assert_allclose(got[v].values, want[v].values, atol=atol, rtol=1e-4)


def test_downscale_names_the_cf_standard_names_its_input_lacks(new_domain, tmp_path):
    """An input with units only (many model files): the outputs take each variable's
    standard_name and long_name from the variable registry, as the campaign's export does; the
    zarr output had none and the NetCDF said 'pr' only."""
    import xarray as xr

    lr = open_store(new_domain / "lr.zarr").load()
    for v in ("tas", "pr"):
        lr[v].attrs = {"units": lr[v].attrs["units"]}
    write_store(lr, tmp_path / "bare.zarr")
    for out in ("hr.zarr", "hr.nc"):
        assert _downscale_input(new_domain, tmp_path / "bare.zarr", tmp_path / out) == 0
    with xr.open_dataset(tmp_path / "hr.nc") as nc:
        for hr in (open_store(tmp_path / "hr.zarr"), nc):
            assert hr["pr"].attrs["standard_name"] == "lwe_precipitation_rate"
            assert hr["tas"].attrs["standard_name"] == "air_temperature"
            assert hr["tas"].attrs["long_name"] == "near-surface air temperature"
            assert hr["pr"].attrs["units"] == "mm h-1"


def test_downscale_to_netcdf_takes_the_export_section_of_its_configfile(new_domain, tmp_path):
    """``--configfile``'s ``export`` keys (CF globals, compression, chunks) reach a NetCDF
    ``--output``; they were ignored: the model card's campaign's, or for a baseline the
    placeholder 'unspecified', at zlib level 4."""
    from climai.testing import write_config

    export = {"institution": "Audit Inst.", "comment": "a test", "compression_level": 0,
              "chunk_xy": 16}  # fmt: skip
    config = write_config(tmp_path / "c.yaml", export=export)
    assert _downscale(new_domain, tmp_path / "hr.nc", "--configfile", str(config)) == 0
    with netCDF4.Dataset(tmp_path / "hr.nc") as nc:
        assert nc.institution == "Audit Inst." and nc.comment == "a test"
        assert not nc["pr"].filters()["zlib"] and nc["pr"].chunking() == [1, 16, 16]


def test_downscale_configfile_need_not_configure_the_models_method(new_domain, tmp_path):
    """--configfile is the config whose infer section applies: a model of a method that config
    does not name (here 'unet-small') stopped with "unknown method 'unet-small'" when --threads
    was left out; its threads are then the config's compute.threads."""
    import torch

    from climai.io.checkpoints import load_model_file
    from climai.testing import write_config

    state, card = load_model_file(new_domain / "model.pt")
    save_model(tmp_path / "model.pt", state, {**card, "method": "unet-small"})
    config = write_config(tmp_path / "c.yaml", compute={"threads": 1})
    code = main(["downscale", "--model", str(tmp_path / "model.pt"),
                 "--input", str(new_domain / "lr.zarr"), "--static", str(new_domain / "static.zarr"),
                 "--output", str(tmp_path / "hr.zarr"), "--tile", "48", "--overlap", "16",
                 "--no-progress", "--configfile", str(config)])  # fmt: skip
    assert code == 0 and torch.get_num_threads() == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ds: ds.drop_vars("pr"), "lacks variables ['pr']"),
        (lambda ds: ds.assign(tas=ds["tas"].assign_attrs(units="m")), "cannot convert 'm' (length) to 'K' (temperature); the model expects 'K'"),
        (lambda ds: ds.assign(pr=ds["pr"].assign_attrs(units="mm")), "units 'mm', an amount per step; the model expects the rate 'mm h-1'"),
        (lambda ds: ds.assign_coords(x=ds["x"] * 2), "LR spacing along x is 8000; the model expects 4000"),
        (lambda ds: ds.drop_vars("crs"), "has no CRS"),
        (lambda ds: ds.isel(time=[0, 1, 1, 2]), "appears more than once in input"),  # was written twice
        (lambda ds: ds.isel(time=[2, 1, 0]), "are not increasing"),
        (
            lambda ds: ds.assign(crs=ds["crs"].assign_attrs(crs_wkt=_wkt(4326))),
            "is in CRS 'WGS 84'; the model expects 'ETRS89-extended / LAEA Europe'",
        ),
    ],
)  # fmt: skip
def test_input_that_does_not_fit_the_model_is_refused(
    new_domain, tmp_path, capsys, change, message
):
    bad = change(open_store(new_domain / "lr.zarr").load())
    write_store(bad, tmp_path / "bad.zarr")
    code = _downscale_files(
        new_domain / "model.pt", tmp_path / "bad.zarr", new_domain / "static.zarr",
        tmp_path / "hr.zarr",
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and "bad.zarr" in err
    assert not (tmp_path / "hr.zarr").exists()


def _downscale_input(root, input_path, output, *extra: str) -> int:
    return _downscale_files(
        root / "model.pt", input_path, root / "static.zarr", output, *_TILED, *extra
    )


def test_static_fields_are_converted_to_the_models_units_and_checked_for_its_crs(
    new_domain, tmp_path, capsys
):
    """An orography in km is converted to the metres the model was trained on (it was taken as
    metres); a static field in units of another dimension, or in another CRS, is refused."""
    from pyproj import CRS

    static = open_store(new_domain / "static.zarr").load()
    km = static.assign(orography=(static["orography"] / 1000).assign_attrs(units="km"))
    write_store(km, tmp_path / "km.zarr")
    assert _downscale(new_domain, tmp_path / "hr.zarr") == 0
    code = main(["downscale", "--model", str(new_domain / "model.pt"), "--input",
                 str(new_domain / "lr.zarr"), "--static", str(tmp_path / "km.zarr"), "--output",
                 str(tmp_path / "km_hr.zarr"), "--tile", "48", "--overlap", "16", "--no-progress",
                 "--threads", "1"])  # fmt: skip
    assert code == 0
    want, got = open_store(tmp_path / "hr.zarr"), open_store(tmp_path / "km_hr.zarr")
    for v in ("tas", "pr"):
        np.testing.assert_allclose(got[v].values, want[v].values, rtol=1e-5, atol=1e-4)
    kelvin = static.assign(orography=static["orography"].assign_attrs(units="K"))
    utm = static.assign(crs=static["crs"].assign_attrs(crs_wkt=CRS.from_epsg(32632).to_wkt()))
    for name, bad, match in (("k.zarr", kelvin, "cannot convert 'K'"), ("utm.zarr", utm,
                             "is in CRS 'WGS 84 / UTM zone 32N'; the model expects")):  # fmt: skip
        write_store(bad, tmp_path / name)
        code = main(["downscale", "--model", str(new_domain / "model.pt"), "--input",
                     str(new_domain / "lr.zarr"), "--static", str(tmp_path / name), "--output",
                     str(tmp_path / f"{name}.out.zarr"), "--no-progress"])  # fmt: skip
        assert code == 1 and match in capsys.readouterr().err
        assert not (tmp_path / f"{name}.out.zarr").exists()


def test_an_input_with_rows_north_to_south_gives_the_model_orders_output(new_domain, tmp_path):
    """Radar products and DEMs often store rows north to south: the input and the static
    fields are flipped to the model's direction, so the output is the one of the same fields
    stored the model's way."""
    lr = open_store(new_domain / "lr.zarr").load()
    write_store(lr.isel(y=slice(None, None, -1)), tmp_path / "flipped.zarr")
    static = open_store(new_domain / "static.zarr").load()
    write_store(static.isel(y=slice(None, None, -1)), tmp_path / "static_ns.zarr")
    assert _downscale(new_domain, tmp_path / "hr.zarr") == 0
    assert _downscale_input(new_domain, tmp_path / "flipped.zarr", tmp_path / "f_hr.zarr") == 0
    code = main(["downscale", "--model", str(new_domain / "model.pt"), "--input",
                 str(tmp_path / "flipped.zarr"), "--static", str(tmp_path / "static_ns.zarr"),
                 "--output", str(tmp_path / "fs_hr.zarr"), "--tile", "48", "--overlap", "16",
                 "--no-progress", "--threads", "1"])  # fmt: skip
    assert code == 0
    want = open_store(tmp_path / "hr.zarr")
    for name in ("f_hr.zarr", "fs_hr.zarr"):
        got = open_store(tmp_path / name)
        np.testing.assert_array_equal(got["y"].values, want["y"].values)
        for v in ("tas", "pr"):
            np.testing.assert_array_equal(got[v].values, want[v].values)


def test_an_input_on_time_x_y_gives_the_same_output_as_on_time_y_x(new_domain, tmp_path):
    lr = open_store(new_domain / "lr.zarr").load()  # 12 × 10 LR cells: not square
    turned = lr.assign({v: lr[v].transpose("time", "x", "y") for v in ("tas", "pr")})
    write_store(turned, tmp_path / "turned.zarr")
    static = open_store(new_domain / "static.zarr").load()
    write_store(static.transpose("x", "y"), tmp_path / "static_xy.zarr")
    assert _downscale(new_domain, tmp_path / "hr.zarr") == 0
    code = main(
        [
            "downscale",
            "--model", str(new_domain / "model.pt"),
            "--input", str(tmp_path / "turned.zarr"),
            "--static", str(tmp_path / "static_xy.zarr"),
            "--output", str(tmp_path / "turned_hr.zarr"),
            "--tile", "48", "--overlap", "16", "--no-progress", "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0
    want, got = open_store(tmp_path / "hr.zarr"), open_store(tmp_path / "turned_hr.zarr")
    for v in ("tas", "pr"):
        assert got[v].dims == ("time", "y", "x")
        np.testing.assert_array_equal(got[v].values, want[v].values)


def _uneven(ds: xr.Dataset, dtype: type = np.float64) -> xr.Dataset:
    x = ds["x"].values.astype(np.float64)
    x[6:] += 400.0  # one step of 4400 m among steps of 4000 m
    return ds.assign_coords(x=x.astype(dtype))


def test_an_unevenly_spaced_input_is_refused_naming_the_file_and_the_steps(
    new_domain, tmp_path, capsys
):
    write_store(_uneven(open_store(new_domain / "lr.zarr").load()), tmp_path / "bad.zarr")
    assert _downscale_input(new_domain, tmp_path / "bad.zarr", tmp_path / "hr.zarr") == 1
    err = capsys.readouterr().err
    assert "bad.zarr" in err and "LR axis 'x' is not evenly spaced" in err
    assert "steps from 4000 to 4400" in err
    assert not (tmp_path / "hr.zarr").exists()


def test_float32_coordinates_of_a_regular_grid_pass_the_spacing_check():
    from climai.inference.inputs import check_regular_axis

    # ~4.3e6 m in float32: the steps of a 4 km grid differ by one ulp (0.5 m), more than 1e-4
    x = xr.DataArray((4_300_001.3 + 3999.7 * np.arange(50)).astype(np.float32))
    steps = np.diff(x.values.astype(np.float64))
    assert np.ptp(steps) > 1e-4 * steps[0]
    check_regular_axis(x, "x", "in.nc")
    lat = xr.DataArray((40.005 + 0.01 * np.arange(300)).astype(np.float32))
    check_regular_axis(lat, "y", "in.nc")
    with pytest.raises(ValueError, match="'in.nc': LR axis 'x' is not evenly spaced"):
        check_regular_axis(
            xr.DataArray(_uneven(xr.Dataset(coords={"x": x.values}))["x"]), "x", "in.nc"
        )


def test_an_input_in_a_noleap_calendar_is_downscaled_in_that_calendar(new_domain, tmp_path):
    """A noleap input was refused ('needs a standard calendar'); both outputs now hold its times
    in its calendar, as xarray reads them back."""
    import xarray as xr

    lr = open_store(new_domain / "lr.zarr").load().convert_calendar("noleap", use_cftime=True)
    lr.to_netcdf(tmp_path / "noleap.nc")
    for output in (tmp_path / "hr.zarr", tmp_path / "hr.nc"):
        assert _downscale_input(new_domain, tmp_path / "noleap.nc", output) == 0
        hr = xr.open_zarr(output) if output.suffix == ".zarr" else xr.open_dataset(output)
        assert hr["time"].encoding["calendar"] == "noleap"
        np.testing.assert_array_equal(hr["time"].values, lr["time"].values)


def test_an_input_in_a_360_day_calendar_is_refused_with_the_fix(new_domain, tmp_path, capsys):
    lr = open_store(new_domain / "lr.zarr").load().convert_calendar("360_day", align_on="date")
    write_store(lr, tmp_path / "cal.zarr")
    assert _downscale_input(new_domain, tmp_path / "cal.zarr", tmp_path / "hr.zarr") == 1
    err = capsys.readouterr().err
    assert "cal.zarr" in err and "uses the '360_day' calendar" in err
    assert "standard, gregorian, proleptic_gregorian, noleap, 365_day" in err
    assert "convert_calendar('noleap', align_on='year')" in err
    assert not (tmp_path / "hr.zarr").exists()


@pytest.mark.parametrize("members", ["0", "-2", "two"])
def test_members_must_be_a_count_of_at_least_one(new_domain, tmp_path, capsys, members):
    with pytest.raises(SystemExit) as exit_:
        _downscale(new_domain, tmp_path / "hr.zarr", "--members", members)
    assert exit_.value.code == 2
    assert "argument --members:" in capsys.readouterr().err
    assert not (tmp_path / "hr.zarr").exists()


def test_members_for_a_deterministic_model_is_refused(new_domain, tmp_path, capsys):
    assert _downscale(new_domain, tmp_path / "hr.zarr", "--members", "3") == 1
    assert "--members 3:" in (err := capsys.readouterr().err) and "is deterministic" in err
    assert not (tmp_path / "hr.zarr").exists()
    assert _downscale(new_domain, tmp_path / "hr.zarr", "--members", "1") == 0


@pytest.mark.parametrize("name", ["hr.h5", "hr.nc3", "hr", "hr.zarr.bak"])
def test_an_output_suffix_other_than_zarr_or_nc_is_refused(new_domain, tmp_path, capsys, name):
    assert _downscale(new_domain, tmp_path / name) == 1
    err = capsys.readouterr().err
    assert f"--output {str(tmp_path / name)!r} has suffix" in err
    assert ".zarr" in err and ".nc or .nc4" in err
    assert list(tmp_path.iterdir()) == []


def test_an_nc4_output_is_the_netcdf_file(new_domain, tmp_path):
    assert _downscale(new_domain, tmp_path / "hr.nc") == 0
    assert _downscale(new_domain, tmp_path / "hr.nc4") == 0
    assert (tmp_path / "hr.nc4").is_file()
    assert _downscale(new_domain, tmp_path / "hr.nc4", "--overwrite") == 0  # climai's: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr.nc", "hr.nc4"]
    a, b = xr.open_dataset(tmp_path / "hr.nc"), xr.open_dataset(tmp_path / "hr.nc4")
    for v in ("tas", "pr"):
        np.testing.assert_array_equal(a[v].values, b[v].values)


def test_a_netcdf_run_removes_the_staging_folder_a_killed_run_left(new_domain, tmp_path):
    from climai.io.atomic import Writer, this_writer

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a writer that is dead, as a SIGKILLed climai downscale is
    me = this_writer()
    tag = Writer(me.host, gone.pid, 0, me.began - 60).tag()
    left = tmp_path / f".hr.nc.staging.tmp-{tag}"
    (left / f".hr.zarr.tmp-{tag}" / "tas").mkdir(parents=True)  # a partial streamed store
    (tmp_path / ".hr.nc.staging.lock").write_text(tag)  # the lock file a killed run leaves
    foreign = tmp_path / ".hr.nc.staging.tmp-not-climais"  # no writer identity: left alone
    foreign.mkdir()
    assert _downscale(new_domain, tmp_path / "hr.nc") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name, "hr.nc"]


def _wkt(epsg: int) -> str:
    from pyproj import CRS

    return CRS.from_epsg(epsg).to_wkt()


def test_static_fields_are_cut_from_a_larger_dem(new_domain, tmp_path):
    small = open_store(new_domain / "lr.zarr").isel(y=slice(2, 8), x=slice(1, 6)).load()
    write_store(small, tmp_path / "small.zarr")
    code = main(
        [
            "downscale",
            "--model", str(new_domain / "model.pt"),
            "--input", str(tmp_path / "small.zarr"),
            "--static", str(new_domain / "static.zarr"),
            "--output", str(tmp_path / "hr.zarr"),
            "--tile", "48", "--overlap", "16", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    full = open_store(tmp_path / "hr.zarr")
    assert dict(full["tas"].sizes) == {"time": 3, "y": 48, "x": 40}
    # the DEM window is the one under the small domain: the same cells as in the full run
    assert _downscale(new_domain, tmp_path / "all.zarr") == 0
    big = open_store(tmp_path / "all.zarr")
    np.testing.assert_array_equal(full["y"].values, big["y"].values[16:64])


def test_the_u_nets_receptive_radius_is_where_an_input_cell_stops_reaching_the_output():
    for levels in (1, 2, 3):
        torch.manual_seed(0)
        net = ResidualUNet(1, 1, [2] * levels).double()
        torch.nn.init.normal_(net.head.weight)
        n, reach = 16 * 2**levels, 0
        for k in range(2 ** (levels - 1)):  # every position of a cell in the coarsest grid
            x = torch.zeros((1, 1, n, n), dtype=torch.float64, requires_grad=True)
            c = n // 2 + k
            net(x, torch.zeros_like(x))[0, 0, c, c].backward()
            rows = torch.nonzero(x.grad[0, 0].abs().sum(1))[:, 0]
            reach = max(reach, int(c - rows.min()), int(rows.max() - c))
        assert net.receptive_radius == reach


def test_an_overlap_too_small_for_the_model_is_warned_of(tmp_path, caplog):
    """A 4-level U-Net (receptive radius 65) at the default overlap 128 gives seams (0.02 K on
    toy fields) that one pass over the domain does not: the log says so and names the overlap
    that makes tiles exact; a 3-level one (radius 29) is not warned of."""
    spec = toy_feature_spec()
    lr, static = lr_inputs(160, 144, 1, seed=1)
    write_store(lr, tmp_path / "lr.zarr")
    write_store(static, tmp_path / "static.zarr")
    for channels in ([4, 8, 8, 8], [4, 8, 8]):
        model = trained_like_unet(spec, channels)
        save_model(tmp_path / "model.pt", model.state_dict(), model_card_for(spec, channels))
        caplog.clear()
        args = ["--tile", "136", "--overlap", "128", "--no-progress", "--threads", "1"]
        code = main(
            [
                "downscale",
                "--model", str(tmp_path / "model.pt"),
                "--input", str(tmp_path / "lr.zarr"),
                "--static", str(tmp_path / "static.zarr"),
                "--output", str(tmp_path / f"hr{len(channels)}.zarr"),
                *args,
            ]
        )  # fmt: skip
        assert code == 0
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        if len(channels) == 4:
            assert any("infer.overlap=128 is under 4 × the model's receptive radius of 65" in m
                       and "at least 264" in m for m in warned), warned  # fmt: skip
        else:
            assert not any("receptive radius" in m for m in warned), warned


def test_a_missing_dem_is_named(new_domain, tmp_path, capsys):
    code = main(
        [
            "downscale",
            "--model", str(new_domain / "model.pt"),
            "--input", str(new_domain / "lr.zarr"),
            "--output", str(tmp_path / "hr.zarr"),
        ]
    )  # fmt: skip
    assert code == 1
    assert "needs static fields ['lsm', 'orography']: pass --static" in capsys.readouterr().err


def test_streamed_store_is_removed_when_the_run_fails(tmp_path):
    import dask.array as da

    template = xr.Dataset({"a": (("y", "x"), da.zeros((4, 4), chunks=2))})
    with pytest.raises(RuntimeError), streamed_store(tmp_path / "out.zarr", template) as writer:
        writer.write("a", (slice(0, 2), slice(None)), np.ones((2, 4), np.float32))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def ensemble_store(tmp_path_factory: pytest.TempPathFactory):
    """An ensemble of 4 members with its mean and 10 %/90 % quantiles, from a noisy model."""
    root = tmp_path_factory.mktemp("ensemble")
    spec = toy_feature_spec()
    torch.manual_seed(0)
    model = NoisyUNet(spec.in_channels, spec.out_channels, [8, 16], seed=5)
    lr, static = lr_inputs(64, 48, 2)
    cfg = InferConfig(tile=32, overlap=16, batch=3, ensemble_mean=True, quantiles=[0.1, 0.9])
    predict = model_predictor(model, torch.device("cpu"), False, members=4)
    attrs = {**provenance_attrs("0" * 64, "test"), "method": "noisy"}
    downscale_to_store(predict, spec, lr, static, root / "hr.zarr", cfg, 2, 4, attrs)
    return root / "hr.zarr"


def test_ensembles_have_members_mean_and_quantiles(ensemble_store):
    hr = open_store(ensemble_store).load()
    assert hr["tas"].dims == ("member", "time", "y", "x") and hr.sizes["member"] == 4
    assert hr["tas_quantile"].dims == ("quantile", "time", "y", "x")
    # CF axes as the NetCDF export has them (the store said only long_name: ensemble member)
    assert hr["member"].attrs["standard_name"] == "realization"
    assert hr["quantile"].attrs["units"] == "1"
    np.testing.assert_allclose(hr["tas_mean"], hr["tas"].mean("member"), rtol=1e-6)
    q = np.quantile(hr["pr"].values, [0.1, 0.9], axis=0)
    np.testing.assert_allclose(hr["pr_quantile"].values, q, rtol=1e-6)
    assert float(hr["tas"].std("member").mean()) > 0.1


def test_export_is_cf_compliant(ensemble_store, tmp_path):
    """Acceptance 3: the attributes a CF-1.10 checker requires, read back with netCDF4."""
    hr = open_store(ensemble_store)
    ds = cf_dataset(hr, ["pr"], KINDS)
    write_netcdf(ds, tmp_path / "pr.nc", cf_encoding(ds, ["pr"], level=4, chunk_xy=16))
    with netCDF4.Dataset(tmp_path / "pr.nc") as nc:
        assert nc.Conventions == "CF-1.10"
        for attr in ("title", "institution", "source", "history", "references"):
            assert getattr(nc, attr)
        assert {"climai_version", "config_sha256", "git_commit"} <= set(nc.ncattrs())
        pr = nc["pr"]
        assert pr.units == "mm h-1" and pr.standard_name == "lwe_precipitation_rate"
        assert pr.cell_methods == "time: mean" and pr.grid_mapping == "crs"
        assert nc["pr_mean"].cell_methods == "time: mean realization: mean"
        assert pr.filters()["zlib"] and pr.filters()["shuffle"]
        assert pr.chunking() == [1, 1, 16, 16] and pr.dtype == np.float32
        assert nc["crs"].grid_mapping_name == "lambert_azimuthal_equal_area"
        time = nc["time"]
        assert time.units.startswith("hours since") and time.calendar == "proleptic_gregorian"
        assert time.standard_name == "time" and time.axis == "T" and time.bounds == "time_bnds"
        bounds = nc["time_bnds"][:]
        np.testing.assert_array_equal(bounds[:, 1], time[:])
        np.testing.assert_array_equal(bounds[:, 1] - bounds[:, 0], 1.0)
        assert nc["x"].standard_name == "projection_x_coordinate" and nc["x"].units == "m"
        assert nc["member"].standard_name == "realization"
        assert nc["quantile"].units == "1"


def test_export_round_trips_with_identical_values(ensemble_store, tmp_path):
    hr = open_store(ensemble_store)
    ds = cf_dataset(hr, ["tas"], KINDS)
    write_netcdf(ds, tmp_path / "tas.nc", cf_encoding(ds, ["tas"]))
    back = xr.open_dataset(tmp_path / "tas.nc")
    for name in ("tas", "tas_mean", "tas_quantile"):
        np.testing.assert_array_equal(back[name].values, hr[name].values)
    np.testing.assert_array_equal(back["time"].values, hr["time"].values)


# --- every emulator through the one engine ---------------------------------------------------


def _grouped_ensemble(spec, constraint: str = "conserve") -> Emulator:
    """Per-variable stochastic U-Nets (noise at every level), heads non-zero."""
    torch.manual_seed(0)
    nets = {v: ResidualUNet(spec.subset([v]).in_channels, 1, [8, 16], 2) for v in spec.variables}
    for net in nets.values():
        torch.nn.init.normal_(net.head.weight, std=0.1)
    return Emulator(nets, {v: [v] for v in spec.variables}, constraint, members=3)


def test_one_member_of_a_spread_calibrated_ensemble_is_refused(tmp_path):
    """climai downscale --members 1 of an ensemble calibrated by inflation wrote one raw network
    draw, its spread never inflated (the factor acts around the members' mean): a member with
    the uncalibrated spread, silently. Two members are spread; one is refused naming why."""
    spec = toy_feature_spec()
    emulator = _grouped_ensemble(spec, "none")
    lr, static = lr_inputs(32, 32, 1)
    cfg = InferConfig(tile=32, overlap=0, batch=2, progress=False)
    arch = {"inflation": {"tas": 3.0, "pr": 3.0}, "spread_rule": "inflation"}
    card = {"method": "ens", "provenance": {"seed": 7}, "architecture": arch}
    with pytest.raises(ValueError, match=r"--members 1: .*'ens' is calibrated .* at least 2"):
        downscale_emulator(
            emulator, spec, card, lr, static, tmp_path / "one.zarr", cfg, {}, members=1
        )
    assert not (tmp_path / "one.zarr").exists()
    downscale_emulator(emulator, spec, card, lr, static, tmp_path / "two.zarr", cfg, {}, members=2)
    assert open_store(tmp_path / "two.zarr").sizes["member"] == 2


def _relative_block_error(hr: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """Largest |HR block mean − LR| / |LR| over finite LR cells (``hr`` (…, T, H, W))."""
    *lead, t, h, w = hr.shape
    blocks = hr.astype(np.float64).reshape(*lead, t, h // scale, scale, w // scale, scale)
    mean = blocks.mean(axis=(-3, -1))
    ok = np.isfinite(lr) & (np.abs(lr) > 1e-6)
    return float((np.abs(mean[..., ok] - lr[ok]) / np.abs(lr[ok])).max())


@pytest.mark.parametrize("tile", [32, 48])
def test_a_grouped_conserving_ensemble_streams_with_exact_block_means(tmp_path, tile):
    """Per-variable networks, members and conservation after blending, across tile seams."""
    spec = toy_feature_spec()
    emulator = _grouped_ensemble(spec)
    lr, static = lr_inputs(64, 48, 3)
    lr["pr"][1, 2, 3] = np.nan
    cfg = InferConfig(tile=tile, overlap=16, batch=2, time_block=2, progress=False)
    card = {"provenance": {"seed": 7}}
    runs = []
    for name in ("a.zarr", "b.zarr"):
        downscale_emulator(emulator, spec, card, lr, static, tmp_path / name, cfg, {})
        runs.append(open_store(tmp_path / name).load())
    hr = runs[0]
    assert hr["tas"].dims == ("member", "time", "y", "x") and hr.sizes["member"] == 3
    xr.testing.assert_identical(runs[0], runs[1])  # seeded: the same members every run
    assert float(hr["tas"].std("member").mean()) > 0.01
    for v in spec.variables:
        assert _relative_block_error(hr[v].values, lr[v].values, 8) < 1e-5
    assert (hr["pr"].fillna(0) >= 0).all()
    hole = np.isnan(hr["pr"].values)
    assert hole[:, 1, 16:24, 24:32].all() and hole.sum() == 3 * 64
    free = _grouped_ensemble(spec, "none")  # the same networks unconstrained: means drift
    downscale_emulator(free, spec, card, lr, static, tmp_path / "free.zarr", cfg, {})
    assert (
        _relative_block_error(open_store(tmp_path / "free.zarr")["tas"].values, lr["tas"].values, 8)
        > 1e-4
    )


def test_a_cards_departure_blur_smooths_the_members_at_inference_and_keeps_their_mean(tmp_path):
    """The model card's departure_blur: each tile's members' departures from their mean are
    smoothed before blending; the members' mean (linear normalisation, no constraint) is the
    same as without, their departures' grid-scale variability is not."""
    spec = toy_feature_spec()
    emulator = _grouped_ensemble(spec, "none")
    lr, static = lr_inputs(64, 48, 2)
    cfg = InferConfig(tile=32, overlap=16, batch=2, progress=False)
    runs = {}
    for blur in (0.0, 1.0):
        card = {"provenance": {"seed": 3}, "architecture": {"departure_blur": blur}}
        out = tmp_path / f"b{blur}.zarr"
        downscale_emulator(emulator, spec, card, lr, static, out, cfg, {})
        runs[blur] = open_store(out)["tas"].load()
    plain, blurred = runs[0.0], runs[1.0]
    np.testing.assert_allclose(
        blurred.mean("member").values, plain.mean("member").values, rtol=0, atol=1e-4
    )

    def grid_scale(a):  # mean square neighbour difference of the departures, per unit variance
        dep = a - a.mean("member")
        return float((dep.diff("x") ** 2).mean() / (dep**2).mean())

    assert grid_scale(blurred) < 0.3 * grid_scale(plain)
    assert float(blurred.std("member").mean()) > 0.01


def test_an_ensembles_members_share_the_noise_free_first_block_and_equal_separate_draws():
    """Each variable group's first block (no noise reaches it) runs once per batch, not once per
    member, and every member is bitwise the draw its own seed gives a full forward pass."""
    from climai.inference.distributed import chunk_seed
    from climai.inference.predict import _group_channels, emulator_predictor

    spec = toy_feature_spec()
    emulator = _grouped_ensemble(spec, "none")
    calls = {v: 0 for v in emulator.nets}
    for v, net in emulator.nets.items():
        net.down[0].register_forward_hook(lambda *_, v=v: calls.__setitem__(v, calls[v] + 1))
    predict = emulator_predictor(emulator, spec.variables, torch.device("cpu"), bf16=False)
    torch.manual_seed(5)
    x = torch.randn(2, spec.in_channels, 32, 32)
    base = torch.randn(2, len(spec.variables), 32, 32)
    got = predict(x, base, 11)
    assert got.shape == (2, 3, len(spec.variables), 32, 32)
    assert calls == {v: 1 for v in emulator.nets}  # 3 members, one first block per group
    with torch.no_grad():
        for m in range(3):
            torch.manual_seed(chunk_seed(11, m))
            for i, v in enumerate(spec.variables):
                channels = _group_channels(spec.variables, [v], spec.in_channels)
                want = emulator.nets[v](
                    x[:, channels].contiguous(memory_format=torch.channels_last), base[:, [i]]
                )
                torch.testing.assert_close(got[:, m, i], want[:, 0], rtol=0, atol=0)
    assert not torch.equal(got[:, 0], got[:, 1])


def test_an_ensemble_block_is_the_same_whoever_draws_it(tmp_path):
    """Time block k is seeded by (seed, k), not by what was drawn before: the first block of a
    4-step run equals a 2-step run of the same steps, and the blocks differ from each other."""
    spec = toy_feature_spec()
    emulator = _grouped_ensemble(spec, "none")
    lr, static = lr_inputs(32, 32, 4)
    cfg = InferConfig(tile=32, overlap=16, batch=2, time_block=2, progress=False)
    card = {"provenance": {"seed": 3}}
    downscale_emulator(emulator, spec, card, lr, static, tmp_path / "all.zarr", cfg, {})
    short = lr.isel(time=slice(0, 2))
    downscale_emulator(emulator, spec, card, short, static, tmp_path / "first.zarr", cfg, {})
    full, first = open_store(tmp_path / "all.zarr"), open_store(tmp_path / "first.zarr")
    np.testing.assert_array_equal(full["tas"][:, :2].values, first["tas"].values)
    assert not np.array_equal(full["tas"][:, :2].values, full["tas"][:, 2:].values)


# --- the campaign's infer rule and climai downscale are one engine ---------------------------

BASELINES = ("bicubic", "quantile-mapping")
TINY_NET = {"epochs": 1, "patch": 16, "batch": 4, "channels": [8, 16]}
ENSEMBLE = {**TINY_NET, "members": 3, "constraint": "conserve", "joint": False}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory):
    """A tiny campaign with ``unet`` and a conserving, per-variable ``unet-crps`` trained and
    inferred; the test split's LR fields and the static fields as stores ``climai downscale``
    reads."""
    from climai.data.prepared import PreparedDataset
    from climai.testing import prepare_campaign

    root = tmp_path_factory.mktemp("campaign")
    config = prepare_campaign(
        root,
        methods={"unet": TINY_NET, "unet-crps": ENSEMBLE},
        infer={"time_block": 4, "tile": 16, "overlap": 8, "device": "cpu", "progress": False},
    )
    for method in ("unet", "unet-crps"):
        for rule in ("train", "infer"):
            argv = [rule, "--configfile", str(config), "--method", method, "--threads", "1"]
            assert main(argv) == 0
    for method in BASELINES:
        assert main(["infer", "--configfile", str(config), "--method", method]) == 0
    results = root / "results" / "tiny"
    prep = PreparedDataset(open_store(results / "prep" / "dataset.zarr"))
    write_store(prep.split("test").lr_dataset(["tas", "pr"]).load(), root / "test_lr.zarr")
    write_store(prep.statics_dataset(["lsm", "orography"]).load(), root / "static.zarr")
    return config, results


@pytest.mark.parametrize("method", ["unet", "unet-crps", *BASELINES])
def test_downscale_of_the_test_split_writes_what_infer_wrote(campaign, tmp_path, method):
    """Bitwise on the CPU: the same engine, settings, seed and inputs; the threads are the
    campaign's compute.threads, as infer's (no --threads: on AMD EPYC a conv's last bits depend
    on the thread count). A baseline is named by its method (it has no model file) and rebuilt
    from the campaign."""
    config, results = campaign
    root = config.parent
    model = method if method in BASELINES else str(results / "models" / method / "model.pt")
    code = main(
        [
            "downscale", "--configfile", str(config),
            "--model", model,
            "--input", str(root / "test_lr.zarr"), "--static", str(root / "static.zarr"),
            "--output", str(tmp_path / "hr.zarr"),
        ]
    )  # fmt: skip
    assert code == 0
    infer, down = (
        open_store(results / "downscaled" / method / "test.zarr"),
        open_store(tmp_path / "hr.zarr"),
    )
    for v in ("tas", "pr"):
        assert down[v].dims == infer[v].dims
        np.testing.assert_array_equal(down[v].values, infer[v].values)
    if method == "unet-crps":
        assert infer["tas"].dims == ("member", "time", "y", "x") and infer.sizes["member"] == 3


def test_downscale_of_a_conserving_ensemble_on_new_data(campaign, tmp_path):
    """Acceptance: the toy unet-crps (constraint: conserve) on a new 64 × 48 domain writes
    members first, and every HR block mean equals its LR value to 1e-5 relative."""
    _, results = campaign
    lr, static = lr_inputs(64, 48, 5, seed=4)
    write_store(lr, tmp_path / "lr.zarr")
    write_store(static, tmp_path / "static.zarr")
    code = main(
        [
            "downscale",
            "--model", str(results / "models" / "unet-crps" / "model.pt"),
            "--input", str(tmp_path / "lr.zarr"), "--static", str(tmp_path / "static.zarr"),
            "--output", str(tmp_path / "hr.zarr"), "--tile", "32", "--overlap", "16",
            "--members", "4", "--no-progress", "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0
    hr = open_store(tmp_path / "hr.zarr").load()
    assert hr["tas"].dims == ("member", "time", "y", "x")
    assert dict(hr["tas"].sizes) == {"member": 4, "time": 5, "y": 64, "x": 48}
    for v in ("tas", "pr"):
        assert _relative_block_error(hr[v].values, lr[v].values, 8) < 1e-5
    assert float(hr["tas"].std("member").mean()) > 0


def test_downscale_names_the_baselines_when_the_model_is_neither(campaign, tmp_path, capsys):
    config, _ = campaign
    code = main(
        [
            "downscale", "--configfile", str(config), "--model", "bicubc",
            "--input", str(config.parent / "test_lr.zarr"), "--output", str(tmp_path / "hr.zarr"),
        ]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "'bicubc' is neither a model file nor a baseline method" in err
    assert "its baselines: bicubic, nearest, quantile-mapping" in err


def _turned(t: torch.Tensor, quarter_turns: int, mirror: bool) -> torch.Tensor:
    """``t`` (N, C, H, W) turned by whole quarter turns, then mirrored, with numpy."""
    a = np.rot90(t.numpy(), quarter_turns, axes=(2, 3))
    return torch.from_numpy(np.ascontiguousarray(a[..., ::-1] if mirror else a))


@pytest.mark.parametrize("shape", [(32, 32), (32, 48)])
def test_a_self_ensemble_is_the_mean_of_the_views_turned_back(shape):
    """infer.self_ensemble: 8 averages the model over the 8 flips and rotations of each sample,
    so its prediction turns with its input, where the model's own does not."""
    spec = toy_feature_spec()
    model = trained_like_unet(spec, [8, 16])
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, spec.in_channels, *shape, generator=gen)
    base = torch.randn(2, spec.out_channels, *shape, generator=gen)
    cpu = torch.device("cpu")
    one, eight = (model_predictor(model, cpu, False, self_ensemble=k) for k in (1, 8))
    with torch.no_grad():
        expected = (
            sum(
                _turned(_turned(model(_turned(x, r, m), _turned(base, r, m)), 0, m), -r, False)
                for r in range(4)
                for m in (False, True)
            )
            / 8
        )
    np.testing.assert_allclose(eight(x, base, 0), expected, rtol=1e-5, atol=1e-5)
    for r, m in [(1, False), (0, True), (3, True)]:
        turned = eight(_turned(x, r, m), _turned(base, r, m), 0)
        np.testing.assert_allclose(turned, _turned(eight(x, base, 0), r, m), atol=1e-5)
        plain = one(_turned(x, r, m), _turned(base, r, m), 0)
        assert float((plain - _turned(one(x, base, 0), r, m)).abs().max()) > 1e-2


def test_four_rotations_do_not_make_a_model_mirror_symmetric():
    spec = toy_feature_spec()
    model = trained_like_unet(spec, [8, 16])
    x, base = torch.randn(1, spec.in_channels, 32, 32), torch.randn(1, spec.out_channels, 32, 32)
    four = model_predictor(model, torch.device("cpu"), False, self_ensemble=4)
    np.testing.assert_allclose(four(_turned(x, 1, False), _turned(base, 1, False), 0),
                               _turned(four(x, base, 0), 1, False), atol=1e-5)  # fmt: skip
    mirrored = four(_turned(x, 0, True), _turned(base, 0, True), 0)
    assert float((mirrored - _turned(four(x, base, 0), 0, True)).abs().max()) > 1e-2


def test_a_self_ensemble_is_refused_for_ensembles_and_models_trained_without_augment(
    new_domain, tmp_path, capsys
):
    spec = toy_feature_spec()
    with pytest.raises(ValueError, match="self_ensemble=8: expected one of .* for a deterministic"):
        model_predictor(NoisyUNet(spec.in_channels, spec.out_channels, [8, 16]),
                        torch.device("cpu"), False, members=4, self_ensemble=8)  # fmt: skip
    assert _downscale(new_domain, tmp_path / "hr.zarr", "--self-ensemble", "8") == 1
    err = capsys.readouterr().err
    assert "infer.self_ensemble=8: the model of method 'unet' was not trained with augment" in err
    assert not (tmp_path / "hr.zarr").exists()


def test_downscale_of_a_model_trained_with_augment_averages_its_views(new_domain, tmp_path):
    spec = toy_feature_spec()
    model = trained_like_unet(spec, [8, 16])
    card = model_card_for(spec, [8, 16])
    card["architecture"] = {
        **card["architecture"],
        "type": "unet",
        "method_config": {
            "type": "unet",
            "channels": [8, 16],
            "augment": True,
            "normalisation": "physical",
        },
    }
    root = tmp_path / "aug"
    root.mkdir()
    for name in ("lr.zarr", "static.zarr"):
        (root / name).symlink_to(new_domain / name)
    save_model(root / "model.pt", model.state_dict(), card)
    assert _downscale(root, tmp_path / "one.zarr") == 0
    assert _downscale(root, tmp_path / "eight.zarr", "--self-ensemble", "8") == 0
    one, eight = (open_store(tmp_path / f"{k}.zarr").load() for k in ("one", "eight"))
    for v in ("tas", "pr"):
        assert eight[v].shape == one[v].shape
        np.testing.assert_array_equal(np.isnan(eight[v].values), np.isnan(one[v].values))
        assert float(abs(eight[v] - one[v]).max()) > 1e-3


def test_an_inflated_ensemble_keeps_its_mean_and_conserves(tmp_path):
    """The model card's inflation (calibrate_by: inflation) scales every member's departure from
    the members' mean at inference, before the constraint: tas (unbounded, not conserved here)
    exactly, the mean unchanged; conserved pr keeps its LR block means and stays >= 0."""
    spec = toy_feature_spec()
    lr, static = lr_inputs(64, 48, 2)
    cfg = InferConfig(tile=32, overlap=16, batch=3, progress=False)
    attrs = {**provenance_attrs("0" * 64, "test"), "method": "noisy"}
    stores = {}
    for name, factors, conserving in [("plain", None, False), ("wide", [2.5, 2.5], False),
                                      ("kept", [2.5, 2.5], True)]:  # fmt: skip
        torch.manual_seed(0)  # the same weights and noise draws for every store
        model = NoisyUNet(spec.in_channels, spec.out_channels, [8, 16], seed=5)
        predict = model_predictor(model, torch.device("cpu"), False, members=4)
        downscale_to_store(
            predict, spec, lr, static, tmp_path / f"{name}.zarr", cfg, 2, 4, attrs,
            conserving=conserving, inflation=factors,
        )  # fmt: skip
        stores[name] = open_store(tmp_path / f"{name}.zarr").load()
    plain, wide, kept = (stores[k] for k in ("plain", "wide", "kept"))
    dev = plain["tas"] - plain["tas"].mean("member")
    np.testing.assert_allclose(wide["tas"].mean("member"), plain["tas"].mean("member"), atol=1e-4)
    np.testing.assert_allclose(wide["tas"] - wide["tas"].mean("member"), 2.5 * dev, atol=1e-3)
    assert float(wide["pr"].min()) >= 0 and float(dev.std()) > 0.05
    pr = kept["pr"].values  # (member, time, y, x)
    blocks = pr.reshape(*pr.shape[:2], pr.shape[2] // 8, 8, pr.shape[3] // 8, 8).mean((3, 5))
    np.testing.assert_allclose(
        blocks, np.broadcast_to(lr["pr"].values, blocks.shape), rtol=1e-4, atol=1e-5
    )
    assert float(kept["pr"].min()) >= 0


def test_an_ensemble_spread_by_intensity_keeps_its_mean_and_conserves(tmp_path):
    """The model card's spread_rule intensity (calibrate_by: intensity): every cell's members
    spread to the factor × their mean ** 0.75 at inference, the mean kept up to the clip at 0;
    conserving, every member keeps its LR block means."""
    spec = toy_feature_spec().subset(["pr"])
    lr, static = lr_inputs(64, 48, 2)
    lr = lr[["pr", "crs"]]
    cfg = InferConfig(tile=32, overlap=16, batch=3, progress=False)
    attrs = {**provenance_attrs("0" * 64, "test"), "method": "noisy"}
    stores = {}
    for name, factors, conserving in [("plain", None, False), ("spread", [0.4], False),
                                      ("kept", [0.4], True)]:  # fmt: skip
        torch.manual_seed(0)
        model = NoisyUNet(spec.in_channels, spec.out_channels, [8, 16], seed=5)
        predict = model_predictor(model, torch.device("cpu"), False, members=4)
        downscale_to_store(
            predict, spec, lr, static, tmp_path / f"{name}.zarr", cfg, 2, 4, attrs,
            conserving=conserving, inflation=factors, spread_rule="intensity",
        )  # fmt: skip
        stores[name] = open_store(tmp_path / f"{name}.zarr")["pr"].load()
    plain, spread, kept = (stores[k] for k in ("plain", "spread", "kept"))
    mean = plain.mean("member")
    sd = spread.std("member")  # population std, as the rule sets it
    wet = (mean > 0.5).values & (spread.min("member") > 0).values  # no member clipped there
    assert wet.sum() > 100
    np.testing.assert_allclose(spread.mean("member").values[wet], mean.values[wet], rtol=1e-4)
    np.testing.assert_allclose(sd.values[wet], 0.4 * mean.values[wet] ** 0.75, rtol=1e-3)
    assert float(spread.min()) >= 0
    pr = kept.values  # (member, time, y, x)
    blocks = pr.reshape(*pr.shape[:2], pr.shape[2] // 8, 8, pr.shape[3] // 8, 8).mean((3, 5))
    np.testing.assert_allclose(
        blocks, np.broadcast_to(lr["pr"].values, blocks.shape), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="spread_rule 'wider': expected one of"):
        downscale_to_store(
            predict, spec, lr, static, tmp_path / "bad.zarr", cfg, 2, 4, attrs,
            inflation=[0.4], spread_rule="wider",
        )  # fmt: skip
    assert not (tmp_path / "bad.zarr").exists()


def test_an_ensemble_spread_by_roughness_uses_the_whole_domains_lr_whatever_the_tiles(tmp_path):
    """The model card's spread_rule roughness: every cell's spread is the factor × the members'
    mean × the coefficient of variation of the 3 × 3 LR cells around its block, taken from the
    whole domain's LR, so tiles of any size give the same spread (none at a tile's edge)."""
    spec = toy_feature_spec().subset(["pr"])
    lr, static = lr_inputs(64, 48, 2)
    lr = lr[["pr", "crs"]]
    attrs = {**provenance_attrs("0" * 64, "test"), "method": "noisy"}
    lrv = lr["pr"].values.astype(np.float64)  # (time, y, x)
    rough = np.stack([reference_roughness(a) for a in lrv]).repeat(8, -2).repeat(8, -1)
    spreads = []
    for tile in (32, 64):
        torch.manual_seed(0)
        model = NoisyUNet(spec.in_channels, spec.out_channels, [8, 16], seed=5)
        predict = model_predictor(model, torch.device("cpu"), False, members=4)
        cfg = InferConfig(tile=tile, overlap=16, batch=3, progress=False)
        out = tmp_path / f"t{tile}.zarr"
        downscale_to_store(
            predict, spec, lr, static, out, cfg, 2, 4, attrs,
            inflation=[0.4], spread_rule="roughness",
        )  # fmt: skip
        pr = open_store(out)["pr"].load()
        mean, sd = pr.mean("member").values, pr.std("member").values
        ok = (pr.min("member") > 0).values & (rough > 0.05)  # no member clipped there
        assert ok.sum() > 500
        np.testing.assert_allclose(sd[ok], 0.4 * mean[ok] * rough[ok], rtol=1e-3)
        spreads.append(np.where(ok, sd / np.where(mean > 0, mean, 1), np.nan))
    # the members differ between tilings (other noise draws), their spread per unit mean not
    both = np.isfinite(spreads[0]) & np.isfinite(spreads[1])
    assert both.sum() > 500
    np.testing.assert_allclose(spreads[0][both], spreads[1][both], rtol=1e-3)


MMAPPED = """
import ctypes, sys
import numpy as np
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    from climai.malloc import keep_freed_buffers
    assert keep_freed_buffers()
if sys.argv[1] == "predictor":
    import torch
    from climai.inference.predict import model_predictor
    model_predictor(torch.nn.Identity(), torch.device("cpu"))
before = libc.mallinfo2().hblkhd
for _ in range(3):
    a = np.ones(16 << 20, np.float32)  # 64 MiB, above glibc's largest mmap threshold
    during = libc.mallinfo2().hblkhd
    del a
print(during - before)
"""


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
    reason="glibc's malloc settings: this C library is not glibc",
)
def test_kept_buffers_serve_large_allocations_from_the_heap_on_the_cpu():
    """Without keep_freed_buffers every 64 MiB buffer is a fresh mmap (faulted in, zeroed and
    unmapped each time); with it, and in any process that built a CPU predictor, it comes from
    the heap, which keeps it for the next one."""

    def mmapped(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", MMAPPED, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout.split()[-1])

    assert mmapped("default") >= 64 << 20
    assert mmapped("keep") == 0
    assert mmapped("predictor") == 0


PRIMITIVES = """
import os
import torch
from climai.inference.predict import model_predictor
model_predictor(torch.nn.Identity(), torch.device("cpu"))
print(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"))
"""


@pytest.mark.parametrize(("preset", "want"), [(None, "0"), ("64", "64")])
def test_a_cpu_predictor_turns_onednns_primitive_cache_off_unless_the_user_set_it(preset, want):
    """A CPU inference computes tile parts of many shapes; oneDNN's per-shape cache of compiled
    primitives is off in its process (read at the first convolution), a user's value kept."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if preset is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = preset
    out = subprocess.run(
        [sys.executable, "-c", PRIMITIVES], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split()[-1] == want


def test_bad_tile_options_and_a_one_row_input_are_named_in_one_line(new_domain, tmp_path, capsys):
    """--tile/--overlap problems were pydantic's multi-line dump; a one-row input gave 'LR
    spacing along y is nan'."""
    for extra, match in (
        (["--tile", "7"], "--tile 7: Input should be greater than or equal to 8 (config key "
         "infer.tile)"),
        (["--tile", "64", "--overlap", "64"], "overlap=64 must be smaller than tile=64"),
    ):  # fmt: skip
        code = main(["downscale", "--model", str(new_domain / "model.pt"), "--input",
                     str(new_domain / "lr.zarr"), "--output", str(tmp_path / "o.zarr"), *extra])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert code == 1 and match in err and "\n" not in err, err
    lr = open_store(new_domain / "lr.zarr").load()
    write_store(lr.isel(y=slice(0, 1)), tmp_path / "row.zarr")
    assert _downscale_input(new_domain, tmp_path / "row.zarr", tmp_path / "hr.zarr") == 1
    assert "1 LR cell along y; at least 2 are needed" in capsys.readouterr().err
    assert not (tmp_path / "hr.zarr").exists()


def _drop(card, path):
    *parents, last = path.split(".")
    for key in parents:
        card = card[key]
    del card[last]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("grid", "grid: missing hr_dx, hr_dy"),
        ("units", "units.tas: missing"),
        ("features.stats.pr", "features.stats.pr: missing transform, offset, mean, std"),
        ("features.stats.static.orography", "features.stats.static.orography: missing mean"),
        ("features", "features: missing"),
    ],
)
def test_a_model_card_without_a_field_inference_needs_is_refused_naming_it(
    new_domain, tmp_path, capsys, field, message
):
    import copy

    state = torch.load(new_domain / "model.pt", weights_only=True)
    card = copy.deepcopy(state["card"])
    _drop(card, field)
    save_model(tmp_path / "model.pt", state["state_dict"], card)
    code = _downscale_files(
        tmp_path / "model.pt", new_domain / "lr.zarr", new_domain / "static.zarr",
        tmp_path / "hr.zarr",
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "model card is incomplete" in err and message in err and "model.pt" in err
    assert not (tmp_path / "hr.zarr").exists()


def test_a_model_card_whose_grid_scale_contradicts_its_features_is_refused(
    new_domain, tmp_path, capsys
):
    state = torch.load(new_domain / "model.pt", weights_only=True)
    card = {**state["card"], "grid": {**state["card"]["grid"], "scale": 4}}
    save_model(tmp_path / "model.pt", state["state_dict"], card)
    from climai.inference.predict import load_emulator

    with pytest.raises(ValueError, match="grid.scale: 4, but features.scale is 8"):
        load_emulator(tmp_path / "model.pt")


def test_a_bad_tile_option_is_named_as_the_option_given(new_domain, tmp_path, capsys):
    """The tiling's checks named infer.tile when the user had typed --tile."""
    root = new_domain
    code = _downscale_files(
        root / "model.pt", root / "lr.zarr", root / "static.zarr", tmp_path / "hr.zarr",
        "--tile", "36", "--overlap", "12",
    )  # fmt: skip
    assert code == 1
    assert "--tile 36 (infer.tile) is not a multiple of scale=8" in capsys.readouterr().err
    assert not (tmp_path / "hr.zarr").exists()


def test_downscale_applies_the_campaigns_deterministic_kernels(new_domain, tmp_path):
    """compute.deterministic was applied by the campaign's infer but not by climai downscale
    --configfile of the same campaign."""
    import torch

    from climai.testing import write_config

    config = write_config(tmp_path / "c.yaml", compute={"deterministic": True, "threads": 1})
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        code = _downscale_files(
            new_domain / "model.pt", new_domain / "lr.zarr", new_domain / "static.zarr",
            tmp_path / "hr.zarr", "--configfile", str(config),
        )  # fmt: skip
        assert code == 0
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_latlon_input_without_grid_mapping_is_wgs84_as_in_ingest():
    """A plain lat/lon LR file (no grid mapping: ingest reads it as WGS84) was refused by
    climai downscale: 'has no CRS (a 'crs' variable with crs_wkt); the model expects 'WGS 84''.
    Projected axes without one still say nothing of their CRS."""
    from climai.inference.inputs import as_xy, check_crs, with_crs_variable

    lon = xr.DataArray([10.0, 10.08], dims="lon", attrs={"units": "degrees_east"})
    lat = xr.DataArray([45.0, 45.08], dims="lat", attrs={"units": "degrees_north"})
    ds = xr.Dataset(
        {"pr": (("time", "lat", "lon"), np.ones((1, 2, 2)))}, coords={"lon": lon, "lat": lat}
    )
    out = with_crs_variable(as_xy(ds, ["pr"], "f.nc"), ["pr"], "f.nc")
    assert out["pr"].attrs["grid_mapping"] == "crs"
    check_crs(out, CRS.from_epsg(4326).to_wkt(), "input 'f.nc'")
    projected = ds.rename(lon="x", lat="y").assign_coords(x=[0.0, 8000.0], y=[0.0, 8000.0])
    assert "crs" not in with_crs_variable(projected, ["pr"], "f.nc")


def test_a_glob_of_yearly_files_per_variable_is_one_input(new_domain, tmp_path):
    """--input took one store or file: a scenario run published a file per variable and year
    had to be merged by hand. A glob is now joined as ingest joins a source's files (in time,
    variables side by side), and gives the output of the same data in one store."""
    import xarray as xr

    lr = open_store(new_domain / "lr.zarr").load()
    for v in ("tas", "pr"):
        for i, steps in enumerate((slice(0, 2), slice(2, None))):
            lr[[v, "crs"]].isel(time=steps).to_netcdf(tmp_path / f"{v}_{i}.nc")
    assert _downscale_input(new_domain, tmp_path / "*_?.nc", tmp_path / "glob.zarr") == 0
    assert _downscale(new_domain, tmp_path / "one.zarr") == 0
    glob_, one = xr.open_zarr(tmp_path / "glob.zarr"), xr.open_zarr(tmp_path / "one.zarr")
    np.testing.assert_array_equal(glob_["time"].values, one["time"].values)
    for v in ("tas", "pr"):
        np.testing.assert_array_equal(glob_[v].values, one[v].values)


def test_the_inputs_time_bounds_are_the_outputs(new_domain, tmp_path):
    """A CF input with time bounds (means labelled at the start of their hour) came out with
    bounds [t - 1 h, t] whatever its own: downscale read no bounds from its input."""
    import xarray as xr

    lr = open_store(new_domain / "lr.zarr").load()
    t = lr["time"].values
    lr["time_bnds"] = (("time", "nv"), np.stack([t, t + np.timedelta64(1, "h")], axis=1))
    lr["time"].attrs = {"standard_name": "time", "bounds": "time_bnds"}
    lr.to_netcdf(tmp_path / "in.nc")
    assert _downscale_input(new_domain, tmp_path / "in.nc", tmp_path / "hr.nc") == 0
    with xr.open_dataset(tmp_path / "hr.nc") as hr:
        np.testing.assert_array_equal(hr["time_bnds"].values, lr["time_bnds"].values)
