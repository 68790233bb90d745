"""The baselines as the inference engine applies them: interpolation of the LR field, and
quantile mapping on top of it.

A baseline method type's registry ``predict(prep, cfg, method)`` fits the baseline once (quantile
mapping: its tables from the train split, read block by block, :func:`quantile_tables`; never the
split in memory) and returns it as an object the engine applies (:class:`Interpolation` for
climai's own; a plugin's needs only ``__call__``):

- ``baseline(lr) -> hr``: ``(T, V, h, w)`` physical LR fields without NaN (the engine fills a
  missing cell with the mean of its field's valid cells, as interpolation does) → ``(T, V,
  h·scale, w·scale)`` physical HR fields;
- ``margin`` (optional, default None): the LR cells of context one band of HR rows needs on
  each side; the engine then applies the baseline band by band to LR windows of the band plus
  ``margin`` cells, which gives the values of the whole domain exactly (interpolation: 2, the
  bicubic kernel's reach, also for any pointwise map of it); None: the whole LR domain of each
  time block at once;
- ``extra`` (optional): variables added to the output store (e.g. fitted tables);
- ``needs_times`` (optional): it is called as ``baseline(lr, times)`` with the steps' times;
- ``whole_series`` (optional): it needs the whole predicted series at once (per-cell ranks:
  qdm), so the engine gives it one time block.

The engine (:func:`climai.inference.downscale.downscale_baseline`, :class:`BaselineBands`) reads
the LR input one time block at a time, writes each band as it is done, and masks the HR footprint
of missing LR cells with NaN; band steps whose LR cells are all missing are not computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import xarray as xr

from climai.config import CampaignConfig
from climai.data.prepared import PreparedDataset
from climai.inference.predict import bicubic_prediction, quantile_mapped_prediction
from climai.inference.tiling import LR_MARGIN
from climai.models.interpolate import nan_fill
from climai.models.quantile_mapping import PairSample
from climai.registry import method_type


@dataclass
class Interpolation:
    """Interpolation of the LR field (``mode``: bicubic, bilinear or nearest), non-negative kinds
    clipped at 0; with quantile tables ``source_q``, ``target_q`` ((V, Q)), then quantile
    mapping (:func:`~climai.inference.predict.quantile_mapped_prediction`)."""

    scale: int
    kinds: list[str]
    mode: str = "bicubic"
    source_q: np.ndarray | None = None
    target_q: np.ndarray | None = None
    extra: dict[str, xr.DataArray] = field(default_factory=dict)
    margin: int = LR_MARGIN

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        """``(T, V, h, w)`` LR → ``(T, V, H, W)`` HR."""
        if self.source_q is None or self.target_q is None:
            return bicubic_prediction(lr, self.scale, self.kinds, self.mode)
        return quantile_mapped_prediction(lr, self.scale, self.kinds, self.source_q, self.target_q)


#: HR float32 bytes one baseline call computes at most: the engine's band of a time block is
#: computed in runs of steps, so that the baseline's temporaries (bicubic's padded input, quantile
#: mapping's float64 copies) stay this size whatever the block (pointwise in time: same values).
CALL_BYTES = 32 << 20


class BaselineBands:
    """A baseline as the engine's :data:`~climai.inference.engine.BandSource`: bands of ``rows``
    HR rows (a multiple of ``scale``), each from its LR rows plus the baseline's ``margin``."""

    def __init__(self, baseline: Callable[[np.ndarray], np.ndarray], scale: int, rows: int):
        self.baseline, self.scale, self.rows = baseline, scale, rows
        self.margin = getattr(baseline, "margin", None)
        self.samples = self.skipped = 0

    def _parts(self, steps: np.ndarray, cells_per_step: int) -> list[np.ndarray]:
        """``steps`` in runs whose HR output is at most :data:`CALL_BYTES` of float32 (the
        baseline's float32/float64 temporaries scale with one call's output), or in one run for
        a baseline that needs the whole series or the steps' times (qdm's per-cell ranks)."""
        whole = getattr(self.baseline, "whole_series", False)
        if whole or getattr(self.baseline, "needs_times", False):
            return [steps] if steps.size else []
        per_call = max(1, CALL_BYTES // (4 * cells_per_step))
        return [steps[i : i + per_call] for i in range(0, steps.size, per_call)]

    def __call__(
        self,
        lr: np.ndarray,
        times: pd.DatetimeIndex,
        seed: int = 0,
        progress: Callable[[int], None] = lambda n: None,
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(y0, y1, (T, V, y1 - y0, W))`` bands of the physical HR field of ``lr`` (T, V, h, w)."""
        s = self.scale
        lr_t = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
        missing = torch.isnan(lr_t)
        filled = torch.where(missing, nan_fill(lr_t).expand_as(lr_t), lr_t).numpy()
        steps, nv, h, w = lr.shape
        for r0 in range(0, h * s, self.rows):
            r1 = min(h * s, r0 + self.rows)
            a, b = r0 // s, r1 // s
            hole = missing[:, :, a:b]
            keep = ~hole.flatten(1).all(1).numpy()
            self.samples += steps
            self.skipped += int((~keep).sum())
            band = np.full((steps, nv, r1 - r0, w * s), np.nan, np.float32)
            lo, hi = (0, h)
            if self.margin is not None:
                lo, hi = max(0, a - self.margin), min(h, b + self.margin)
            kept = np.flatnonzero(keep)
            for part in self._parts(kept, nv * (hi - lo) * s * w * s):
                window = filled[part, :, lo:hi]
                pred = np.asarray(
                    self.baseline(window, times[part].values)
                    if getattr(self.baseline, "needs_times", False)  # e.g. qdm's grouping
                    else self.baseline(window)
                )
                want = (part.size, nv, (hi - lo) * s, w * s)
                if pred.shape != want:
                    raise ValueError(
                        f"baseline {type(self.baseline).__name__} returned shape {pred.shape} "
                        f"for LR input {window.shape}; expected {want}"
                    )
                band[part] = pred[:, :, (a - lo) * s : (b - lo) * s]
            up = hole.repeat_interleave(s, -2).repeat_interleave(s, -1).numpy()
            band[up] = np.nan
            yield r0, r1, band
        progress(steps)


def interpolate(prep: PreparedDataset, cfg: CampaignConfig, method: str) -> Interpolation:
    """The LR field upsampled as the method type says (``upsample``: bicubic, nearest);
    non-negative variables clipped at 0."""
    upsample = method_type(cfg.methods.type_of(method)).upsample or "bicubic"
    return Interpolation(cfg.scale, [v.kind for v in cfg.variables], upsample)


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


def quantile_mapping(prep: PreparedDataset, cfg: CampaignConfig, method: str) -> Interpolation:
    """Bicubic + empirical quantile mapping fitted on the train split (streamed,
    :func:`quantile_tables`); the fitted tables ``qm_source_<var>`` and ``qm_target_<var>`` on a
    ``quantile`` axis go into the output store."""
    qcfg = cfg.methods.get(method)
    variables = cfg.variable_names
    src_q, tgt_q = quantile_tables(prep, cfg, method)
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
    kinds = [v.kind for v in cfg.variables]
    return Interpolation(cfg.scale, kinds, "bicubic", src_q, tgt_q, tables)
