"""Stage ``train``: ``prep/dataset.zarr`` → ``models/<method>/model.pt`` and ``history.csv``."""

from __future__ import annotations

import csv
import io
import json
import platform
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

import climai
from climai.config import UNetConfig
from climai.data.features import FeatureSpec, SplitTensors, build_split
from climai.io import open_store, write_text
from climai.io.checkpoints import save_model
from climai.io.provenance import git_commit
from climai.preprocess.splits import SPLITS
from climai.stage import StageContext, log
from climai.training.loop import train_model


def feature_spec(
    ds: xr.Dataset, variables: list[str], scale: int, stats: dict[str, Any]
) -> FeatureSpec:
    """The features of a preprocessed dataset: its variables and static fields."""
    statics = sorted(str(v)[7:] for v in ds.data_vars if str(v).startswith("static_"))
    return FeatureSpec(variables=variables, statics=statics, scale=scale, stats=stats)


def load_split(
    ds: xr.Dataset, spec: FeatureSpec, split: str, with_target: bool = True
) -> SplitTensors:
    """Tensors of one split (read into memory) from the preprocessed dataset."""
    idx = np.flatnonzero(ds["split"].values == SPLITS.index(split))
    sub = ds.isel(time=idx)
    lr = np.stack([sub[f"lr_{v}"].values for v in spec.variables], axis=1)
    hr = np.stack([sub[f"hr_{v}"].values for v in spec.variables], axis=1) if with_target else None
    static = np.stack([ds[f"static_{s}"].values for s in spec.statics])
    return build_split(spec, lr, static, pd.DatetimeIndex(sub["time"].values), hr)


def model_card(ctx: StageContext, method: str, spec: FeatureSpec, ds: xr.Dataset) -> dict[str, Any]:
    """Everything needed to use and trust the model later: config, stats, grids, provenance."""
    mcfg = getattr(ctx.cfg.methods, method)
    return {
        "method": method,
        "architecture": {
            "name": "ResidualUNet",
            "norm": "channel",
            "channels": list(mcfg.channels),
        },
        "features": spec.as_dict(),
        "config": json.loads(ctx.cfg.model_dump_json()),
        "config_sha256": ctx.config_sha256,
        "grid": {
            "hr_dx": float(ds["x"][1] - ds["x"][0]),
            "hr_dy": float(ds["y"][1] - ds["y"][0]),
            "crs_wkt": str(ds["crs"].attrs.get("crs_wkt", "")) if "crs" in ds else "",
        },
        "units": {v.name: v.units for v in ctx.cfg.variables},
        "provenance": {
            "climai_version": climai.__version__,
            "git_commit": git_commit(),
            "torch": str(torch.__version__),
            "python": platform.python_version(),
            "seed": ctx.cfg.seed,
            "dataset_config_sha256": str(ds.attrs.get("config_sha256", "")),
        },
    }


def run_train(ctx: StageContext, method: str) -> None:
    """Train ``method`` on the train split, select on the val split, write model and history."""
    mcfg = getattr(ctx.cfg.methods, method)
    if not isinstance(mcfg, UNetConfig):
        raise ValueError(f"method {method!r} is not trainable")
    torch.set_num_threads(mcfg.threads or ctx.threads)
    ds = open_store(ctx.paths.dataset)
    stats = json.loads(ctx.paths.stats.read_text())
    spec = feature_spec(ds, ctx.cfg.variable_names, ctx.cfg.scale, stats)
    train, val = load_split(ds, spec, "train"), load_split(ds, spec, "val")
    log.info(
        "train %s: %d train / %d val steps, %d input channels",
        method,
        train.x.shape[0],
        val.x.shape[0],
        spec.in_channels,
    )
    model, history = train_model(
        mcfg,
        spec.in_channels,
        spec.out_channels,
        train,
        val,
        ctx.cfg.scale,
        ctx.cfg.seed,
        log=log.info,
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(ctx.paths.history(method), buf.getvalue())
    save_model(ctx.paths.model(method), model.state_dict(), model_card(ctx, method, spec, ds))
