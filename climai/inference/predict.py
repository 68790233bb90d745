"""Predictions of each method on a split, as physical HR fields with CF metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from climai.data.features import FeatureSpec, SplitTensors, to_physical
from climai.inference.tiling import Predict
from climai.io.checkpoints import load_model_file
from climai.models.constraints import conserve
from climai.models.interpolate import upsample
from climai.models.quantile_mapping import apply_quantile_mapping
from climai.models.unet import ResidualUNet
from climai.registry import BUILTIN_METHOD_TYPES, MethodType, method_type
from climai.training.loop import bf16_supported, predict_normalised
from climai.variables import is_non_negative


@dataclass
class Emulator:
    """The trained networks of a method: one per variable group, with how to apply them."""

    nets: dict[str, torch.nn.Module]  # ResidualUNet, or a plugin type's network
    groups: dict[str, list[str]]
    constraint: str = "none"
    members: int = 1

    @property
    def stochastic(self) -> bool:
        return any(getattr(net, "stochastic", False) for net in self.nets.values())

    @property
    def single_net(self) -> torch.nn.Module | None:
        """The one deterministic network, unconstrained: what tiled streaming inference runs."""
        if len(self.nets) != 1 or self.constraint != "none" or self.stochastic:
            return None
        return next(iter(self.nets.values()))


def load_emulator(path: str | Path) -> tuple[Emulator, FeatureSpec, dict[str, Any]]:
    """The emulator, its feature spec and its card from a ``model.pt``: each network rebuilt by
    its method type's registry ``build`` from the config stored in the card, then loaded."""
    state, card = load_model_file(path)
    arch = card.get("architecture", {})
    mtype, cfg = _method_of_card(path, arch)
    spec = FeatureSpec(**card["features"])
    groups = arch.get("groups", {"all": spec.variables})
    nets = {}
    for group, variables in groups.items():
        sub = spec.subset(variables)
        net = mtype.builder()(cfg, sub.in_channels, sub.out_channels)
        if "groups" in arch:  # one network per variable group, keys prefixed by the group
            prefix = f"{group}."
            net.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
        else:  # a single network saved on its own
            net.load_state_dict(state)
        nets[group] = net.eval()
    emulator = Emulator(nets, groups, arch.get("constraint", "none"), arch.get("members", 1))
    return emulator, spec, card


def _method_of_card(path: str | Path, arch: dict[str, Any]) -> tuple[MethodType, Any]:
    """The method type and config that built a model file's networks.

    Cards name both (``type``, ``method_config``); U-Net cards written before they did carry
    only the U-Net's layout (``name: ResidualUNet``, ``norm: channel``, channels, noise
    channels), which are its whole config as far as the weights go.
    """
    if "type" not in arch and arch.get("name") == "ResidualUNet" and arch.get("norm") == "channel":
        noise = int(arch.get("noise_channels", 0))
        name = next(  # climai's U-Net type that draws noise iff the card's network does
            n for n, t in BUILTIN_METHOD_TYPES.items() if t.layout and t.stochastic == bool(noise)
        )
        arch = {**arch, "type": name, "method_config": {"type": name, "channels": arch["channels"]}}
        if noise:
            arch["method_config"]["noise_channels"] = noise
    if "type" not in arch:
        raise ValueError(
            f"model file {str(path)!r} holds architecture {arch.get('name')!r} "
            f"(norm {arch.get('norm')!r}) and names no method type: retrain it"
        )
    try:
        mtype = method_type(arch["type"])
    except KeyError as err:
        raise ValueError(
            f"model file {str(path)!r} needs the method type {arch['type']!r}: {err}"
        ) from None
    return mtype, mtype.config.model_validate(arch["method_config"])


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


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("infer.device='cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def size_multiple(model: torch.nn.Module) -> int:
    """Input sizes must be multiples of this (a U-Net: one halving per level; default 1)."""
    return int(getattr(model, "multiple", 1))


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


def _normalised_on(
    net: ResidualUNet, split: SplitTensors, batch: int, device: torch.device, bf16: bool
) -> torch.Tensor:
    """:func:`~climai.training.loop.predict_normalised` with the network on ``device``: inputs
    go there batch by batch, predictions come back to the CPU (NaN where the base is)."""
    if device.type == "cpu":
        return predict_normalised(net, split, batch, bf16 and bf16_supported(device))
    autocast = bf16 and bf16_supported(device)
    net = net.to(device).eval()
    out = []
    with torch.no_grad():
        for i in range(0, split.x.shape[0], batch):
            x = split.x[i : i + batch].to(device).contiguous(memory_format=torch.channels_last)
            base = split.base[i : i + batch].nan_to_num(0.0).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                out.append(net(x, base).float().cpu())
    return torch.cat(out).masked_fill(torch.isnan(split.base), float("nan"))


def unet_prediction(
    emulator: Emulator,
    spec: FeatureSpec,
    split: SplitTensors,
    batch: int = 8,
    members: int | None = None,
    seed: int = 0,
    device: torch.device | None = None,
    bf16: bool = True,
) -> np.ndarray:
    """Physical predictions, NaN where the LR input is missing.

    ``(T, V, H, W)`` for a deterministic emulator, ``(M, T, V, H, W)`` for a stochastic one
    (``members`` draws, default the card's). With ``constraint: conserve`` each block mean equals
    the LR input (applied in physical units, last). The networks run on ``device`` (default the
    CPU), with bf16 autocast where ``bf16`` and the device supports it.
    """
    device = device or torch.device("cpu")
    n = (members or emulator.members) if emulator.stochastic else 1
    torch.manual_seed(seed)
    draws = []
    for _ in range(n):
        parts = []
        for group, variables in emulator.groups.items():
            sub = select_variables(split, spec, variables)
            z = _normalised_on(emulator.nets[group], sub, batch, device, bf16)
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
    lr: np.ndarray, scale: int, kinds: list[str], source_q: np.ndarray, target_q: np.ndarray
) -> np.ndarray:
    """Bicubic of (T, V, h, w) LR fields mapped through each variable's fitted quantile table
    (``source_q``, ``target_q``: (V, Q)); non-negative kinds clipped. Returns (T, V, H, W)."""
    pred = bicubic_prediction(lr, scale, kinds)
    for i, kind in enumerate(kinds):
        pred[:, i] = apply_quantile_mapping(pred[:, i], source_q[i], target_q[i])
        if is_non_negative(kind):
            np.clip(pred[:, i], 0, None, out=pred[:, i])
    return pred


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
