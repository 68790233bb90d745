"""Rule ``evaluate`` (``climai evaluate --method M``): score one method on the test split.

Relevant settings: ``evaluate`` (metrics, bands, wet_threshold, figure_steps), ``variables``,
``scale``, ``seed``.
Inputs: ``prep/dataset.zarr`` (truth ``hr_<var>``, LR ``lr_<var>``, ``split``),
``downscaled/<method>/test.zarr``.
Outputs: ``evaluation/<method>/metrics.json``, ``spectra.csv``, ``figures/maps.png``,
``figures/spectra.png``, ``figures/qq.png``.
"""

from __future__ import annotations

import argparse

from climai.data.prepared import PreparedDataset
from climai.evaluation.cubes import (
    map_panels,
    prediction_cube,
    show_steps,
    spectra_csv,
    step_labels,
    test_split,
    wet_variable,
)
from climai.evaluation.figures import maps_figure, qq_figure, spectra_figure
from climai.evaluation.metrics import MetricInput, SpectraPair, compute_metrics
from climai.io import open_store, write_json, write_text
from climai.stages import StageContext, log


def run(ctx: StageContext, method: str) -> None:
    """Score ``method`` on the test split; write metrics.json, spectra.csv and its figures."""
    truth = test_split(open_store(ctx.paths.dataset))
    prep = PreparedDataset(truth)
    pred = open_store(ctx.paths.downscaled(method))
    variables = ctx.cfg.variable_names
    ecfg = ctx.cfg.evaluate
    pv = {v: prediction_cube(pred, v) for v in variables}
    tv = {v: prep.hr(v).values for v in variables}
    metrics = {}
    spectra: dict[str, SpectraPair] = {}
    for var in ctx.cfg.variables:
        v = var.name
        inp = MetricInput(
            pred=pv[v],
            truth=tv[v],
            kind=var.kind,
            lr=prep.lr(v).values,
            scale=ctx.cfg.scale,
            bands=ecfg.bands,
            wet_threshold=ecfg.wet_threshold,
            seed=ctx.cfg.seed,
        )
        metrics[v] = compute_metrics(inp, names=ecfg.metrics)
        spectra[v] = inp.spectra()
    write_json(ctx.paths.metrics(method), metrics)
    write_text(ctx.paths.spectra(method), spectra_csv(spectra))
    units = {v.name: v.units for v in ctx.cfg.variables}
    cubes = {v: {"truth": tv[v], method: pv[v]} for v in variables}
    steps = show_steps(truth, wet_variable(ctx.cfg.variables), ecfg.figure_steps)
    name = f"{ctx.cfg.campaign}: {method}, test split"
    maps_figure(
        map_panels(truth, cubes, steps, ctx.cfg.scale),
        step_labels(truth, steps),
        units,
        name,
        ctx.paths.maps(method),
    )
    spectra_figure(
        {
            v: {"truth": (s.wavelength, s.truth), method: (s.wavelength, s.pred)}
            for v, s in spectra.items()
        },
        {v: s.region for v, s in spectra.items()},
        units,
        f"{name}: power spectra",
        ctx.paths.spectra_figure(method),
    )
    qq_figure(cubes, units, f"{name}: quantiles", ctx.paths.qq(method))
    log.info("evaluate %s: %s", method, {v: round(m["rmse"], 4) for v, m in metrics.items()})


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai evaluate --method M``."""
    run(ctx, args.method)
