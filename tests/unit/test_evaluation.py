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
from climai.evaluation.cubes import metric_context, show_steps
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
    assert csv_text[0].startswith("method,variable,rmse,mae,bias,corr,crps")
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


def test_shown_steps_are_the_wettest_in_time_order(campaign):
    ds = open_store(campaign.paths.dataset)
    steps = show_steps(ds, "pr", 3)
    wet = ds["hr_pr"].mean(("y", "x")).values
    assert steps == sorted(np.argsort(-wet)[:3].tolist())
    n = ds.sizes["time"]
    assert show_steps(ds, None, 2) == [round((n - 1) / 3), round(2 * (n - 1) / 3)]
