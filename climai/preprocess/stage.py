"""Stage ``preprocess``: target + static → ``prep/dataset.zarr`` and ``prep/stats.json``."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import xarray as xr

from climai.io import open_store, write_json, write_store
from climai.preprocess.coarsen import coarsen_block_mean
from climai.preprocess.splits import SPLITS, split_labels
from climai.preprocess.stats import normalisation_stats
from climai.stage import StageContext, log


def build_dataset(
    target: xr.Dataset,
    static: xr.Dataset,
    variables: dict[str, str],
    scale: int,
    fractions: dict[str, float],
    inputs: xr.Dataset | None = None,
) -> xr.Dataset:
    """The ML-ready dataset: ``hr_<var>``, ``lr_<var>``, ``static_<name>`` and ``split``.

    ``variables`` maps names to kinds. LR fields live on ``(time, y_lr, x_lr)``: the block mean
    of HR, or ``inputs`` (``ingest/input.zarr``, already on the LR grid) when given.
    """
    out = xr.Dataset(coords={"time": target["time"], "y": target["y"], "x": target["x"]})
    for name in variables:
        hr = target[name]
        if inputs is not None:
            lr = inputs[name].sel(time=target["time"]).rename({"y": "y_lr", "x": "x_lr"})
        else:
            lr = coarsen_block_mean(hr, scale).rename({"y": "y_lr", "x": "x_lr"})
        out[f"hr_{name}"] = hr
        out[f"lr_{name}"] = lr.chunk({"time": hr.chunks[0] if hr.chunks else -1})
    for name in static.data_vars:
        if name != "crs":
            out[f"static_{name}"] = static[name]
    labels = split_labels(target.sizes["time"], fractions)
    out["split"] = xr.DataArray(
        labels,
        dims="time",
        attrs={"flag_values": list(range(len(SPLITS))), "flag_meanings": " ".join(SPLITS)},
    )
    if "crs" in target:
        out["crs"] = target["crs"]
    return out


def compute_stats(ds: xr.Dataset, variables: dict[str, str]) -> dict[str, Any]:
    """Normalisation statistics from the train split only, plus static-field moments."""
    is_train = ds["split"] == SPLITS.index("train")
    stats: dict[str, Any] = {
        name: normalisation_stats(ds[f"hr_{name}"], is_train, kind)
        for name, kind in variables.items()
    }
    stats["static"] = {}
    for var in ds.data_vars:
        if str(var).startswith("static_"):
            values = ds[var].values.astype(np.float64)
            std = float(np.nanstd(values))
            stats["static"][str(var)[7:]] = {"mean": float(np.nanmean(values)), "std": std or 1.0}
    times = ds["time"].values
    stats["splits"] = {
        s: [str(times[ds["split"].values == i][0]), str(times[ds["split"].values == i][-1])]
        for i, s in enumerate(SPLITS)
    }
    return stats


def run_preprocess(ctx: StageContext) -> None:
    """Coarsen, split and normalise; write the dataset and its statistics."""
    cfg = ctx.cfg
    variables = {v.name: v.kind for v in cfg.variables}
    with dask.config.set(scheduler="threads", num_workers=ctx.threads):
        ds = build_dataset(
            open_store(ctx.paths.target),
            open_store(ctx.paths.static),
            variables,
            cfg.scale,
            cfg.split.model_dump(),
            open_store(ctx.paths.input) if cfg.data.input is not None else None,
        )
        ds = ctx.stamp(ds.assign_attrs(scale=cfg.scale))
        stats = compute_stats(ds, variables)
        write_store(ds, ctx.paths.dataset)
    write_json(ctx.paths.stats, stats)
    log.info("preprocess: %s", {k: v for k, v in stats.items() if k in variables})
