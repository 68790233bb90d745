"""Predictions of each method on a split, as physical HR fields with CF metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from climai.data.features import FeatureSpec, SplitTensors, to_physical
from climai.inference.tiling import Predict
from climai.io.checkpoints import load_model_file
from climai.models.interpolate import upsample
from climai.models.quantile_mapping import apply_quantile_mapping, fit_quantile_mapping
from climai.models.unet import ResidualUNet
from climai.training.loop import bf16_supported, predict_normalised
from climai.variables import is_non_negative


def load_emulator(path: str | Path) -> tuple[ResidualUNet, FeatureSpec, dict[str, Any]]:
    """The model, its feature spec and its card from a ``model.pt``."""
    state, card = load_model_file(path)
    arch = card.get("architecture", {})
    if arch.get("name") != "ResidualUNet" or arch.get("norm") != "channel":
        raise ValueError(
            f"model file {str(path)!r} holds architecture {arch.get('name')!r} "
            f"(norm {arch.get('norm')!r}); this climai loads ResidualUNet with norm 'channel': "
            "retrain it"
        )
    spec = FeatureSpec(**card["features"])
    model = ResidualUNet(spec.in_channels, spec.out_channels, card["architecture"]["channels"])
    model.load_state_dict(state)
    return model.eval(), spec, card


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("infer.device='cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def is_stochastic(model: torch.nn.Module) -> bool:
    """Whether ``model`` draws ensemble members: it has ``sample(x, base, members)``."""
    return callable(getattr(model, "sample", None))


def model_predictor(
    model: torch.nn.Module, device: torch.device, bf16: bool = True, members: int = 1
) -> Predict:
    """A :data:`~climai.inference.tiling.Predict` callable running ``model`` on ``device``.

    A deterministic model gives ``(N, V, h, w)``; a stochastic one (``model.sample(x, base, M)``
    → ``(N, M, V, h, w)``) gives ``members`` members. bf16 autocast is used where supported.
    """
    model = model.to(device).eval()
    autocast = bf16 and bf16_supported(device)
    sample = getattr(model, "sample", None) if is_stochastic(model) else None

    @torch.no_grad()
    def predict(x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        base = base.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = sample(x, base, members) if sample is not None else model(x, base)
        return out.float().cpu()

    return predict


def unet_prediction(
    model: ResidualUNet, spec: FeatureSpec, split: SplitTensors, batch: int = 8
) -> np.ndarray:
    """(T, V, H, W) physical predictions; NaN where the LR input is missing."""
    z = predict_normalised(model, split, batch, bf16_supported(torch.device("cpu")))
    return to_physical(spec, z).numpy()


def bicubic_prediction(
    lr: np.ndarray, scale: int, kinds: list[str], mode: str = "bicubic"
) -> np.ndarray:
    """(T, V, H, W) interpolation (``mode``: bicubic, bilinear or nearest) of (T, V, h, w) LR
    fields; non-negative kinds clipped."""
    out = upsample(torch.from_numpy(np.ascontiguousarray(lr, np.float32)), scale, mode)
    for i, kind in enumerate(kinds):
        if is_non_negative(kind):
            out[:, i].clamp_(min=0)
    return out.numpy()


def quantile_mapped_prediction(
    lr_train: np.ndarray,
    hr_train: np.ndarray,
    lr: np.ndarray,
    scale: int,
    kinds: list[str],
    n_quantiles: int,
    max_samples: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bicubic + empirical quantile mapping fitted on the train split, per variable.

    ``lr_train`` (T, V, h, w) and ``hr_train`` (T, V, H, W) fit the tables; ``lr`` (T', V, h, w)
    is downscaled. Returns ``(prediction (T', V, H, W), source_q (V, Q), target_q (V, Q))``.
    """
    fit_src = bicubic_prediction(lr_train, scale, kinds)
    pred = bicubic_prediction(lr, scale, kinds)
    src_q = np.empty((len(kinds), n_quantiles))
    tgt_q = np.empty_like(src_q)
    for i, kind in enumerate(kinds):
        src_q[i], tgt_q[i] = fit_quantile_mapping(
            fit_src[:, i], hr_train[:, i], n_quantiles, max_samples, seed + i
        )
        pred[:, i] = apply_quantile_mapping(pred[:, i], src_q[i], tgt_q[i])
        if is_non_negative(kind):
            np.clip(pred[:, i], 0, None, out=pred[:, i])
    return pred, src_q, tgt_q


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
