"""Emulators as predict callables of the tiled engine, and the interpolation and quantile-mapped
predictions the baselines apply (to whole fields or bands of them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from climai.data.features import FeatureSpec
from climai.inference.distributed import chunk_seed
from climai.inference.tiling import Predict
from climai.io.checkpoints import load_model_file
from climai.malloc import keep_freed_buffers, uncache_primitives
from climai.models.constraints import blur_departures
from climai.models.interpolate import upsample
from climai.models.quantile_mapping import apply_quantile_mapping
from climai.registry import BUILTIN_METHOD_TYPES, MethodType, build_network, method_type
from climai.training.loop import bf16_supported
from climai.variables import is_non_negative


@dataclass
class Emulator:
    """The trained networks of a method: one per variable group, with how to apply them.

    ``members``: the ensemble members a stochastic emulator draws (the method's ``members`` key,
    recorded in the model card; the one member count, overridden only by ``climai downscale
    --members``).
    """

    nets: dict[str, torch.nn.Module]  # ResidualUNet, or a plugin type's network
    groups: dict[str, list[str]]
    constraint: str = "none"
    members: int = 1

    @property
    def stochastic(self) -> bool:
        return any(is_stochastic(net) for net in self.nets.values())

    @property
    def multiple(self) -> int:
        """Input sizes must be multiples of this, for every network."""
        return math.lcm(*(size_multiple(net) for net in self.nets.values()))


class UnknownMethodType(ValueError):
    """A model file's method type that no installed package provides (a plugin not installed
    here): the file is fine, the environment lacks the type."""


def load_emulator(path: str | Path) -> tuple[Emulator, FeatureSpec, dict[str, Any]]:
    """The emulator, its feature spec and its card from a ``model.pt``: each network rebuilt by
    its method type's registry ``build`` from the config stored in the card, then loaded."""
    state, card = load_model_file(path)
    check_card(card, path)
    try:
        return _emulator_of(path, state, card)
    except UnknownMethodType:
        raise  # not a damaged file: its own message says what to install
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        what = f"missing key {lines[0]}" if isinstance(err, KeyError) else lines[0]
        extra = f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else ""
        raise ValueError(
            f"model file {str(path)!r}: its model card does not match its weights: "
            f"{type(err).__name__}: {what}{extra}; expected a card (architecture, features) that "
            "rebuilds exactly the saved networks: the file was edited or damaged, use the model "
            "file that training wrote"
        ) from None


#: What applying a model reads from its card, beyond the architecture (checked by the build).
STAT_KEYS = ("transform", "offset", "mean", "std")


def card_problems(card: dict[str, Any]) -> list[str]:
    """The fields inference needs that ``card`` lacks or gets wrong (empty: none): the features
    (variables, static fields, scale, each variable's and static field's normalisation), each
    variable's units and the grid (HR spacing, possibly null for a pooled model, and the scale)."""
    feats = card.get("features")
    if not isinstance(feats, dict):
        return ["features: missing (variables, statics, scale, stats)"]
    out = [
        f"features.{k}: missing"
        for k in ("variables", "statics", "scale", "stats")
        if k not in feats
    ]
    if out:
        return out
    stats, units, grid = feats["stats"], card.get("units"), card.get("grid")
    for v in feats["variables"]:
        got = stats.get(v) if isinstance(stats, dict) else None
        lack = [k for k in STAT_KEYS if not isinstance(got, dict) or k not in got]
        if lack:
            out.append(f"features.stats.{v}: missing {', '.join(lack)}")
        if not isinstance(units, dict) or not isinstance(units.get(v), str):
            out.append(f"units.{v}: missing (the units the input's {v} must have)")
    for name in feats["statics"]:
        got = (stats.get("static") or {}).get(name) if isinstance(stats, dict) else None
        if not isinstance(got, dict) or "mean" not in got or "std" not in got:
            out.append(f"features.stats.static.{name}: missing mean, std")
    if not isinstance(grid, dict) or "hr_dx" not in grid or "hr_dy" not in grid:
        out.append("grid: missing hr_dx, hr_dy (the HR spacing the model was trained on)")
    elif "scale" in grid and grid["scale"] != feats["scale"]:
        out.append(f"grid.scale: {grid['scale']!r}, but features.scale is {feats['scale']!r}")
    return out


def check_card(card: dict[str, Any], path: str | Path) -> None:
    """Raise ``ValueError`` naming every field of the model card that inference needs and that
    is missing or contradicts another (:func:`card_problems`)."""
    found = card_problems(card) if isinstance(card, dict) else ["the card is not a mapping"]
    if found:
        raise ValueError(
            f"model file {str(path)!r}: its model card is incomplete or inconsistent:\n  "
            + "\n  ".join(found)
            + "\nuse the model file that training wrote (or retrain it)"
        )


def _emulator_of(
    path: str | Path, state: dict[str, Any], card: dict[str, Any]
) -> tuple[Emulator, FeatureSpec, dict[str, Any]]:
    """The emulator of a loaded model file (see :func:`load_emulator`)."""
    arch = card.get("architecture", {})
    _, cfg = _method_of_card(path, arch)
    spec = FeatureSpec(**card["features"])
    groups = arch.get("groups", {"all": spec.variables})
    nets = {}
    for group, variables in groups.items():
        sub = spec.subset(variables)
        net = build_network(cfg.type, cfg, sub.in_channels, sub.out_channels)
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


def card_seed(card: dict[str, Any]) -> int:
    """The seed an emulator's ensembles are drawn from: the campaign seed it was trained with."""
    return int(card.get("provenance", {}).get("seed", 0))


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
        raise UnknownMethodType(
            f"model file {str(path)!r} needs the method type {arch['type']!r}, which no installed "
            f"package provides: {str(err).strip(chr(39) + chr(34))}; install the plugin that "
            "registers it (entry point group climai.methods, docs/add-an-emulator.md) where the "
            "model is applied"
        ) from None
    return mtype, mtype.config.model_validate(_without_ignored_keys(arch["method_config"]))


#: Keys that a model trained with ``normalisation: campaign`` once accepted and ignored (the
#: config refuses them there now): reset to their defaults, so that such a model still loads.
_PHYSICAL_ONLY = {"grid_channel": False, "min_wet": 0.0}


def _without_ignored_keys(method_config: dict[str, Any]) -> dict[str, Any]:
    """A card's ``method_config`` without the physical-only keys it was trained to ignore."""
    if method_config.get("normalisation", "campaign") == "physical":
        return method_config
    return {**method_config, **{k: v for k, v in _PHYSICAL_ONLY.items() if k in method_config}}


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
    """Whether ``model`` draws ensemble members: it draws noise in its forward pass
    (``stochastic`` true) or has ``sample(x, base, members)``."""
    return bool(getattr(model, "stochastic", False)) or callable(getattr(model, "sample", None))


def _group_channels(variables: list[str], group: list[str], in_channels: int) -> list[int]:
    """The input channels of a network that sees only ``group``: its variables' base and nearest
    channels, then every static and time channel."""
    nv = len(variables)
    idx = [variables.index(v) for v in group]
    return idx + [nv + i for i in idx] + list(range(2 * nv, in_channels))


VIEWS: dict[int, list[tuple[int, bool]]] = {
    1: [(0, False)],
    2: [(0, False), (0, True)],
    4: [(r, False) for r in range(4)],
    8: [(r, f) for f in (False, True) for r in range(4)],
}
"""The (90° rotations, mirrored) views of a self-ensemble of 1, 2, 4 or 8 (``infer.self_ensemble``)."""


def view(t: torch.Tensor, rotations: int, mirror: bool) -> torch.Tensor:
    """``t`` rotated by ``rotations`` × 90° over its last two axes, then mirrored left–right (the
    order of the training augmentation, :func:`climai.data.pooled.augment`)."""
    t = torch.rot90(t, rotations, (-2, -1))
    return t.flip(-1) if mirror else t


def unview(t: torch.Tensor, rotations: int, mirror: bool) -> torch.Tensor:
    """The inverse of :func:`view`: back to the original orientation."""
    return torch.rot90(t.flip(-1) if mirror else t, -rotations, (-2, -1))


def emulator_predictor(
    emulator: Emulator,
    variables: list[str],
    device: torch.device,
    bf16: bool = True,
    members: int | None = None,
    self_ensemble: int = 1,
    blur: float = 0.0,
) -> Predict:
    """A :data:`~climai.inference.tiling.Predict` callable running ``emulator`` on ``device``.

    Each variable group's network sees its variables' channels and predicts them; outputs come
    back in the order of ``variables``. A deterministic emulator gives ``(N, V, h, w)``; a
    stochastic one ``(N, M, V, h, w)``, ``M = members`` (default the emulator's), member ``m``
    drawn after seeding torch with ``chunk_seed(seed, m)`` (its own draw whatever ``M``; one
    member: ``(N, V, h, w)``, that seeded draw). ``self_ensemble`` k > 1 (deterministic
    emulators only): the mean of the predictions of the k :data:`VIEWS` of each sample, each
    turned back before averaging. ``blur`` (ensembles of several members): each sample's
    members' departures from their mean smoothed by a Gaussian of that sigma in HR cells
    (:func:`~climai.models.constraints.blur_departures`, the model card's ``departure_blur``).
    bf16 autocast where supported; inputs in channels-last layout. A network with a ``stem``
    (:meth:`~climai.models.unet.ResidualUNet.stem`: its noise-free first block) runs it once per
    batch and starts every member from it: the same members, 9 % less time at 8 members
    (``benchmarks/ensemble_stem.py``).
    On the CPU, the process keeps freed memory for reuse (:func:`~climai.malloc.keep_freed_buffers`):
    each forward allocates the same large activations as the last; and oneDNN keeps no kernels
    per input shape (:func:`~climai.malloc.uncache_primitives`): tile parts come in many.
    """
    if device.type == "cpu":
        keep_freed_buffers()
        uncache_primitives()
    nets = {g: net.to(device).eval() for g, net in emulator.nets.items()}
    autocast = bf16 and bf16_supported(device)
    count = (members or emulator.members) if emulator.stochastic else 0
    whole = len(nets) == 1 and next(iter(emulator.groups.values())) == variables
    index = {g: [variables.index(v) for v in vs] for g, vs in emulator.groups.items()}
    if self_ensemble not in VIEWS or (self_ensemble > 1 and count):
        raise ValueError(
            f"self_ensemble={self_ensemble}: expected one of {sorted(VIEWS)} for a deterministic "
            f"emulator (1 for an ensemble)"
        )
    views = VIEWS[self_ensemble]

    def run(
        net: torch.nn.Module, x: torch.Tensor, base: torch.Tensor, stems: dict[str, Any], g: str
    ) -> torch.Tensor:
        if callable(getattr(net, "sample", None)):
            return net.sample(x, base, 1)[:, 0]  # type: ignore[operator]
        if callable(getattr(net, "stem", None)):
            # the members of one batch share the noise-free first block: computed for the first
            if g not in stems:
                stems[g] = net.stem(x)  # type: ignore[operator]
            return net(x, base, stem=stems[g])  # type: ignore[no-any-return]
        return net(x, base)  # type: ignore[no-any-return]

    def forward(x: torch.Tensor, base: torch.Tensor, stems: dict[str, Any]) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if whole:
                g, net = next(iter(nets.items()))
                return run(net, x, base, stems, g).float()
            out = torch.empty(base.shape, dtype=torch.float32, device=device)
            for g, net in nets.items():
                channels = _group_channels(variables, emulator.groups[g], x.shape[1])
                sub = x[:, channels].contiguous(memory_format=torch.channels_last)
                out[:, index[g]] = run(net, sub, base[:, index[g]], stems, g).float()
            return out

    @torch.no_grad()
    def predict(x: torch.Tensor, base: torch.Tensor, seed: int) -> torch.Tensor:
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        base = base.to(device)
        if not count and len(views) == 1:
            return forward(x, base, {}).cpu()
        if not count:
            total = torch.zeros(base.shape, dtype=torch.float32, device=device)
            for r, m in views:
                vx = view(x, r, m).contiguous(memory_format=torch.channels_last)
                total += unview(forward(vx, view(base, r, m), {}), r, m)
            return (total / len(views)).cpu()
        # members written into one buffer as they are drawn (no list of draws, no stacked copy)
        out = torch.empty((base.shape[0], count, *base.shape[1:]), device=device)
        stems: dict[str, Any] = {}  # each group's first block, shared by this batch's members
        for m in range(count):
            torch.manual_seed(chunk_seed(seed, m))
            out[:, m] = forward(x, base, stems)
        del stems  # freed before the blur allocates its own buffers
        return (blur_departures(out, blur) if count > 1 else out[:, 0]).cpu()

    return predict


def model_predictor(
    model: torch.nn.Module,
    device: torch.device,
    bf16: bool = True,
    members: int = 1,
    self_ensemble: int = 1,
) -> Predict:
    """:func:`emulator_predictor` of one network predicting every variable (``members`` draws
    when it is stochastic; ``self_ensemble`` views when it is not)."""
    emulator = Emulator({"all": model}, {"all": []}, members=members)
    return emulator_predictor(emulator, [], device, bf16, self_ensemble=self_ensemble)


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
