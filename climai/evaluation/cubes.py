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
from climai.evaluation.metrics import SpectraPair


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
) -> list[dict[str, dict[str, np.ndarray]]]:
    """Per shown step and variable: the LR input (blocks), the truth and every method's map
    (ensembles: their mean and member 0). ``arrays[var][label]`` are lazy (time on axis -3,
    ``"truth"`` among them); only the shown steps are read."""
    prep = PreparedDataset(truth)
    out = []
    for t in steps:
        per_var = {}
        for v, series in arrays.items():
            panels = {
                "LR input": np.kron(prep.lr(v).isel(time=t).values, np.ones((scale,) * 2)),
                "truth": series["truth"].isel(time=t).values,
            }
            for label, da in series.items():
                if label == "truth":
                    continue
                field = da.isel(time=t).values
                if field.ndim == 3:
                    with np.errstate(invalid="ignore"):
                        panels[f"{label} mean"] = field.mean(axis=0)
                    panels[f"{label} member 0"] = field[0]
                else:
                    panels[label] = field
            per_var[v] = panels
        out.append(per_var)
    return out


def step_labels(truth: xr.Dataset, steps: list[int]) -> list[str]:
    return [str(truth["time"].values[t])[:16] for t in steps]
