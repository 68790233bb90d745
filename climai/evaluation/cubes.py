"""What the evaluate and compare stages draw and write: map panels (read step by step), spectra
tables, the steps shown, the settings every metric block gets."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import xarray as xr

from climai.config import CampaignConfig, VariableConfig
from climai.data.prepared import PreparedDataset
from climai.evaluation.mapgrid import MAP_CELLS, MapGrid
from climai.evaluation.metrics import SpectralRegion, SpectraPair

Series = dict[str, tuple[np.ndarray, np.ndarray]]


def test_split(ds: xr.Dataset) -> xr.Dataset:
    """The test steps of the prepared dataset ``ds``."""
    return PreparedDataset(ds).split("test").ds


def metric_context(cfg: CampaignConfig, var: VariableConfig) -> dict[str, Any]:
    """The :class:`~climai.evaluation.metrics.MetricInput` settings of ``var`` in ``cfg``."""
    return {
        "kind": var.kind,
        "scale": cfg.scale,
        "bands": cfg.evaluate.bands,
        "wet_threshold": cfg.evaluate.wet_threshold,
        "seed": cfg.seed,
    }


def spectra_csv(spectra: dict[str, SpectraPair]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["variable", "wavelength_cells", "power_method", "power_truth"])
    for var, sp in spectra.items():
        writer.writerows(
            [var, f"{w:.4g}", f"{a:.6g}", f"{b:.6g}"]
            for w, a, b in zip(sp.wavelength, sp.pred, sp.truth, strict=True)
        )
    return buf.getvalue()


def curves_record(
    pairs: dict[str, SpectraPair], qq: dict[str, dict[str, np.ndarray]], levels: np.ndarray
) -> dict[str, dict[str, Any]]:
    """What ``compare`` draws of one evaluated method without reading its store again
    (``evaluation/<method>/curves.json``): per variable the spectral region (rows, columns and
    the test steps used), both spectra, and the prediction's and truth's quantiles at ``levels``
    (``qq[var]`` holds ``"pred"`` and ``"truth"``)."""
    return {
        v: {
            "rows": [p.region.rows.start, p.region.rows.stop],
            "cols": [p.region.cols.start, p.region.cols.stop],
            "steps": [int(t) for t in p.region.steps],
            "wavelength": p.wavelength.tolist(),
            "pred": p.pred.tolist(),
            "truth": p.truth.tolist(),
            "levels": np.asarray(levels).tolist(),
            "qq_pred": qq[v]["pred"].tolist(),
            "qq_truth": qq[v]["truth"].tolist(),
        }
        for v, p in pairs.items()
    }


def common_curves(
    records: dict[str, dict[str, Any] | None], var: str, levels: np.ndarray
) -> tuple[SpectralRegion, Series, dict[str, tuple[np.ndarray, np.ndarray]]] | None:
    """``var``'s spectra (truth first) and QQ quantiles of every method in ``records`` (each a
    :func:`curves_record`, ``None`` where missing), when every method has them on one spectral
    region with the same steps and quantile levels; else ``None`` (compare then reads the stores).
    A method's QQ quantiles are the pair (the truth's, the method's), both on the cells valid in
    the truth and that method's prediction.
    """
    recs = {m: (r or {}).get(var) for m, r in records.items()}
    if not recs or any(r is None for r in recs.values()):
        return None
    first = next(iter(recs.values()))
    assert first is not None

    def same(r: dict[str, Any]) -> bool:
        where = r["rows"], r["cols"], r["steps"]
        return (
            where == (first["rows"], first["cols"], first["steps"])
            and len(r["levels"]) == len(levels)
            and bool(np.allclose(r["levels"], levels))
        )

    if not all(same(r) for r in recs.values() if r is not None):
        return None
    region = SpectralRegion(
        slice(*first["rows"]), slice(*first["cols"]), np.asarray(first["steps"], dtype=np.int64)
    )
    spectra: Series = {"truth": (np.asarray(first["wavelength"]), np.asarray(first["truth"]))}
    qq: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m, r in recs.items():
        assert r is not None
        spectra[m] = (np.asarray(r["wavelength"]), np.asarray(r["pred"]))
        qq[m] = (np.asarray(r["qq_truth"], dtype=float), np.asarray(r["qq_pred"], dtype=float))
    return region, spectra, qq


def show_steps(truth: xr.Dataset, wet_variable: str | None, n: int) -> list[int]:
    """Test steps shown in maps, in time order: the ``n`` wettest (highest domain mean of
    ``wet_variable``, a precipitation variable) when there is one, else ``n`` evenly spaced."""
    size = truth.sizes["time"]
    n = min(n, size)
    if wet_variable is not None:
        wet = (
            PreparedDataset(truth)
            .hr(wet_variable)
            .mean(("y", "x"), skipna=True)
            .fillna(-np.inf)
            .values
        )
        return sorted(int(i) for i in np.argsort(-wet, kind="stable")[:n])
    return sorted({round(float(x)) for x in np.linspace(0, size - 1, n + 2)[1:-1]})


def wet_variable(variables: list[VariableConfig]) -> str | None:
    """The first precipitation variable, whose wettest steps the maps show."""
    return next((v.name for v in variables if v.kind == "precipitation"), None)


def map_panels(
    truth: xr.Dataset,
    arrays: dict[str, dict[str, xr.DataArray]],
    steps: list[int],
    scale: int,
    grid: MapGrid | None = None,
    max_cells: int = MAP_CELLS,
) -> tuple[list[dict[str, dict[str, np.ndarray]]], MapGrid]:
    """Per shown step and variable: the LR input (blocks), the truth and every method's map
    (ensembles: their mean and member 0), and the grid they are on. ``arrays[var][label]`` are
    lazy (time on axis -3, ``"truth"`` among them); only the shown steps are read, one field at a
    time, and each is reduced at once to what a panel draws (:meth:`MapGrid.decimated`: NaN-aware
    block means, at most ``max_cells`` per side), so a 3500×7000 domain keeps ~10⁶ values per
    panel in memory instead of 24.5 M. ``grid``: the fields' grid (default: ``truth``'s)."""
    grid = grid if grid is not None else MapGrid.of(truth)
    prep = PreparedDataset(truth)
    out = []
    small = grid
    for t in steps:
        per_var = {}
        for v, series in arrays.items():
            panels: dict[str, np.ndarray] = {}
            lr = prep.lr(v).isel(time=t).values
            small = _add_panel(panels, "LR input", np.kron(lr, np.ones((scale,) * 2, lr.dtype)),
                               grid, max_cells)  # fmt: skip
            for label in ["truth", *(k for k in series if k != "truth")]:
                small = _add_panel(
                    panels, label, series[label].isel(time=t).values, grid, max_cells
                )
            per_var[v] = panels
        out.append(per_var)
    return out, small


def _add_panel(
    panels: dict[str, np.ndarray], label: str, field: np.ndarray, grid: MapGrid, max_cells: int
) -> MapGrid:
    """``field`` (an ensemble's (member, y, x): its mean and member 0) reduced for drawing."""
    if field.ndim == 3:
        with np.errstate(invalid="ignore"):
            panels[f"{label} mean"], small = grid.decimated(field.mean(axis=0), max_cells)
        panels[f"{label} member 0"], _ = grid.decimated(field[0], max_cells)
        return small
    panels[label], small = grid.decimated(field, max_cells)
    return small


def step_labels(truth: xr.Dataset, steps: list[int]) -> list[str]:
    return [str(truth["time"].values[t])[:16] for t in steps]
