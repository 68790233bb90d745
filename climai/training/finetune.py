"""Fine-tuning: start a U-Net from a trained model, keep parts of it fixed, record its lineage.

A method with ``init_from`` loads its parent's weights (``torch.load(weights_only=True)``) after a
check that the parent sees and predicts the same things: variables and their units and
transforms, static fields, scale and architecture. The normalisation statistics are the new
campaign's own (``prep/stats.json`` of the data being fine-tuned on): the network then sees inputs
with the zero mean and unit spread it was trained for, whatever the new data's climate, and the
model card (which inference reads) carries the statistics the weights were last trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from climai.data.features import FeatureSpec
from climai.io.checkpoints import load_model_file
from climai.io.provenance import file_sha256

FREEZE_PARTS = ("encoder", "bottleneck", "decoder")


@dataclass(frozen=True)
class Parent:
    """A trained model that a method is fine-tuned from."""

    path: Path
    sha256: str
    state: dict[str, torch.Tensor] = field(repr=False)
    card: dict[str, Any] = field(repr=False)

    @property
    def campaign(self) -> str:
        return str(self.card.get("config", {}).get("campaign", ""))

    @property
    def method(self) -> str:
        return str(self.card.get("method", ""))


def load_parent(path: Path, key: str) -> Parent:
    """The model at ``path``; ``key`` (e.g. ``methods.unet-ft.init_from``) names it in errors."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{key}: the parent model {str(path)!r} does not exist; train it first (for another "
            "campaign: snakemake --configfile <its config> --until train)"
        )
    try:
        state, card = load_model_file(path)
    except ValueError as err:
        raise ValueError(f"{key}: {err}") from None
    return Parent(path, file_sha256(path), state, card)


def _card_transforms(features: dict[str, Any]) -> dict[str, tuple[str, float]]:
    stats = features.get("stats", {})
    return {
        v: (str(stats[v].get("transform")), float(stats[v].get("offset", 0.0)))
        for v in features.get("variables", [])
        if v in stats
    }


def differences(
    parent: Parent,
    spec: FeatureSpec,
    units: dict[str, str],
    architecture: dict[str, Any],
) -> list[str]:
    """What differs between the parent's card and the model about to be trained (empty: none)."""
    feats = parent.card.get("features", {})
    arch = parent.card.get("architecture", {})
    here_transforms = {
        v: (str(spec.stats[v]["transform"]), float(spec.stats[v].get("offset", 0.0)))
        for v in spec.variables
    }
    pairs = [
        ("variables", feats.get("variables"), list(spec.variables)),
        ("units", parent.card.get("units"), units),
        ("transforms", _card_transforms(feats), here_transforms),
        ("static fields", feats.get("statics"), list(spec.statics)),
        ("scale", feats.get("scale"), spec.scale),
    ]
    pairs += [
        (f"architecture {k}", arch.get(k), v)
        for k, v in architecture.items()
        # a deterministic parent may start a stochastic child: only its noise projections are new
        if not (k == "noise_channels" and not arch.get(k))
    ]
    return [
        f"{name}: parent {_plain(theirs)}, here {_plain(ours)}"
        for name, theirs, ours in pairs
        if _plain(theirs) != _plain(ours)
    ]


def _plain(value: Any) -> Any:
    """Tuples as lists, so that a card read back from disk compares equal to live values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def check_compatible(
    parent: Parent,
    key: str,
    spec: FeatureSpec,
    units: dict[str, str],
    architecture: dict[str, Any],
) -> None:
    """Raise a ValueError naming every difference between the parent and this model."""
    found = differences(parent, spec, units, architecture)
    if found:
        raise ValueError(
            f"{key}: the parent model {str(parent.path)!r} (campaign {parent.campaign!r}, method "
            f"{parent.method!r}) does not match this one:\n  " + "\n  ".join(found)
        )


NOISE_PREFIXES = ("noise_down.", "noise_up.")
# A stochastic child of a deterministic parent starts with its noise projections scaled by this:
# it first predicts almost exactly what its parent does, and the CRPS grows the spread from there
# (full-size draws would add noise as large as the activations to every level of a trained net).
NEW_NOISE_GAIN = 0.1


def load_parent_weights(model: nn.Module, init: dict[str, torch.Tensor]) -> list[str]:
    """Load ``init`` into ``model``; return the names of the parameters that were new.

    Every parent weight must fit; the only weights the parent may lack are the noise projections
    of a stochastic model started from a deterministic one. Those are scaled by
    :data:`NEW_NOISE_GAIN`."""
    missing, unexpected = model.load_state_dict(init, strict=False)
    other = [k for k in missing if not k.startswith(NOISE_PREFIXES)]
    if unexpected or other or (missing and any(k.startswith(NOISE_PREFIXES) for k in init)):
        raise ValueError(
            "the parent's weights do not fit this model: "
            f"missing {other or missing}, unexpected {unexpected}"
        )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in missing:
                p.mul_(NEW_NOISE_GAIN)
    return list(missing)


def group_weights(parent: Parent, group: str) -> dict[str, torch.Tensor]:
    """The parent's weights of one variable group (model files prefix them ``<group>.``)."""
    prefix = f"{group}."
    return {k[len(prefix) :]: v for k, v in parent.state.items() if k.startswith(prefix)}


def part_prefixes(levels: int, parts: list[str]) -> tuple[str, ...]:
    """Parameter-name prefixes of the named parts of a :class:`ResidualUNet` of ``levels`` levels.

    encoder: every level of the contracting path but the deepest; bottleneck: the deepest level;
    decoder: the upsampling and fusing blocks. The noise projections go with their level.
    """
    out: list[str] = []
    for part in parts:
        if part == "encoder":
            out += [f"{m}.{i}." for m in ("down", "noise_down") for i in range(levels - 1)]
        elif part == "bottleneck":
            out += [f"down.{levels - 1}.", f"noise_down.{levels - 1}."]
        elif part == "decoder":
            out += ["up.", "fuse.", "noise_up."]
        else:
            raise ValueError(f"unknown part {part!r} to freeze; parts: {', '.join(FREEZE_PARTS)}")
    return tuple(out)


def freeze(model: nn.Module, levels: int, parts: list[str]) -> list[str]:
    """Set ``requires_grad=False`` on the named parts; return the frozen parameters' names."""
    prefixes = part_prefixes(levels, parts)
    frozen = []
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def lineage(parent: Parent) -> list[dict[str, Any]]:
    """The chain of models this one descends from, nearest first (the parent's own lineage
    follows it), each with the config it was trained with (its card's)."""
    entry = {
        "path": str(parent.path),
        "sha256": parent.sha256,
        "campaign": parent.campaign,
        "method": parent.method,
        "config_sha256": str(parent.card.get("config_sha256", "")),
        "data_checksums": parent.card.get("data_checksums", {}),
        # the recipe: the child's config names its parent ({method: unet}) but holds none of
        # the parent's settings, so the child's card alone could not rebuild it
        "config": parent.card.get("config", {}),
    }
    return [entry, *parent.card.get("lineage", [])]
