"""The evaluate and compare stages on a tiny campaign, with a deterministic baseline and a
synthetic ensemble (a ``member`` dimension, as an ensemble emulator writes it)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from climai.config import deep_merge, validate_config
from climai.data.prepared import PreparedDataset
from climai.evaluation import stream
from climai.evaluation.accumulators import histograms, spectra
from climai.evaluation.cubes import common_curves, metric_context, show_steps
from climai.evaluation.figures import QQ_LEVELS
from climai.evaluation.metrics import MetricInput, compute_metrics
from climai.evaluation.sketch import NBINS
from climai.evaluation.summary import markdown_table
from climai.io import open_store, write_store
from climai.preprocess.splits import SPLITS
from climai.stages import StageContext
from climai.stages.compare import run as run_compare
from climai.stages.evaluate import run as run_evaluate
from climai.stages.infer import run as run_infer
from climai.stages.ingest import run as run_ingest
from climai.stages.preprocess import run as run_preprocess
from climai.testing import TINY_CAMPAIGN, synthetic_ensemble_store
from tests.unit.test_streamed_metrics import QUANTILE_METRICS, assert_close

# the module's campaign fixture takes ~35 s on the shared 2-core machine
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> StageContext:
    root = tmp_path_factory.mktemp("eval")
    raw = deep_merge(TINY_CAMPAIGN, {"results": str(root), "data": {"target": {"steps": 40}}})
    ctx = StageContext(validate_config(raw), "0" * 64, "test", 1)
    run_ingest(ctx)
    run_preprocess(ctx)
    for method in ("bicubic", "quantile-mapping"):
        run_infer(ctx, method)
    ds = open_store(ctx.paths.dataset)
    test = ds.isel(time=np.flatnonzero(ds["split"].values == SPLITS.index("test")))
    write_store(
        synthetic_ensemble_store(test, ctx.cfg.variable_names, members=5, noise=0.3),
        ctx.paths.downscaled("unet-crps"),
    )
    # blocks of one time step, scored in 3 threads (runs of blocks merged): the most merging
    threaded = replace(ctx, threads=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stream, "BLOCK_BYTES", 1)
        for method in ("bicubic", "quantile-mapping", "unet-crps"):
            run_evaluate(threaded, method)
        run_compare(threaded, ["bicubic", "quantile-mapping", "unet-crps"])
    return ctx


def _metrics(ctx: StageContext, method: str) -> dict:
    return json.loads(ctx.paths.metrics(method).read_text())


def test_deterministic_metrics_json(campaign):
    m = _metrics(campaign, "bicubic")
    assert set(m) == {"tas", "pr"}
    for var, values in m.items():
        assert {"rmse", "mae", "bias", "corr", "spectral_ratio", "quantile_error"} <= set(values)
        assert set(values["quantiles"]) == {"p50", "p90", "p99", "p99.9"}
        assert values["conservation_error"] >= 0
        assert "crps" not in values and "rank_histogram" not in values, var
    assert {"wet_fraction", "wet_intensity", "wet_fraction_truth"} <= set(m["pr"])
    assert "wet_fraction" not in m["tas"]


def test_quantile_mapping_is_stored_and_fixes_the_precipitation_tail(campaign):
    store = open_store(campaign.paths.downscaled("quantile-mapping"))
    assert store["qm_source_pr"].sizes["quantile"] == 1001
    assert np.all(np.diff(store["qm_target_pr"].values) >= 0)
    qm, bic = _metrics(campaign, "quantile-mapping"), _metrics(campaign, "bicubic")
    assert abs(qm["pr"]["quantile_error"]["p99"]) < abs(bic["pr"]["quantile_error"]["p99"])
    assert abs(qm["pr"]["wet_fraction"] - qm["pr"]["wet_fraction_truth"]) < abs(
        bic["pr"]["wet_fraction"] - bic["pr"]["wet_fraction_truth"]
    )


@pytest.mark.parametrize("method", ["bicubic", "quantile-mapping", "unet-crps"])
def test_streamed_metrics_json_equals_the_in_memory_metrics(campaign, method):
    """evaluate read the stores one time step at a time; its metrics.json equals the in-memory
    metrics of the whole test split within the stated tolerances."""
    cfg = campaign.cfg
    prep = PreparedDataset(open_store(campaign.paths.dataset)).split("test")
    pred = open_store(campaign.paths.downscaled(method))
    streamed = _metrics(campaign, method)
    for var in cfg.variables:
        v = var.name
        inp = MetricInput(
            stream.cube(pred[v], v).values,
            prep.hr(v).values,
            lr=prep.lr(v).values,
            **metric_context(cfg, var),
        )
        in_memory = compute_metrics(inp, names=cfg.evaluate.metrics)
        values = np.concatenate([inp.pred.ravel(), inp.truth.ravel()])
        bin_width = float(np.nanmax(values) - np.nanmin(values)) / NBINS
        assert set(streamed[v]) == set(in_memory)
        for name, value in in_memory.items():
            atol = 2 * bin_width if name in QUANTILE_METRICS else 1e-12
            assert_close(streamed[v][name], value, atol, f"{method}.{v}.{name}")


def test_ensemble_metrics_from_a_member_dimension(campaign):
    m = _metrics(campaign, "unet-crps")
    for values in m.values():
        assert 0 < values["crps_fair"] <= values["crps"] < values["mae"] + 1e-9
        assert len(values["rank_histogram"]) == 6
        assert values["spread_skill"]["ratio"] > 0
        # the members are the truth plus noise: spectra too rough, not too smooth
        assert values["spectral_ratio"]["2-4"] > 1


def test_compare_writes_figures_and_tables(campaign):
    p = campaign.paths
    for fig in (
        p.comparison,
        p.overview,
        p.comparison_spectra,
        p.comparison_qq,
        p.rank_histograms,
        p.maps("bicubic"),
        p.qq("unet-crps"),
        p.spectra_figure("unet-crps"),
    ):
        with Image.open(fig) as im:
            assert im.format == "PNG" and min(im.size) > 200, fig
    csv_text = p.summary.read_text().splitlines()
    assert csv_text[0].startswith("method,variable,units,rmse,mae,bias,corr,crps")
    assert len(csv_text) == 1 + 3 * 2
    md = p.summary_md.read_text()
    assert "| unet-crps |" in md and "| quantile-mapping |" in md and "p99 error" in md
    html = p.summary_html.read_text()
    assert "<table class='metrics' id='metrics-pr'>" in html and "quantile-mapping" in html
    # the figures inline (no learning curves: unet-crps here was written, not trained)
    assert html.count("src='data:image/png;base64,") == 5
    assert html.index("<details>") < html.index("campaign: tiny") < html.index("</details>")


def test_markdown_table_by_hand():
    metrics = {
        "bicubic": {
            "pr": {
                "rmse": 0.5,
                "mae": 0.2,
                "spectral_ratio": {"2-4": 0.01, "4-8": 0.5},
                "quantile_error": {"p99": -1.25},
            }
        },
        "ens": {
            "pr": {
                "rmse": 0.25,
                "mae": 0.15,
                "crps": 0.1,
                "spectral_ratio": {"2-4": 0.9, "4-8": 1.0},
                "quantile_error": {"p99": 0.125},
            }
        },
    }
    md = markdown_table(metrics, ["pr"], {"pr": "mm h-1"})
    assert "| bicubic | 0.5 | 0.2* | 0.01 / 0.50 | -1.25 |" in md
    assert "| ens | 0.25 (0.50×) | 0.1 (0.50×) | 0.90 / 1.00 | 0.125 |" in md  # CRPS / bicubic MAE


def test_an_ensemble_scored_without_crps_shows_no_crps_and_no_deterministic_mark():
    """evaluate.metrics without crps: the ensemble's ensemble-mean MAE filled its CRPS column,
    marked '*' ("deterministic method: its CRPS equals its MAE"), in summary.md, .csv and .html."""
    from climai.evaluation.summary import summary_html, summary_rows

    point = {"rmse": 0.5, "mae": 0.2, "spectral_ratio": {"2-4": 0.5}}
    metrics = {"bicubic": {"pr": point}, "ens": {"pr": {**point, "rmse": 0.25, "mae": 0.125}}}
    md = markdown_table(metrics, ["pr"], {"pr": "mm h-1"}, ensembles=["ens"])
    assert "| ens | 0.25 (0.50×) |  | 0.50 |  |" in md
    assert "| bicubic | 0.5 | 0.2* | 0.50 |  |" in md
    rows = summary_rows(metrics, ["pr"], ensembles=["ens"])
    assert [r["crps"] for r in rows] == ["0.2", ""] and rows[1]["mae"] == "0.125"
    page = summary_html("t", "", metrics, ["pr"], {"pr": "mm h-1"}, [], ensembles=["ens"])
    assert (
        "<th>ens</th><td>0.25</td><td>0.50×</td><td>0.125</td><td></td><td></td><td></td>" in page
    )


def test_shown_steps_are_the_wettest_in_time_order(campaign):
    ds = open_store(campaign.paths.dataset)
    steps = show_steps(ds, "pr", 3)
    wet = ds["hr_pr"].mean(("y", "x")).values
    assert steps == sorted(np.argsort(-wet)[:3].tolist())
    n = ds.sizes["time"]
    assert show_steps(ds, None, 2) == [round((n - 1) / 3), round(2 * (n - 1) / 3)]


def _records(ctx: StageContext, methods: list[str]) -> dict:
    return {m: json.loads(ctx.paths.curves(m).read_text()) for m in methods}


def test_compare_draws_evaluates_spectra_and_quantiles_equal_to_streaming_every_store(campaign):
    """compare takes each method's spectra and QQ quantiles from evaluate's curves.json: the
    same region, steps and spectra as streaming every store on their common region, quantiles
    within two histogram bins (each evaluate's histogram spans its own value range)."""
    methods = ["bicubic", "quantile-mapping", "unet-crps"]
    prep = PreparedDataset(open_store(campaign.paths.dataset)).split("test")
    preds = {m: open_store(campaign.paths.downscaled(m)) for m in methods}
    for var in campaign.cfg.variables:
        v = var.name
        stored = common_curves(_records(campaign, methods), v, QQ_LEVELS)
        assert stored is not None, v
        region, spectra_, qq = stored
        scores = stream.stream_scores(
            prep.hr(v),
            {m: stream.cube(preds[m][v], v) for m in methods},
            None,
            {},
            metric_context(campaign.cfg, var),
        )
        truth = prep.hr(v).values
        values = np.concatenate([truth.ravel(), *(preds[m][v].values.ravel() for m in methods)])
        bin_width = float(np.nanmax(values) - np.nanmin(values)) / NBINS
        for m, s in scores.items():
            pair = spectra(s.streams).result()
            assert (pair.region.rows, pair.region.cols) == (region.rows, region.cols)
            np.testing.assert_array_equal(pair.region.steps, region.steps)
            np.testing.assert_allclose(spectra_[m][1], pair.pred, rtol=1e-9)
            np.testing.assert_allclose(spectra_["truth"][1], pair.truth, rtol=1e-9)
            hist_pred, hist_truth = histograms(s.streams).result()
            np.testing.assert_allclose(qq[m][1], hist_pred.quantiles(QQ_LEVELS), atol=2 * bin_width)
            np.testing.assert_allclose(
                qq[m][0], hist_truth.quantiles(QQ_LEVELS), atol=2 * bin_width
            )


def test_each_method_is_drawn_against_the_truth_on_its_own_valid_cells(campaign):
    """Two methods valid on different cells: each QQ pair's truth is that of its own cells (the
    figure drew every method against the first method's truth quantiles)."""
    records = _records(campaign, ["bicubic", "unet-crps"])
    records["unet-crps"]["pr"]["qq_truth"] = [
        q + 1.0 for q in records["unet-crps"]["pr"]["qq_truth"]
    ]
    stored = common_curves(records, "pr", QQ_LEVELS)
    assert stored is not None
    qq = stored[2]
    np.testing.assert_array_equal(qq["bicubic"][0], records["bicubic"]["pr"]["qq_truth"])
    np.testing.assert_array_equal(qq["unet-crps"][0], records["unet-crps"]["pr"]["qq_truth"])
    np.testing.assert_array_equal(qq["unet-crps"][1], records["unet-crps"]["pr"]["qq_pred"])


def test_common_curves_only_where_every_method_has_them_on_one_region(campaign):
    records = _records(campaign, ["bicubic", "unet-crps"])
    assert common_curves(records, "pr", QQ_LEVELS) is not None
    assert common_curves({**records, "unet-crps": None}, "pr", QQ_LEVELS) is None
    assert common_curves(records, "no-such-variable", QQ_LEVELS) is None
    assert common_curves(records, "pr", QQ_LEVELS[:-1]) is None
    moved = deep_merge(
        records["unet-crps"], {"pr": {"steps": records["unet-crps"]["pr"]["steps"][1:]}}
    )
    assert common_curves({**records, "unet-crps": moved}, "pr", QQ_LEVELS) is None
    shifted = deep_merge(
        records["bicubic"], {"pr": {"rows": [1, 1 + np.diff(records["bicubic"]["pr"]["rows"])[0]]}}
    )
    assert common_curves({**records, "bicubic": shifted}, "pr", QQ_LEVELS) is None
    # the second method's quantiles at other levels (same count) are not the first's curve
    other = [float(q) ** 2 for q in records["unet-crps"]["pr"]["levels"]]
    relevel = deep_merge(records["unet-crps"], {"pr": {"levels": other}})
    assert common_curves({**records, "unet-crps": relevel}, "pr", QQ_LEVELS) is None


def test_compare_streams_every_store_where_a_method_has_no_curves(campaign, caplog):
    methods = ["bicubic", "unet-crps"]
    path = campaign.paths.curves("bicubic")
    aside = path.with_name("curves.aside")
    path.rename(aside)
    try:
        campaign.paths.comparison_spectra.unlink()
        with caplog.at_level("INFO", logger="climai"):
            run_compare(campaign, methods)
    finally:
        aside.rename(path)
    assert "compare pr: reading every method's store" in caplog.text
    with Image.open(campaign.paths.comparison_spectra) as im:
        assert im.format == "PNG"
    caplog.clear()
    with caplog.at_level("INFO", logger="climai"):
        run_compare(campaign, methods)
    assert "compare pr: evaluate's spectra and quantiles; stores read for rank histograms: []" in (
        caplog.text
    )


def test_an_all_nan_prediction_is_named_with_its_store_and_variable(campaign):
    """A method whose ``pr`` is NaN everywhere (a diverged model): evaluate names the store, the
    variable and the prediction, not the spectrum (it blamed "no cell is valid in at least half
    of the time steps: no spectrum")."""
    store = open_store(campaign.paths.downscaled("bicubic")).load()
    store["pr"][:] = np.nan
    path = campaign.paths.downscaled("nan-method")
    write_store(store, path)
    with pytest.raises(ValueError) as err:
        run_evaluate(campaign, "nan-method")
    message = str(err.value)
    assert str(path) in message and "variable 'pr'" in message
    assert "prediction 'nan-method'" in message and "no valid (finite) value" in message
    assert "no spectrum" not in message


@pytest.mark.parametrize("change", ["y reversed", "other hours"])
def test_a_prediction_on_other_coordinates_is_refused_not_scored_by_position(campaign, change):
    """bicubic's own fields stored with y north to south, or labelled with other hours: evaluate
    and compare refuse them, naming the store and the coordinate (they were scored cell by cell
    by position: RMSE 5.28 K instead of 0.839 K for y reversed on the toy campaign)."""
    store = open_store(campaign.paths.downscaled("bicubic")).load()
    if change == "y reversed":
        moved, dim = store.isel(y=slice(None, None, -1)), "y"
    else:
        moved, dim = store.assign_coords(time=store["time"].values + np.timedelta64(1, "h")), "time"
    path = campaign.paths.downscaled("moved")
    write_store(moved, path)
    for run in (lambda: run_evaluate(campaign, "moved"), lambda: run_compare(campaign, ["moved"])):
        with pytest.raises(ValueError, match=rf"{dim}\[0\] is .* the truth 'hr_tas' has") as err:
            run()
        assert str(path) in str(err.value)
