"""Stage ``infer``: a method applied to the test split → ``downscaled/<method>/test.zarr``."""

from __future__ import annotations

import numpy as np
import torch

from climai.inference.predict import (
    bicubic_prediction,
    load_emulator,
    prediction_dataset,
    unet_prediction,
)
from climai.io import open_store, write_store
from climai.models import method_kind
from climai.preprocess.splits import SPLITS
from climai.stage import StageContext, log
from climai.training.stage import load_split


def run_infer(ctx: StageContext, method: str, split: str = "test") -> None:
    """Downscale the ``split`` time steps with ``method``."""
    torch.set_num_threads(ctx.threads)
    ds = open_store(ctx.paths.dataset)
    variables = ctx.cfg.variable_names
    sub = ds.isel(time=np.flatnonzero(ds["split"].values == SPLITS.index(split)))
    if method_kind(method) == "baseline":
        lr = np.stack([sub[f"lr_{v}"].values for v in variables], axis=1)
        values = bicubic_prediction(lr, ctx.cfg.scale, [v.kind for v in ctx.cfg.variables])
    else:
        model, spec, _card = load_emulator(ctx.paths.model(method))
        if spec.variables != variables:
            raise ValueError(
                f"model {str(ctx.paths.model(method))!r} predicts {spec.variables}, "
                f"the campaign configures {variables}"
            )
        values = unet_prediction(
            model, spec, load_split(ds, spec, split, with_target=False), seed=ctx.cfg.seed
        )
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
    out = prediction_dataset(values, sub, variables, attrs)
    out = ctx.stamp(out.assign_attrs(method=method, split=split))
    chunks = {"time": 24, **({"member": 1} if "member" in out.dims else {})}
    write_store(out.chunk(chunks), ctx.paths.downscaled(method, split))
    log.info(
        "infer %s: %d %s steps, %d member(s)",
        method,
        out.sizes["time"],
        split,
        out.sizes.get("member", 1),
    )
