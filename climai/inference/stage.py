"""Stage ``infer``: a method applied to the test split → ``downscaled/<method>/test.zarr``."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from climai.inference.predict import (
    bicubic_prediction,
    load_emulator,
    prediction_dataset,
    quantile_mapped_prediction,
    unet_prediction,
)
from climai.io import open_store, write_store
from climai.models import BASELINES, method_kind
from climai.preprocess.splits import SPLITS
from climai.stage import StageContext, log
from climai.training.stage import load_split


def run_infer(ctx: StageContext, method: str, split: str = "test") -> None:
    """Downscale the ``split`` time steps with ``method``."""
    torch.set_num_threads(ctx.threads)
    ds = open_store(ctx.paths.dataset)
    variables = ctx.cfg.variable_names
    sub = ds.isel(time=np.flatnonzero(ds["split"].values == SPLITS.index(split)))
    kinds = [v.kind for v in ctx.cfg.variables]
    tables: dict[str, xr.DataArray] = {}
    if method == "quantile-mapping":
        qcfg = ctx.cfg.methods.quantile_mapping
        assert qcfg is not None
        train = ds.isel(time=np.flatnonzero(ds["split"].values == SPLITS.index("train")))
        values, src_q, tgt_q = quantile_mapped_prediction(
            np.stack([train[f"lr_{v}"].values for v in variables], axis=1),
            np.stack([train[f"hr_{v}"].values for v in variables], axis=1),
            np.stack([sub[f"lr_{v}"].values for v in variables], axis=1),
            ctx.cfg.scale,
            kinds,
            qcfg.quantiles,
            qcfg.max_samples,
            ctx.cfg.seed,
        )
        levels = np.linspace(0.0, 1.0, qcfg.quantiles)
        for i, v in enumerate(variables):
            units = ds[f"hr_{v}"].attrs.get("units", "")
            desc = "fitted on the train split: bicubic-of-LR"
            tables[f"qm_source_{v}"] = xr.DataArray(
                src_q[i],
                {"quantile": levels},
                ("quantile",),
                {"units": units, "long_name": f"{v} quantiles {desc}"},
            )
            tables[f"qm_target_{v}"] = xr.DataArray(
                tgt_q[i],
                {"quantile": levels},
                ("quantile",),
                {"units": units, "long_name": f"{v} quantiles of the HR truth on the train split"},
            )
    elif method_kind(method) == "baseline":
        lr = np.stack([sub[f"lr_{v}"].values for v in variables], axis=1)
        values = bicubic_prediction(lr, ctx.cfg.scale, kinds, BASELINES[method])
    else:
        model, spec, _card = load_emulator(ctx.paths.model(method))
        if spec.variables != variables:
            raise ValueError(
                f"model {str(ctx.paths.model(method))!r} predicts {spec.variables}, "
                f"the campaign configures {variables}"
            )
        values = unet_prediction(model, spec, load_split(ds, spec, split, with_target=False))
    attrs = {
        v: {
            **{
                k: ds[f"hr_{v}"].attrs[k]
                for k in ("units", "standard_name", "long_name")
                if k in ds[f"hr_{v}"].attrs
            },
            "grid_mapping": "crs",
        }
        for v in variables
    }
    out = prediction_dataset(values, sub, variables, attrs).assign(tables)
    out = ctx.stamp(out.assign_attrs(method=method, split=split))
    write_store(out.chunk({"time": 24}), ctx.paths.downscaled(method, split))
    log.info("infer %s: %d %s steps", method, out.sizes["time"], split)
