"""The whole toy DAG through Snakemake on a small grid: outputs, provenance, reruns."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climai.io import open_store
from climai.io.checkpoints import load_model_file
from climai.testing import write_config
from tests.browser import Browser, find_chromium
from tests.conftest import REPO, run_snakemake

# Click the first element of the report app whose own text is exactly the given string.
CLICK_TEXT = """(() => {
  const want = %s;
  const el = [...document.querySelectorAll('#app *')].find(
    (x) => x.childElementCount === 0 && x.textContent.trim() === want);
  if (!el) return false;
  (el.closest('a, button, li') || el).click();
  return true;
})()"""

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_snakemake(workdir, *args)


def planned_jobs(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Rule → job count from a dry run's job table."""
    table = result.stdout.split("Job stats:")[-1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


# The default campaign's ensemble (config/config.yaml: fine-tuned from the campaign's unet), small.
ENSEMBLE = {"unet-crps": {"epochs": 1, "patch": 32, "batch": 4, "members": 4}}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("toy")
    write_config(wd / "tiny.yaml", methods=ENSEMBLE)
    result = snakemake(wd, "--configfile", str(wd / "tiny.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    return wd


METHODS = ("bicubic", "quantile-mapping", "unet", "unet-crps")


def test_every_method_has_contract_metrics(campaign):
    for method in METHODS:
        metrics = json.loads(
            (campaign / f"results/tiny/evaluation/{method}/metrics.json").read_text()
        )
        assert set(metrics) == {"tas", "pr"}
        for values in metrics.values():
            assert {"rmse", "mae", "bias", "corr", "spectral_ratio"} <= set(values)
            assert values["rmse"] > 0 and -1 <= values["corr"] <= 1
    ensemble = json.loads((campaign / "results/tiny/evaluation/unet-crps/metrics.json").read_text())
    for values in ensemble.values():
        assert 0 < values["crps_fair"] <= values["crps"] < values["mae"]
        assert values["spread_skill"]["ratio"] > 0 and values["spread_skill"]["spread"] > 0
        assert len(values["rank_histogram"]) == 5 and sum(values["rank_histogram"]) > 0
    _, card = load_model_file(campaign / "results/tiny/models/unet-crps/model.pt")
    assert [p["method"] for p in card["lineage"]] == ["unet"]
    evaluation = campaign / "results/tiny/evaluation"
    for fig in (
        "comparison.png",
        "overview.png",
        "spectra.png",
        "qq.png",
        "rank_histograms.png",
        "learning_curves.png",
    ):
        assert (evaluation / fig).stat().st_size > 10_000, fig
    for method in METHODS:
        for fig in ("maps.png", "spectra.png", "qq.png"):
            assert (evaluation / method / "figures" / fig).stat().st_size > 10_000
    summary = (evaluation / "summary.md").read_text()
    assert all(f"| {m} |" in summary for m in METHODS)
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


def test_every_store_opens_silently_with_plain_open_zarr(campaign):
    """A user's ``xr.open_zarr(path)`` reads the consolidated metadata: no warning about the
    folder's ``.snakemake_timestamp`` or a missing consolidation, and every array is there."""
    import warnings

    stores = sorted((campaign / "results").rglob("*.zarr"))
    assert len(stores) >= 7, stores  # ingest target and static, prep, 4 methods' downscaled
    for path in stores:
        names = {p.name for p in path.iterdir() if (p / "zarr.json").is_file()}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = xr.open_zarr(path)
        assert names == set(map(str, ds.variables)), path
        assert json.loads((path / "zarr.json").read_text()).get("consolidated_metadata"), path


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
    write_config(campaign / "tiny2.yaml", methods={"unet": {"epochs": 2}, **ENSEMBLE})
    result = snakemake(campaign, "--configfile", str(campaign / "tiny2.yaml"), "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = planned_jobs(result)
    # the unet and the ensemble fine-tuned from it, nothing of the baselines
    assert jobs.get("train") == 2 and jobs.get("infer") == 2 and jobs.get("evaluate") == 2
    assert jobs.get("export") == 2
    # on 2 cores each trains on both: the ensemble waits for its parent, they never run together
    result = snakemake(campaign, "--configfile", str(campaign / "tiny2.yaml"), "-n", "--cores", "2")
    trains = re.findall(r"rule train:.*?method=([\w-]+).*?threads: (\d+)", result.stdout, re.S)
    assert sorted(trains) == [("unet", "2"), ("unet-crps", "2")], result.stdout[-3000:]
    assert "ingest" not in jobs and "preprocess" not in jobs


def test_a_key_that_changes_no_output_reruns_nothing(campaign):
    """Progress bars, a training's checkpoint interval and its data loading (workers, loader:
    the same batches) change how a job runs, not what it writes: no rerun (they reran
    preprocess, both trainings and every infer before)."""
    loading = {"workers": 1, "loader": "stream", "memory_limit_gb": 0.5}
    write_config(
        campaign / "tiny3.yaml",
        methods={"unet": {"checkpoint_every": 7, **loading}, **ENSEMBLE},
        preprocess={"progress": False},
        infer={"progress": False},
    )
    result = snakemake(campaign, "--configfile", str(campaign / "tiny3.yaml"), "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


def test_a_bad_config_stops_before_any_job(tmp_path):
    (tmp_path / "bad.yaml").write_text("campaign: bad\nsclae: 4\n")
    result = snakemake(tmp_path, "--configfile", str(tmp_path / "bad.yaml"))
    assert result.returncode != 0
    assert "did you mean 'scale'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_report_is_one_self_contained_html_that_renders_in_headless_chromium(campaign, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed: apt-get install -y chromium (.ci/run does)")
    result = snakemake(
        campaign, "--configfile", str(campaign / "tiny.yaml"), "--report", "report.html"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = campaign / "report.html"
    assert report.read_bytes()[:200].lstrip().lower().startswith(b"<!doctype html")
    with Browser(chromium) as browser:
        browser.open(report.as_uri())
        # the app has rendered its navigation with our categories
        browser.wait_for(
            "document.querySelector('#app') && "
            "document.querySelector('#app').innerText.includes('1. Campaign')"
        )
        results = browser.eval(
            "Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.mime_type]))"
        )
        images = sorted(k for k, mime in results.items() if mime == "image/png")
        names = {Path(k).name for k in images}
        assert {
            "comparison.png",
            "overview.png",
            "spectra.png",
            "qq.png",
            "learning_curves.png",
            "maps.png",
        } <= names
        assert sum(k.endswith("/maps.png") for k in images) == len(METHODS)
        assert any(k.endswith("summary.html") for k in results)
        # click through the navigation as a reader would: a category (and a subcategory), then
        # the view (eye) button of every result; each figure must appear as a decoded image
        shown = []
        # the campaign: comparison, overview, spectra, QQ, rank histograms, learning curves, the
        # summary page and the jobs' predicted-vs-measured table
        for clicks, expected in ((["1. Campaign"], 8), (["Results", "2. Methods", "unet"], 3)):
            for text in clicks:  # each waits until the previous click has rendered it
                browser.wait_for(CLICK_TEXT % json.dumps(text))
            eyes = browser.wait_for(
                "document.querySelectorAll('#app table a[iconname=eye]').length"
            )
            assert eyes == expected, clicks
            for i in range(eyes):
                before = json.dumps(shown[-1] if shown else None, separators=(",", ":"))
                browser.eval(
                    f"document.querySelectorAll('#app table a[iconname=eye]')[{i}].click()"
                )
                shown.append(
                    browser.wait_for(
                        f"(() => {{ const r = {SHOWN_RESULT}; "
                        f"return r && JSON.stringify(r) !== {json.dumps(before)} && r; }})()"
                    )
                )
        images = [s for s in shown if s[0] == "img"]
        assert len(images) == 9 and len({s[1] for s in images}) == 9  # nine different figures
        assert all(min(s[2], s[3]) > 200 for s in images), images
        assert [s[0] for s in shown].count("iframe") == 2  # the campaign page; the jobs table
        browser.screenshot(tmp_path / "report.png")
        # self-contained: nothing but the file itself and inline data was requested
        external = [
            u for u in browser.requested_urls() if not u.startswith(("file:", "data:", "about:"))
        ]
        assert not external, external
    assert (tmp_path / "report.png").stat().st_size > 5_000


# What the content pane shows: ["img", src prefix, width, height] once an image has decoded, or
# ["iframe", src prefix, 0, 0] for an HTML result.
SHOWN_RESULT = """(() => {
  const img = document.querySelector('#app img[src^="data:image/png"]');
  const frame = document.querySelector('#app iframe[src^="data:text/html"]');
  if (frame) return ["iframe", frame.src.slice(0, 80), 0, 0];
  if (img && img.complete && img.naturalWidth > 0)
    return ["img", img.src.slice(-80), img.naturalWidth, img.naturalHeight];
  return null;
})()"""


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


def test_a_changed_setting_reruns_even_from_another_folder_with_results_spelled_otherwise(
    campaign, tmp_path
):
    """Snakemake's record of each job's settings is per working folder and output path as
    spelled: from another folder, with ``results:`` absolute, a changed training setting reran
    nothing and the old model stayed. The stage's settings file (an input of its rule, rewritten
    when the settings change) reruns it by modification time. Runs last: it retrains the unet."""
    model = campaign / "results/tiny/models/unet/model.pt"
    before = model.stat().st_mtime
    old_hash = load_model_file(model)[1]["config_sha256"]
    config = write_config(
        tmp_path / "moved.yaml",
        results=str(campaign / "results"),
        methods={"unet": {"epochs": 2}, **ENSEMBLE},
    )
    # the target before --configfile, which takes every path after it as a config file
    dry = snakemake(tmp_path, "-n", str(model), "--configfile", str(config))
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "the settings of train unet differ" in dry.stderr, dry.stderr[-2000:]
    assert model.stat().st_mtime == before  # a dry run changes nothing
    run = snakemake(tmp_path, str(model), "--configfile", str(config))
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert "rule train:" in log and "rule ingest:" not in log, log[-3000:]
    settings = json.loads((campaign / "results/tiny/settings/train_unet.json").read_text())
    assert settings["config"]["methods"]["unet"]["epochs"] == 2
    assert load_model_file(model)[1]["config_sha256"] == settings["config_sha256"] != old_hash
    again = snakemake(tmp_path, "-n", str(model), "--configfile", str(config))
    assert "Nothing to be done" in again.stdout + again.stderr
