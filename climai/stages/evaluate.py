"""Stage ``evaluate``: downscaled test split vs truth → metrics, spectra, figures; and ``compare``:
every method side by side → figures, summary.csv, summary.md, summary.html."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import xarray as xr
import yaml

from climai.evaluation.figures import (
    cube_spectra,
    maps_figure,
    qq_figure,
    rank_histogram_figure,
    spectra_figure,
)
from climai.evaluation.metrics import MetricInput, SpectraPair, compute_metrics, rank_histogram
from climai.evaluation.summary import markdown_table, rows_to_csv, summary_html, summary_rows
from climai.io import open_store, write_json, write_text
from climai.preprocess.splits import SPLITS
from climai.stage import StageContext, log


def _test_truth(ctx: StageContext) -> xr.Dataset:
    ds = open_store(ctx.paths.dataset)
    return ds.isel(time=np.flatnonzero(ds["split"].values == SPLITS.index("test")))


def prediction_cube(pred: xr.Dataset, var: str) -> np.ndarray:
    """(T, H, W), or (M, T, H, W) when the store has a ``member`` dimension."""
    da = pred[var]
    dims = ("member", "time", "y", "x") if "member" in da.dims else ("time", "y", "x")
    if set(da.dims) != set(dims):
        raise ValueError(
            f"downscaled variable {var!r} has dimensions {da.dims}; expected {dims} "
            "(member optional)"
        )
    return da.transpose(*dims).values


def _spectra_csv(spectra: dict[str, SpectraPair]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["variable", "wavelength_cells", "power_method", "power_truth"])
    for var, sp in spectra.items():
        writer.writerows(
            [var, f"{w:.4g}", f"{a:.6g}", f"{b:.6g}"]
            for w, a, b in zip(sp.wavelength, sp.pred, sp.truth, strict=True)
        )
    return buf.getvalue()


def show_steps(truth: xr.Dataset, wet_variable: str | None, n: int) -> list[int]:
    """Test steps shown in maps, in time order: the ``n`` wettest (highest domain mean of
    ``wet_variable``, a precipitation variable) when there is one, else ``n`` evenly spaced."""
    size = truth.sizes["time"]
    n = min(n, size)
    if wet_variable is not None:
        wet = truth[f"hr_{wet_variable}"].mean(("y", "x"), skipna=True).fillna(-np.inf).values
        return sorted(int(i) for i in np.argsort(-wet, kind="stable")[:n])
    return sorted({round(float(x)) for x in np.linspace(0, size - 1, n + 2)[1:-1]})


def _wet_variable(ctx: StageContext) -> str | None:
    return next((v.name for v in ctx.cfg.variables if v.kind == "precipitation"), None)


def _panels(
    ctx: StageContext,
    truth: xr.Dataset,
    cubes: dict[str, dict[str, np.ndarray]],
    steps: list[int],
) -> list[dict[str, dict[str, np.ndarray]]]:
    out = []
    for t in steps:
        per_var = {}
        for v, series in cubes.items():
            panels = {
                "LR input": np.kron(truth[f"lr_{v}"].values[t], np.ones((ctx.cfg.scale,) * 2)),
                "truth": series["truth"][t],
            }
            for label, cube in series.items():
                if label == "truth":
                    continue
                if cube.ndim == 4:
                    with np.errstate(invalid="ignore"):
                        panels[f"{label} mean"] = cube[:, t].mean(axis=0)
                    panels[f"{label} member 0"] = cube[0, t]
                else:
                    panels[label] = cube[t]
            per_var[v] = panels
        out.append(per_var)
    return out


def _when(truth: xr.Dataset, steps: list[int]) -> list[str]:
    return [str(truth["time"].values[t])[:16] for t in steps]


def run_evaluate(ctx: StageContext, method: str) -> None:
    """Score ``method`` on the test split; write metrics.json, spectra.csv and its figures."""
    truth = _test_truth(ctx)
    pred = open_store(ctx.paths.downscaled(method))
    variables = ctx.cfg.variable_names
    ecfg = ctx.cfg.evaluate
    pv = {v: prediction_cube(pred, v) for v in variables}
    tv = {v: truth[f"hr_{v}"].values for v in variables}
    metrics = {}
    spectra: dict[str, SpectraPair] = {}
    for var in ctx.cfg.variables:
        v = var.name
        inp = MetricInput(
            pred=pv[v],
            truth=tv[v],
            kind=var.kind,
            lr=truth[f"lr_{v}"].values,
            scale=ctx.cfg.scale,
            bands=ecfg.bands,
            wet_threshold=ecfg.wet_threshold,
            seed=ctx.cfg.seed,
        )
        metrics[v] = compute_metrics(inp, names=ecfg.metrics)
        spectra[v] = inp.spectra()
    write_json(ctx.paths.metrics(method), metrics)
    write_text(ctx.paths.spectra(method), _spectra_csv(spectra))
    units = {v.name: v.units for v in ctx.cfg.variables}
    cubes = {v: {"truth": tv[v], method: pv[v]} for v in variables}
    steps = show_steps(truth, _wet_variable(ctx), ecfg.figure_steps)
    name = f"{ctx.cfg.campaign}: {method}, test split"
    maps_figure(
        _panels(ctx, truth, cubes, steps), _when(truth, steps), units, name, ctx.paths.maps(method)
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


def run_compare(ctx: StageContext, methods: list[str]) -> None:
    """Every method on the test split: maps, spectra, QQ and (ensembles) rank-histogram
    figures, and the tables summary.csv, summary.md and summary.html."""
    truth = _test_truth(ctx)
    variables = ctx.cfg.variable_names
    units = {v.name: v.units for v in ctx.cfg.variables}
    preds = {m: open_store(ctx.paths.downscaled(m)) for m in methods}
    cubes = {
        v: {"truth": truth[f"hr_{v}"].values, **{m: prediction_cube(preds[m], v) for m in methods}}
        for v in variables
    }
    steps = show_steps(truth, _wet_variable(ctx), ctx.cfg.evaluate.figure_steps)
    name = f"{ctx.cfg.campaign}: test split"
    maps_figure(
        _panels(ctx, truth, cubes, steps), _when(truth, steps), units, name, ctx.paths.comparison
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
