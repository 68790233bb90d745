"""Rule ``compare`` (``climai compare``): every method side by side on the test split.

Relevant settings: ``methods`` (which ran), ``variables``, ``evaluate.figure_steps``, ``seed``; the
whole validated config is written into ``summary.html``.
Inputs: ``prep/dataset.zarr``, ``downscaled/<method>/test.zarr`` and
``evaluation/<method>/metrics.json`` of every method.
Outputs: ``evaluation/comparison.png``, ``spectra.png``, ``qq.png``, ``rank_histograms.png``
(ensembles only), ``summary.csv``, ``summary.md``, ``summary.html``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from climai.data.prepared import PreparedDataset
from climai.evaluation.cubes import (
    map_panels,
    prediction_cube,
    show_steps,
    step_labels,
    test_split,
    wet_variable,
)
from climai.evaluation.figures import (
    cube_spectra,
    maps_figure,
    qq_figure,
    rank_histogram_figure,
    spectra_figure,
)
from climai.evaluation.metrics import rank_histogram
from climai.evaluation.summary import markdown_table, rows_to_csv, summary_html, summary_rows
from climai.io import open_store, write_text
from climai.stages import StageContext, log


def run(ctx: StageContext, methods: list[str]) -> None:
    """Every method on the test split: maps, spectra, QQ and (ensembles) rank-histogram
    figures, and the tables summary.csv, summary.md and summary.html."""
    truth = test_split(open_store(ctx.paths.dataset))
    prep = PreparedDataset(truth)
    variables = ctx.cfg.variable_names
    units = {v.name: v.units for v in ctx.cfg.variables}
    preds = {m: open_store(ctx.paths.downscaled(m)) for m in methods}
    cubes = {
        v: {"truth": prep.hr(v).values, **{m: prediction_cube(preds[m], v) for m in methods}}
        for v in variables
    }
    steps = show_steps(truth, wet_variable(ctx.cfg.variables), ctx.cfg.evaluate.figure_steps)
    name = f"{ctx.cfg.campaign}: test split"
    maps_figure(
        map_panels(truth, cubes, steps, ctx.cfg.scale),
        step_labels(truth, steps),
        units,
        name,
        ctx.paths.comparison,
    )
    spectra, regions = cube_spectra(cubes)
    spectra_figure(spectra, regions, units, f"{name}: power spectra", ctx.paths.comparison_spectra)
    qq_figure(cubes, units, f"{name}: quantiles", ctx.paths.comparison_qq)
    metrics: dict[str, dict[str, dict[str, Any]]] = {
        m: json.loads(ctx.paths.metrics(m).read_text()) for m in methods
    }
    ensembles = {  # every method with a member dimension, whatever evaluate.metrics holds
        m: {
            v: metrics[m][v].get("rank_histogram")
            or rank_histogram(cubes[v][m], cubes[v]["truth"], ctx.cfg.seed)
            for v in variables
        }
        for m in methods
        if "member" in preds[m].dims
    }
    if ensembles:
        rank_histogram_figure(ensembles, f"{name}: rank histograms", ctx.paths.rank_histograms)
    rows = summary_rows(metrics, variables)
    write_text(ctx.paths.summary, rows_to_csv(rows))
    write_text(ctx.paths.summary_md, markdown_table(metrics, variables, units))
    config_yaml = yaml.safe_dump(ctx.cfg.model_dump(mode="json", by_alias=True), sort_keys=False)
    write_text(
        ctx.paths.summary_html,
        summary_html(f"climai campaign {ctx.cfg.campaign}", config_yaml, rows),
    )
    log.info("compare: %d methods, ensembles: %s", len(methods), sorted(ensembles) or "none")


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai compare [--methods ...]``: the given methods, else every configured one."""
    run(ctx, args.methods or ctx.cfg.methods.enabled())
