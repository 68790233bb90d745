"""Methods by registry name: emulators (trained) and baselines (no training)."""

from __future__ import annotations

from climai.models.interpolate import upsample
from climai.models.unet import ResidualUNet
from climai.registry import method_kind

# Both emulators are residual U-Nets; unet-crps injects noise and is trained with the fair CRPS.
TRAINABLE = {"unet": ResidualUNet, "unet-crps": ResidualUNet}
# Baselines by registry name → how the LR field is upsampled before any statistical correction.
BASELINES = {"bicubic": "bicubic", "nearest": "nearest", "quantile-mapping": "bicubic"}
# method_kind (climai.registry): "emulator" or "baseline" for any type, plugins included.


__all__ = ["BASELINES", "TRAINABLE", "ResidualUNet", "method_kind", "upsample"]
