"""Stage ``evaluate``: downscaled test split vs truth → metrics, spectra, figures."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import xarray as xr

from climai.evaluation.figures import comparison_figure
from climai.evaluation.metrics import (
    block_mean_error,
    compute_ensemble_metrics,
    compute_metrics,
    radial_power_spectrum,
)
from climai.io import open_store, write_json, write_text
from climai.preprocess.splits import SPLITS
from climai.stage import StageContext, log


def _test_truth(ctx: StageContext) -> xr.Dataset:
    ds = open_store(ctx.paths.dataset)
    return ds.isel(time=np.flatnonzero(ds["split"].values == SPLITS.index("test")))


def _spectra_csv(pred: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["variable", "wavelength_cells", "power_method", "power_truth"])
    for var in pred:
        wl, p = radial_power_spectrum(pred[var])
        _, pt = radial_power_spectrum(truth[var])
        writer.writerows(
            [var, f"{w:.4g}", f"{a:.6g}", f"{b:.6g}"] for w, a, b in zip(wl, p, pt, strict=False)
        )
    return buf.getvalue()


def _one_member(ds: xr.Dataset) -> xr.Dataset:
    """Member 0 of an ensemble prediction (a deterministic one unchanged): what maps show."""
    return ds.isel(member=0) if "member" in ds.dims else ds


def _show_step(truth: xr.Dataset, variables: list[str]) -> int:
    """The test step shown in maps: the wettest one when there is precipitation, else the middle."""
    if "pr" in variables:
        return int(truth["hr_pr"].mean(("y", "x")).argmax())
    return truth.sizes["time"] // 2


def run_evaluate(ctx: StageContext, method: str) -> None:
    """Score ``method`` on the test split; write metrics.json, spectra.csv and a map figure."""
    truth = _test_truth(ctx)
    pred = open_store(ctx.paths.downscaled(method))
    variables = ctx.cfg.variable_names
    tv = {v: truth[f"hr_{v}"].values for v in variables}
    bands = ctx.cfg.evaluate.bands
    if "member" in pred.dims:  # an ensemble: member 0 stands for it in spectra and maps
        ens = {v: pred[v].transpose("member", ...).values for v in variables}
        metrics = {v: compute_ensemble_metrics(ens[v], tv[v], bands) for v in variables}
        pv = {v: ens[v][0] for v in variables}
    else:
        pv = {v: pred[v].values for v in variables}
        metrics = {v: compute_metrics(pv[v], tv[v], bands) for v in variables}
    for v in variables:  # how far the prediction (member 0 of an ensemble) is from conserving
        metrics[v]["block_mean_error"] = block_mean_error(
            pv[v], truth[f"lr_{v}"].values, ctx.cfg.scale
        )
    write_json(ctx.paths.metrics(method), metrics)
    write_text(ctx.paths.spectra(method), _spectra_csv(pv, tv))
    t = _show_step(truth, variables)
    panels = {
        v: {
            "LR input": np.kron(truth[f"lr_{v}"].values[t], np.ones((ctx.cfg.scale,) * 2)),
            "truth": tv[v][t],
            method: pv[v][t],
        }
        for v in variables
    }
    units = {v.name: v.units for v in ctx.cfg.variables}
    when = str(truth["time"].values[t])[:16]
    comparison_figure(
        panels, units, f"{ctx.cfg.campaign}: {method}, {when}", ctx.paths.maps(method)
    )
    log.info("evaluate %s: %s", method, {v: round(m["rmse"], 4) for v, m in metrics.items()})


def run_compare(ctx: StageContext, methods: list[str]) -> None:
    """One figure and one table comparing every method on the test split."""
    import json

    truth = _test_truth(ctx)
    variables = ctx.cfg.variable_names
    preds = {m: _one_member(open_store(ctx.paths.downscaled(m))) for m in methods}
    t = _show_step(truth, variables)
    panels: dict[str, dict[str, np.ndarray]] = {}
    cubes: dict[str, dict[str, np.ndarray]] = {}
    for v in variables:
        panels[v] = {
            "LR input": np.kron(truth[f"lr_{v}"].values[t], np.ones((ctx.cfg.scale,) * 2)),
            "truth": truth[f"hr_{v}"].values[t],
            **{m: preds[m][v].values[t] for m in methods},
        }
        cubes[v] = {"truth": truth[f"hr_{v}"].values, **{m: preds[m][v].values for m in methods}}
    units = {v.name: v.units for v in ctx.cfg.variables}
    when = str(truth["time"].values[t])[:16]
    comparison_figure(
        panels, units, f"{ctx.cfg.campaign}: test split, {when}", ctx.paths.comparison, cubes
    )
    rows: list[dict[str, Any]] = []
    for m in methods:
        metrics = json.loads(ctx.paths.metrics(m).read_text())
        for v in variables:
            row = {"method": m, "variable": v}
            row.update({k: f"{metrics[v][k]:.4g}" for k in ("rmse", "mae", "bias", "corr")})
            row.update(
                {k: f"{metrics[v][k]:.4g}" for k in ("crps", "spread_skill") if k in metrics[v]}
            )
            row.update(
                {f"spectral_ratio_{b}": f"{r:.3g}" for b, r in metrics[v]["spectral_ratio"].items()}
            )
            rows.append(row)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    write_text(ctx.paths.summary, buf.getvalue())
