"""Predictions of each method on a split, as physical HR fields with CF metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from climai.data.features import FeatureSpec, SplitTensors, to_physical
from climai.io.checkpoints import load_model_file
from climai.models.constraints import conserve
from climai.models.interpolate import upsample
from climai.models.unet import ResidualUNet
from climai.training.loop import bf16_supported, predict_normalised
from climai.variables import is_non_negative


@dataclass
class Emulator:
    """The trained networks of a method: one per variable group, with how to apply them."""

    nets: dict[str, ResidualUNet]
    groups: dict[str, list[str]]
    constraint: str = "none"
    members: int = 1

    @property
    def stochastic(self) -> bool:
        return any(net.stochastic for net in self.nets.values())


def load_emulator(path: str | Path) -> tuple[Emulator, FeatureSpec, dict[str, Any]]:
    """The emulator, its feature spec and its card from a ``model.pt``."""
    state, card = load_model_file(path)
    spec = FeatureSpec(**card["features"])
    arch = card["architecture"]
    groups = arch.get("groups", {"all": spec.variables})
    nets = {}
    for group, variables in groups.items():
        sub = spec.subset(variables)
        net = ResidualUNet(
            sub.in_channels, sub.out_channels, arch["channels"], arch.get("noise_channels", 0)
        )
        prefix = f"{group}."
        net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        nets[group] = net.eval()
    emulator = Emulator(nets, groups, arch.get("constraint", "none"), arch.get("members", 1))
    return emulator, spec, card


def select_variables(split: SplitTensors, spec: FeatureSpec, variables: list[str]) -> SplitTensors:
    """The inputs of a model that sees only ``variables`` (channels: base, nearest, static, time)."""
    nv = len(spec.variables)
    idx = [spec.variables.index(v) for v in variables]
    rest = list(range(2 * nv, split.x.shape[1]))
    channels = idx + [nv + i for i in idx] + rest
    return SplitTensors(
        split.x[:, channels],
        split.base[:, idx],
        None if split.target is None else split.target[:, idx],
        None if split.lr is None else split.lr[:, idx],
    )


def unet_prediction(
    emulator: Emulator,
    spec: FeatureSpec,
    split: SplitTensors,
    batch: int = 8,
    members: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Physical predictions, NaN where the LR input is missing.

    ``(T, V, H, W)`` for a deterministic emulator, ``(M, T, V, H, W)`` for a stochastic one
    (``members`` draws, default the card's). With ``constraint: conserve`` each block mean equals
    the LR input (applied in physical units, last).
    """
    autocast = bf16_supported(torch.device("cpu"))
    n = (members or emulator.members) if emulator.stochastic else 1
    torch.manual_seed(seed)
    draws = []
    for _ in range(n):
        parts = []
        for group, variables in emulator.groups.items():
            sub = select_variables(split, spec, variables)
            z = predict_normalised(emulator.nets[group], sub, batch, autocast)
            phys = to_physical(spec.subset(variables), z)
            if emulator.constraint == "conserve":
                if sub.lr is None:
                    raise ValueError("the conservation constraint needs the LR fields")
                nonneg = spec.subset(variables).non_negative
                phys = conserve(phys, sub.lr, spec.scale, nonneg)
                phys = phys.masked_fill(torch.isnan(sub.base), float("nan"))
            parts.append((variables, phys))
        order = {v: (p, variables.index(v)) for variables, p in parts for v in variables}
        draws.append(torch.stack([order[v][0][:, order[v][1]] for v in spec.variables], 1))
    out = torch.stack(draws).numpy()
    return out if emulator.stochastic else out[0]


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
    """Wrap (T, V, H, W) predictions, or (M, T, V, H, W) ensembles (dimension ``member``), on the
    HR grid of ``like`` (a dataset with time/y/x)."""
    ds = xr.Dataset(coords={c: like[c] for c in ("time", "y", "x")})
    if values.ndim == 5:
        ds = ds.assign_coords(member=np.arange(values.shape[0]))
        for i, var in enumerate(variables):
            ds[var] = (
                ("member", "time", "y", "x"),
                values[:, :, i].astype(np.float32),
                attrs.get(var, {}),
            )
    else:
        for i, var in enumerate(variables):
            ds[var] = (("time", "y", "x"), values[:, i].astype(np.float32), attrs.get(var, {}))
    if "crs" in like:
        ds["crs"] = like["crs"]
    return ds
