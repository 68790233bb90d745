"""Model inputs from LR fields, static fields and time; normalisation in one place.

Inputs per sample (channels): for each variable the bicubic- and nearest-upsampled LR in
normalised transformed space, the normalised static fields, and four time features (sine and
cosine of the hour of day and of the day of year). The model predicts a residual on top of the
bicubic channel (``base``); the target is the normalised transformed HR field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from climai.data.prepared import static_names
from climai.models.interpolate import upsample
from climai.variables import Transform, is_non_negative


@dataclass(frozen=True)
class FeatureSpec:
    """What a model sees and predicts, with the statistics that normalise it.

    ``stats`` is ``prep/stats.json``: per variable ``{transform, offset, mean, std}`` and under
    ``"static"`` per static field ``{mean, std}``.
    """

    variables: list[str]
    statics: list[str]
    scale: int
    stats: dict[str, Any] = field(repr=False)
    kinds: list[str] | None = (
        None  # variable kinds; None: non-negative where the transform is log1p
    )
    time_features: bool = True  # False: the four time channels are zero (pooled models)

    @property
    def non_negative(self) -> list[bool]:
        """Per variable, whether it can never be negative (multiplicative conservation)."""
        if self.kinds is not None:
            return [is_non_negative(k) for k in self.kinds]
        return [self.stats[v]["transform"] == "log1p" for v in self.variables]

    def subset(self, variables: list[str]) -> FeatureSpec:
        """The spec of a model that sees and predicts only ``variables``."""
        kinds = None
        if self.kinds is not None:
            kinds = [self.kinds[self.variables.index(v)] for v in variables]
        return FeatureSpec(
            variables, self.statics, self.scale, self.stats, kinds, self.time_features
        )

    @property
    def in_channels(self) -> int:
        return 2 * len(self.variables) + len(self.statics) + 4

    @property
    def out_channels(self) -> int:
        return len(self.variables)

    def transform(self, var: str) -> Transform:
        s = self.stats[var]
        return Transform(s["transform"], s["offset"])

    def normalise(self, var: str, physical: torch.Tensor) -> torch.Tensor:
        s = self.stats[var]
        return (self.transform(var).forward(physical) - s["mean"]) / s["std"]

    def denormalise(self, var: str, z: torch.Tensor) -> torch.Tensor:
        s = self.stats[var]
        return self.transform(var).inverse(z * s["std"] + s["mean"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "variables": self.variables,
            "statics": self.statics,
            "scale": self.scale,
            "stats": self.stats,
            "kinds": self.kinds,
            "time_features": self.time_features,
        }

    def times(self, tfeat: torch.Tensor) -> torch.Tensor:
        """The time-feature channels as fed to the model (zero without time features)."""
        return tfeat if self.time_features else torch.zeros_like(tfeat)


@dataclass
class SplitTensors:
    """Normalised tensors of one split on the full HR domain."""

    x: torch.Tensor  # (T, C, H, W) inputs, NaN replaced by 0
    base: torch.Tensor  # (T, V, H, W) normalised bicubic, NaN where the LR is missing
    target: torch.Tensor | None  # (T, V, H, W) normalised truth, NaN where missing
    lr: torch.Tensor | None = None  # (T, V, h, w) physical LR


def time_features(times: pd.DatetimeIndex) -> np.ndarray:
    """(T, 4) sine/cosine of hour of day and day of year."""
    hour = times.hour.to_numpy() + times.minute.to_numpy() / 60.0
    doy = times.day_of_year.to_numpy()
    a, b = 2 * np.pi * hour / 24.0, 2 * np.pi * doy / 365.25
    return np.stack([np.sin(a), np.cos(a), np.sin(b), np.cos(b)], axis=1).astype(np.float32)


def normalised_static(spec: FeatureSpec, static: np.ndarray) -> torch.Tensor:
    """(S, H, W) physical static fields → normalised float32 tensor."""
    return torch.stack(
        [
            (torch.from_numpy(np.asarray(static[i], dtype=np.float32)) - st["mean"]) / st["std"]
            for i, st in enumerate(spec.stats["static"][s] for s in spec.statics)
        ]
    ).to(torch.float32)


def model_inputs(
    spec: FeatureSpec,
    lr: torch.Tensor,
    static: torch.Tensor,
    times: pd.DatetimeIndex,
    fill: torch.Tensor | None = None,
    crop: tuple[int, int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, base)`` from physical LR ``(T, V, h, w)`` and normalised static ``(S, H, W)``.

    ``crop`` = ``(y0, y1, x0, x1)`` selects HR cells of the upsampled LR (a tile cut from an LR
    window with a margin, so that its interpolation equals the full domain's); ``fill`` is the NaN
    fill of :func:`~climai.models.interpolate.upsample`. ``static`` covers the crop.
    """
    bicubic = upsample(lr, spec.scale, "bicubic", fill)
    if crop is not None:
        y0, y1, x0, x1 = crop
        bicubic = bicubic[..., y0:y1, x0:x1]
    base = torch.stack(
        [spec.normalise(v, bicubic[:, i]) for i, v in enumerate(spec.variables)], dim=1
    )
    # a pointwise transform commutes with nearest upsampling: normalise the 64× smaller LR field
    lr_z = torch.stack([spec.normalise(v, lr[:, i]) for i, v in enumerate(spec.variables)], dim=1)
    near = upsample(lr_z, spec.scale, "nearest")  # missing cells: NaN over their footprint
    if crop is not None:
        near = near[..., y0:y1, x0:x1]
    n, nv, height, width = base.shape
    # written straight into channels-last memory, the layout the convolutions run fastest in
    x = torch.empty((n, spec.in_channels, height, width), memory_format=torch.channels_last)
    x[:, :nv] = base.nan_to_num(0.0)
    x[:, nv : 2 * nv] = near.nan_to_num(0.0)
    x[:, 2 * nv : 2 * nv + static.shape[0]] = static.nan_to_num(0.0)
    tfeat = spec.times(torch.from_numpy(time_features(times)))
    x[:, 2 * nv + static.shape[0] :] = tfeat[:, :, None, None]
    return x, base.contiguous()


def build_split(
    spec: FeatureSpec,
    lr: np.ndarray,
    static: np.ndarray,
    times: pd.DatetimeIndex,
    hr: np.ndarray | None = None,
) -> SplitTensors:
    """Tensors for one split: ``lr`` is (T, V, h, w) physical, ``static`` (S, H, W) physical."""
    lr_t = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
    x, base = model_inputs(spec, lr_t, normalised_static(spec, static), times)
    target = None
    if hr is not None:
        hr_t = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32))
        target = torch.stack(
            [spec.normalise(v, hr_t[:, i]) for i, v in enumerate(spec.variables)], dim=1
        )
    return SplitTensors(x.contiguous(), base.contiguous(), target, lr_t)


def to_physical(spec: FeatureSpec, z: torch.Tensor) -> torch.Tensor:
    """(T, V, H, W) normalised predictions → physical units."""
    return torch.stack([spec.denormalise(v, z[:, i]) for i, v in enumerate(spec.variables)], dim=1)


def feature_spec(
    ds: xr.Dataset,
    variables: list[str],
    scale: int,
    stats: dict[str, Any],
    kinds: list[str] | None = None,
) -> FeatureSpec:
    """The features of a preprocessed dataset: its variables and static fields."""
    return FeatureSpec(
        variables=variables, statics=static_names(ds), scale=scale, stats=stats, kinds=kinds
    )
