"""The baselines' predictions: interpolation of the LR field, and quantile mapping on top of it.

Each is the ``predict`` of a baseline method type (:mod:`climai.registry`), called by the ``infer``
stage as ``predict(prep, split, cfg, method)`` with the prepared dataset, the split to predict, the
campaign config and the method's name. It returns the ``(T, V, H, W)`` prediction of the split's
steps and extra variables for the output store (e.g. fitted tables). Baselines see only LR fields
(1/scale² of the HR) of one split, held in memory; quantile mapping's fit reads the train split
block by block (:func:`quantile_tables`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import xarray as xr

from climai.config import CampaignConfig
from climai.data.prepared import PreparedDataset
from climai.inference.predict import bicubic_prediction, quantile_mapped_prediction
from climai.models.quantile_mapping import PairSample
from climai.registry import method_type

Prediction = tuple[np.ndarray, dict[str, xr.DataArray]]


def interpolate(prep: PreparedDataset, split: str, cfg: CampaignConfig, method: str) -> Prediction:
    """The split's LR fields upsampled as the method type says (``upsample``: bicubic, nearest);
    non-negative variables clipped at 0."""
    upsample = method_type(cfg.methods.type_of(method)).upsample or "bicubic"
    lr = prep.split(split).lr_stack(cfg.variable_names)
    kinds = [v.kind for v in cfg.variables]
    return bicubic_prediction(lr, cfg.scale, kinds, upsample), {}


FIT_BLOCK_BYTES = 64 << 20
"""HR float32 bytes of the train split read per block to fit quantile mapping."""


def _train_pairs(
    prep: PreparedDataset, cfg: CampaignConfig
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(bicubic of LR, HR)`` (t, V, H, W) of the train split, block by block in time order."""
    variables = cfg.variable_names
    kinds = [v.kind for v in cfg.variables]
    train = prep.split("train")
    per_step = 4 * len(variables) * int(train.sizes["y"]) * int(train.sizes["x"])
    steps = max(1, FIT_BLOCK_BYTES // per_step)
    for start in range(0, int(train.sizes["time"]), steps):
        block = train.isel(time=slice(start, start + steps))
        yield (
            bicubic_prediction(block.lr_stack(variables), cfg.scale, kinds),
            block.hr_stack(variables),
        )


def quantile_tables(
    prep: PreparedDataset, cfg: CampaignConfig, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(source_q, target_q)`` (V, Q) of quantile-mapping ``method``, fitted on the train split
    read block by block, twice: a first pass counts each variable's valid (bicubic-of-LR, HR)
    pairs, the second keeps the seeded sample of :class:`~climai.models.quantile_mapping.
    PairSample` (seed ``seed + variable index``): the tables of the in-memory fit, exactly."""
    qcfg = cfg.methods.get(method)
    n_vars = len(cfg.variable_names)
    counts = [0] * n_vars
    for source, target in _train_pairs(prep, cfg):
        for i in range(n_vars):
            counts[i] += PairSample.valid_pairs(source[:, i], target[:, i])
    samples = [
        PairSample(counts[i], qcfg.max_samples, cfg.seed + i)  # type: ignore[union-attr]
        for i in range(n_vars)
    ]
    for source, target in _train_pairs(prep, cfg):
        for i, sample in enumerate(samples):
            sample.add(source[:, i], target[:, i])
    tables = [s.fit(qcfg.quantiles) for s in samples]  # type: ignore[union-attr]
    return np.stack([t[0] for t in tables]), np.stack([t[1] for t in tables])


def quantile_mapping(
    prep: PreparedDataset, split: str, cfg: CampaignConfig, method: str
) -> Prediction:
    """Bicubic + empirical quantile mapping fitted on the train split (streamed,
    :func:`quantile_tables`); the fitted tables ``qm_source_<var>`` and ``qm_target_<var>`` on a
    ``quantile`` axis."""
    qcfg = cfg.methods.get(method)
    variables = cfg.variable_names
    src_q, tgt_q = quantile_tables(prep, cfg, method)
    values = quantile_mapped_prediction(
        prep.split(split).lr_stack(variables),
        cfg.scale,
        [v.kind for v in cfg.variables],
        src_q,
        tgt_q,
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
