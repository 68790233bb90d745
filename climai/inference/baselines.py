"""The baselines' predictions: interpolation of the LR field, and quantile mapping on top of it.

Each is the ``predict`` of a baseline method type (:mod:`climai.registry`), called by the ``infer``
stage as ``predict(prep, split, cfg, method)`` with the prepared dataset, the split to predict, the
campaign config and the method's name. It returns the ``(T, V, H, W)`` prediction of the split's
steps and extra variables for the output store (e.g. fitted tables). Baselines see only LR fields
(1/scale² of the HR) of one split, held in memory.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from climai.config import CampaignConfig
from climai.data.prepared import PreparedDataset
from climai.inference.predict import bicubic_prediction, quantile_mapped_prediction
from climai.registry import method_type

Prediction = tuple[np.ndarray, dict[str, xr.DataArray]]


def interpolate(prep: PreparedDataset, split: str, cfg: CampaignConfig, method: str) -> Prediction:
    """The split's LR fields upsampled as the method type says (``upsample``: bicubic, nearest);
    non-negative variables clipped at 0."""
    upsample = method_type(cfg.methods.type_of(method)).upsample or "bicubic"
    lr = prep.split(split).lr_stack(cfg.variable_names)
    kinds = [v.kind for v in cfg.variables]
    return bicubic_prediction(lr, cfg.scale, kinds, upsample), {}


def quantile_mapping(
    prep: PreparedDataset, split: str, cfg: CampaignConfig, method: str
) -> Prediction:
    """Bicubic + empirical quantile mapping fitted on the train split; the fitted tables
    ``qm_source_<var>`` and ``qm_target_<var>`` on a ``quantile`` axis."""
    qcfg = cfg.methods.get(method)
    variables = cfg.variable_names
    train = prep.split("train")
    values, src_q, tgt_q = quantile_mapped_prediction(
        train.lr_stack(variables),
        train.hr_stack(variables),
        prep.split(split).lr_stack(variables),
        cfg.scale,
        [v.kind for v in cfg.variables],
        qcfg.quantiles,  # type: ignore[union-attr]
        qcfg.max_samples,  # type: ignore[union-attr]
        cfg.seed,
    )
    levels = np.linspace(0.0, 1.0, qcfg.quantiles)  # type: ignore[union-attr]
    tables: dict[str, xr.DataArray] = {}
    for i, v in enumerate(variables):
        units = prep.hr(v).attrs.get("units", "")
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
    return values, tables
