"""Methods' implementations; which types exist, and their kinds, is the method registry's
(:mod:`climai.registry`)."""

from __future__ import annotations

from climai.models.interpolate import upsample
from climai.models.unet import ResidualUNet
from climai.registry import BUILTIN_METHOD_TYPES, method_kind

# Baselines by registry name → how the LR field is upsampled before any statistical correction.
BASELINES = {n: t.upsample for n, t in BUILTIN_METHOD_TYPES.items() if t.kind == "baseline"}
# method_kind (climai.registry): "emulator" or "baseline" for any type, plugins included.


__all__ = ["BASELINES", "ResidualUNet", "method_kind", "upsample"]
