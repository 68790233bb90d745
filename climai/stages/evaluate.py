"""Rule ``evaluate`` (``climai evaluate --method M``): score one method on the test split.

Relevant settings: ``evaluate`` (metrics, bands, wet_threshold, figure_steps), ``variables``,
``scale``, ``seed``.
Inputs: ``prep/dataset.zarr`` (truth ``hr_<var>``, LR ``lr_<var>``, ``split``),
``downscaled/<method>/test.zarr``.
Outputs: ``evaluation/<method>/metrics.json``, ``spectra.csv``, ``curves.json`` (what compare
redraws: spectra, region, quantiles), ``figures/maps.png``,
``figures/spectra.png``, ``figures/qq.png``.
"""

from __future__ import annotations

import argparse

from climai.data.prepared import PreparedDataset
from climai.evaluation.accumulators import histograms, spectra
from climai.evaluation.cubes import (
    curves_record,
    map_panels,
    metric_context,
    show_steps,
    spectra_csv,
    step_labels,
    test_split,
    wet_variable,
)
from climai.evaluation.figures import QQ_LEVELS, maps_figure, qq_figure, spectra_figure
from climai.evaluation.mapgrid import MapGrid
from climai.evaluation.metrics import SpectraPair
from climai.evaluation.stream import cube, stream_scores
from climai.io import open_store, write_json, write_text
from climai.stages import StageContext, log


def run(ctx: StageContext, method: str) -> None:
    """Score ``method`` on the test split, reading it block by block (:mod:`climai.evaluation.
    stream`); write metrics.json, spectra.csv, curves.json and its figures (maps read only their
    steps)."""
    truth = test_split(open_store(ctx.paths.dataset))
    prep = PreparedDataset(truth)
    pred = open_store(ctx.paths.downscaled(method))
    ecfg = ctx.cfg.evaluate
    metrics = {}
    pairs: dict[str, SpectraPair] = {}
    qq = {}
    for var in ctx.cfg.variables:
        v = var.name
        try:
            scores = stream_scores(
                prep.hr(v),
                {method: cube(pred[v], v, prep.hr(v))},
                prep.lr(v),
                {method: ecfg.metrics},
                metric_context(ctx.cfg, var),
                threads=ctx.threads,
            )[method]
        except ValueError as err:
            raise ValueError(
                f"{ctx.paths.downscaled(method)}, variable {v!r} against the truth "
                f"{prep.hr(v).name!r} of {ctx.paths.dataset} (test split): {err}"
            ) from err
        metrics[v] = scores.metrics
        pairs[v] = spectra(scores.streams).result()
        hist_pred, hist_truth = histograms(scores.streams).result()
        qq[v] = {method: (hist_truth.quantiles(QQ_LEVELS), hist_pred.quantiles(QQ_LEVELS))}
    write_json(ctx.paths.metrics(method), metrics)
    write_text(ctx.paths.spectra(method), spectra_csv(pairs))
    write_json(
        ctx.paths.curves(method),
        curves_record(
            pairs,
            {v: {"truth": q[method][0], "pred": q[method][1]} for v, q in qq.items()},
            QQ_LEVELS,
        ),
    )
    units = {v.name: v.units for v in ctx.cfg.variables}
    arrays = {v: {"truth": prep.hr(v), method: cube(pred[v], v)} for v in ctx.cfg.variable_names}
    steps = show_steps(truth, wet_variable(ctx.cfg.variables), ecfg.figure_steps)
    name = f"{ctx.cfg.campaign}: {method}, test split"
    shown, shown_grid = map_panels(truth, arrays, steps, ctx.cfg.scale)
    maps_figure(shown, step_labels(truth, steps), units, name, ctx.paths.maps(method), shown_grid)
    spectra_figure(
        {
            v: {"truth": (s.wavelength, s.truth), method: (s.wavelength, s.pred)}
            for v, s in pairs.items()
        },
        {v: s.region for v, s in pairs.items()},
        units,
        f"{name}: power spectra",
        ctx.paths.spectra_figure(method),
        MapGrid.of(truth),
    )
    qq_figure(qq, units, f"{name}: quantiles", ctx.paths.qq(method))
    log.info("evaluate %s: %s", method, {v: round(m["rmse"], 4) for v, m in metrics.items()})


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai evaluate --method M``."""
    run(ctx, args.method)
