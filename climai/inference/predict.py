"""Predictions of each method on a split, as physical HR fields with CF metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from climai.data.features import FeatureSpec, SplitTensors, to_physical
from climai.io.checkpoints import load_model_file
from climai.models.interpolate import upsample
from climai.models.unet import ResidualUNet
from climai.training.loop import bf16_supported, predict_normalised
from climai.variables import is_non_negative


def load_emulator(path: str | Path) -> tuple[ResidualUNet, FeatureSpec, dict[str, Any]]:
    """The model, its feature spec and its card from a ``model.pt``."""
    state, card = load_model_file(path)
    spec = FeatureSpec(**card["features"])
    model = ResidualUNet(spec.in_channels, spec.out_channels, card["architecture"]["channels"])
    model.load_state_dict(state)
    return model.eval(), spec, card


def unet_prediction(
    model: ResidualUNet, spec: FeatureSpec, split: SplitTensors, batch: int = 8
) -> np.ndarray:
    """(T, V, H, W) physical predictions; NaN where the LR input is missing."""
    z = predict_normalised(model, split, batch, bf16_supported(torch.device("cpu")))
    return to_physical(spec, z).numpy()


def bicubic_prediction(lr: np.ndarray, scale: int, kinds: list[str]) -> np.ndarray:
    """(T, V, H, W) bicubic interpolation of (T, V, h, w) LR fields; non-negative kinds clipped."""
    out = upsample(torch.from_numpy(np.ascontiguousarray(lr, np.float32)), scale, "bicubic")
    for i, kind in enumerate(kinds):
        if is_non_negative(kind):
            out[:, i].clamp_(min=0)
    return out.numpy()


def prediction_dataset(
    values: np.ndarray, like: xr.Dataset, variables: list[str], attrs: dict[str, dict[str, Any]]
) -> xr.Dataset:
    """Wrap (T, V, H, W) predictions on the HR grid of ``like`` (a dataset with time/y/x)."""
    ds = xr.Dataset(coords={c: like[c] for c in ("time", "y", "x")})
    for i, var in enumerate(variables):
        ds[var] = (("time", "y", "x"), values[:, i].astype(np.float32), attrs.get(var, {}))
    if "crs" in like:
        ds["crs"] = like["crs"]
    return ds
