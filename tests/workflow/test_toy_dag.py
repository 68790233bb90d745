"""The whole toy DAG through Snakemake on a small grid: outputs, provenance, reruns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climai.io import open_store
from climai.testing import write_config
from tests.conftest import REPO

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--cores",
            "2",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def planned_jobs(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Rule → job count from a dry run's job table."""
    table = result.stdout.split("Job stats:")[-1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("toy")
    write_config(wd / "tiny.yaml")
    result = snakemake(wd, "--configfile", str(wd / "tiny.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    return wd


def test_every_method_has_contract_metrics(campaign):
    for method in ("unet", "bicubic"):
        metrics = json.loads(
            (campaign / f"results/tiny/evaluation/{method}/metrics.json").read_text()
        )
        assert set(metrics) == {"tas", "pr"}
        for values in metrics.values():
            assert {"rmse", "mae", "bias", "corr", "spectral_ratio"} <= set(values)
            assert values["rmse"] > 0 and -1 <= values["corr"] <= 1
    assert (campaign / "results/tiny/evaluation/comparison.png").stat().st_size > 10_000
    assert (campaign / "results/tiny/models/unet/history.csv").read_text().startswith("epoch,")


@pytest.mark.parametrize(
    ("store", "rule"),
    [
        ("ingest/target.zarr", "ingest"),
        ("ingest/static.zarr", "ingest"),
        ("prep/dataset.zarr", "preprocess"),
        ("downscaled/unet/test.zarr", "infer"),
    ],
)
def test_stores_carry_provenance_and_cf_metadata(campaign, store, rule):
    ds = open_store(campaign / "results/tiny" / store)
    assert ds.attrs["created_by_rule"] == rule
    assert len(ds.attrs["config_sha256"]) == 64
    assert {"climai_version", "git_commit"} <= set(ds.attrs)
    assert "crs_wkt" in ds["crs"].attrs
    for var in ds.data_vars:
        if ds[var].ndim >= 2:
            assert "units" in ds[var].attrs and ds[var].attrs["grid_mapping"] == "crs", var


@pytest.mark.parametrize("method", ["unet", "bicubic"])
def test_export_writes_cf_netcdf_equal_to_the_zarr(campaign, method):
    hr = open_store(campaign / f"results/tiny/downscaled/{method}/test.zarr")
    for var, cell_methods in (("tas", "time: point"), ("pr", "time: mean")):
        path = campaign / f"results/tiny/export/{method}_{var}.nc"
        with xr.open_dataset(path) as nc:
            np.testing.assert_array_equal(nc[var].values, hr[var].values)
            assert nc.attrs["Conventions"] == "CF-1.10" and nc.attrs["created_by_rule"] == "infer"
            assert nc[var].attrs["cell_methods"] == cell_methods
            assert nc[var].attrs["grid_mapping"] == "crs" and "crs_wkt" in nc["crs"].attrs
            assert nc["time"].attrs["bounds"] == "time_bnds"


def test_second_run_has_nothing_to_do(campaign):
    result = snakemake(campaign, "--configfile", str(campaign / "tiny.yaml"), "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_training_hyperparameter_reruns_train_and_what_follows_only(campaign):
    write_config(campaign / "tiny2.yaml", methods={"unet": {"epochs": 2}})
    result = snakemake(campaign, "--configfile", str(campaign / "tiny2.yaml"), "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = planned_jobs(result)
    assert jobs.get("train") == 1 and jobs.get("infer") == 1 and jobs.get("evaluate") == 1
    assert jobs.get("export") == 1
    assert "ingest" not in jobs and "preprocess" not in jobs


def test_a_bad_config_stops_before_any_job(tmp_path):
    (tmp_path / "bad.yaml").write_text("campaign: bad\nsclae: 4\n")
    result = snakemake(tmp_path, "--configfile", str(tmp_path / "bad.yaml"))
    assert result.returncode != 0
    assert "did you mean 'scale'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
