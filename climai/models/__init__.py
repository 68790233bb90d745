"""Methods by registry name: emulators (trained) and baselines (no training)."""

from __future__ import annotations

from climai.models.interpolate import upsample
from climai.models.unet import ResidualUNet

# Both emulators are residual U-Nets; unet-crps injects noise and is trained with the fair CRPS.
TRAINABLE = {"unet": ResidualUNet, "unet-crps": ResidualUNet}
# Baselines by registry name → how the LR field is upsampled before any statistical correction.
BASELINES = {"bicubic": "bicubic", "nearest": "nearest", "quantile-mapping": "bicubic"}


def method_kind(name: str) -> str:
    """``"emulator"`` or ``"baseline"``; an unknown name lists the valid ones."""
    if name in TRAINABLE:
        return "emulator"
    if name in BASELINES:
        return "baseline"
    valid = ", ".join(sorted([*TRAINABLE, *BASELINES]))
    raise KeyError(f"unknown method {name!r}; valid methods: {valid}")


__all__ = ["BASELINES", "TRAINABLE", "ResidualUNet", "method_kind", "upsample"]
