"""From the preprocessed dataset to normalised model tensors, and back to physical fields.

The names below load on first use: :mod:`climai.data.prepared` (the store's layout) is imported by
``preprocess`` and ``evaluate``, which must not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climai.data.features import FeatureSpec, SplitTensors, build_split, to_physical
    from climai.data.patches import patch_batches

_HOMES = {
    "FeatureSpec": "climai.data.features",
    "SplitTensors": "climai.data.features",
    "build_split": "climai.data.features",
    "to_physical": "climai.data.features",
    "patch_batches": "climai.data.patches",
}

__all__ = ["FeatureSpec", "SplitTensors", "build_split", "patch_batches", "to_physical"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'climai.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
