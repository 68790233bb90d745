"""Rule ``compare`` (``climai compare``): every method side by side on the test split.

Relevant settings: ``methods`` (which ran), ``variables``, ``evaluate.figure_steps``, ``seed``; the
whole validated config is written into ``summary.html``.
Inputs: ``prep/dataset.zarr``, ``downscaled/<method>/test.zarr``,
``evaluation/<method>/metrics.json`` and ``curves.json`` of every method (the stores are streamed
again only for what those lack).
Outputs: ``evaluation/comparison.png``, ``overview.png`` (the whole domain with a zoom),
``spectra.png``, ``qq.png``, ``rank_histograms.png`` (ensembles only), ``learning_curves.png``
(emulators only), ``summary.csv``, ``summary.md``, ``summary.html``.
"""

from __future__ import annotations

import argparse
import csv
import json
from typing import Any

import numpy as np
import yaml

from climai.data.prepared import PreparedDataset
from climai.evaluation.accumulators import histograms, spectra
from climai.evaluation.cubes import (
    Series,
    common_curves,
    map_panels,
    metric_context,
    show_steps,
    step_labels,
    test_split,
    wet_variable,
)
from climai.evaluation.figures import (
    QQ_LEVELS,
    learning_curves_figure,
    maps_figure,
    qq_figure,
    rank_histogram_figure,
    spectra_figure,
)
from climai.evaluation.mapgrid import MapGrid
from climai.evaluation.metrics import SpectralRegion
from climai.evaluation.overview import overview_figure, zoom_box, zoom_panels, zoom_size
from climai.evaluation.stream import cube, stream_scores
from climai.evaluation.summary import (
    PageFigure,
    markdown_table,
    page_figures,
    rows_to_csv,
    summary_html,
    summary_rows,
)
from climai.io import open_store, read_values, write_text
from climai.stages import StageContext, log


def run(ctx: StageContext, methods: list[str]) -> None:
    """Every method on the test split: maps (read step by step), spectra on one common region,
    QQ and (ensembles) rank-histogram figures; the tables summary.csv, summary.md and
    summary.html from every method's metrics.json. The spectra and quantiles are evaluate's
    (``curves.json``) when every method has them on one spectral region, else every store is
    streamed block by block on the common region of all of them."""
    truth = test_split(open_store(ctx.paths.dataset))
    prep = PreparedDataset(truth)
    variables = ctx.cfg.variable_names
    units = {v.name: v.units for v in ctx.cfg.variables}
    preds = {m: open_store(ctx.paths.downscaled(m)) for m in methods}
    for m in methods:
        for v in variables:
            cube(preds[m][v], v, prep.hr(v), str(ctx.paths.downscaled(m)))
    metrics: dict[str, dict[str, dict[str, Any]]] = {
        m: read_values(ctx.paths.metrics(m)) for m in methods
    }
    ensembles = [m for m in methods if "member" in preds[m].dims]
    # what evaluate wrote of each method (spectra, region, quantiles): the stores are read again
    # only where that is missing or the methods' spectral regions differ
    records = {m: read_values(f) if (f := ctx.paths.curves(m)).is_file() else None for m in methods}
    spectra_: dict[str, Series] = {}
    regions: dict[str, SpectralRegion] = {}
    qq: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    ranks: dict[str, dict[str, list[int]]] = {m: {} for m in ensembles}
    for var in ctx.cfg.variables:
        v = var.name
        # every method with a member dimension gets a rank histogram, whatever evaluate.metrics held
        need = {m: ["rank_histogram"] for m in ensembles if "rank_histogram" not in metrics[m][v]}
        stored = common_curves(records, v, QQ_LEVELS)
        read = methods if stored is None else list(need)
        log.info(
            "compare %s: %s", v,
            "reading every method's store" if stored is None
            else f"evaluate's spectra and quantiles; stores read for rank histograms: {read}",
        )  # fmt: skip
        scores = (
            stream_scores(
                prep.hr(v),
                {m: cube(preds[m][v], v) for m in read},
                None,
                need,
                metric_context(ctx.cfg, var),
                threads=ctx.threads,
            )
            if read
            else {}
        )
        if stored is not None:
            regions[v], spectra_[v], qq[v] = stored
        else:
            pairs = {m: spectra(s.streams).result() for m, s in scores.items()}
            first = pairs[methods[0]]
            regions[v] = first.region
            spectra_[v] = {
                "truth": (first.wavelength, first.truth),
                **{m: (p.wavelength, p.pred) for m, p in pairs.items()},
            }
            hists = {m: histograms(s.streams).result() for m, s in scores.items()}
            qq[v] = {  # each method against the truth on the cells valid in both
                m: (h[1].quantiles(QQ_LEVELS), h[0].quantiles(QQ_LEVELS)) for m, h in hists.items()
            }
        for m in ensembles:
            ranks[m][v] = metrics[m][v].get("rank_histogram") or scores[m].metrics["rank_histogram"]
    steps = show_steps(truth, wet_variable(ctx.cfg.variables), ctx.cfg.evaluate.figure_steps)
    name = f"{ctx.cfg.campaign}: test split"
    grid = MapGrid.of(truth)
    arrays = {
        v: {"truth": prep.hr(v), **{m: cube(preds[m][v], v) for m in methods}} for v in variables
    }
    shown, shown_grid = map_panels(truth, arrays, steps, ctx.cfg.scale, grid)
    when = step_labels(truth, steps)
    maps_figure(shown, when, units, name, ctx.paths.comparison, shown_grid)
    del shown
    # the whole domain at the shown step whose truth is largest, zoomed on its largest region
    v = wet_variable(ctx.cfg.variables) or variables[0]
    best: tuple[float, int, np.ndarray] | None = None  # (mean, index, field): each step read once
    for i, t in enumerate(steps):
        field = prep.hr(v).isel(time=t).values
        mean = float(np.nan_to_num(field).mean())
        if best is None or mean > best[0]:
            best = (mean, i, field)
    assert best is not None
    _, i, whole = best
    box = zoom_box(whole, zoom_size(whole.shape, ctx.cfg.scale), ctx.cfg.scale)
    zooms = zoom_panels(
        prep.lr(v), whole, {m: arrays[v][m] for m in methods}, steps[i], box, ctx.cfg.scale
    )
    overview_figure(
        whole, grid, box, zooms, units[v], f"{name}: {v} at {when[i]}", ctx.paths.overview
    )
    spectra_figure(
        spectra_, regions, units, f"{name}: power spectra", ctx.paths.comparison_spectra, grid
    )
    qq_figure(qq, units, f"{name}: quantiles", ctx.paths.comparison_qq)
    if ensembles:
        rank_histogram_figure(ranks, f"{name}: rank histograms", ctx.paths.rank_histograms)
    flags = {
        m: json.loads(f.read_text()).get("worse_than_bicubic", [])
        for m in methods
        if (f := ctx.paths.validation(m)).is_file()
    }
    rows = summary_rows(metrics, variables, flags, units, ensembles)
    write_text(ctx.paths.summary, rows_to_csv(rows))
    write_text(
        ctx.paths.summary_md,
        markdown_table(metrics, variables, units, flags=flags, ensembles=ensembles),
    )
    emulators = [m for m in methods if m in ctx.cfg.methods.of_kind("emulator")]
    histories = {
        m: list(csv.DictReader(ctx.paths.history(m).read_text().splitlines()))
        for m in emulators
        if ctx.paths.history(m).exists()
    }
    if histories:
        learning_curves_figure(
            histories, f"{ctx.cfg.campaign}: learning curves", ctx.paths.learning_curves
        )
    drawn = {  # this run's figures (never a stale one of an earlier run)
        ctx.paths.rank_histograms: bool(ensembles),
        ctx.paths.learning_curves: bool(histories),
    }
    config_yaml = yaml.safe_dump(ctx.cfg.model_dump(mode="json", by_alias=True), sort_keys=False)
    figures = [
        PageFigure(path.name, caption, path.read_bytes())
        for path, caption in page_figures(ctx.paths)
        if drawn.get(path, True)
    ]
    write_text(
        ctx.paths.summary_html,
        summary_html(
            f"climai campaign {ctx.cfg.campaign}",
            config_yaml,
            metrics,
            variables,
            units,
            figures,
            grid.cell_km,
            ensembles=ensembles,
        ),
    )
    from climai.plan import jobs_html, measured_jobs

    jobs = measured_jobs(ctx.cfg, ctx.paths.root / "benchmarks")
    write_text(ctx.paths.jobs_html, jobs_html(f"climai campaign {ctx.cfg.campaign}: jobs", jobs))
    log.info("compare: %d methods, ensembles: %s", len(methods), ensembles or "none")


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai compare [--methods ...]``: the given methods, else every configured one."""
    run(ctx, args.methods or ctx.cfg.methods.enabled())
