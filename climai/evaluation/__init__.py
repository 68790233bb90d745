"""Evaluation: every method scored the same way against the truth on the test split.

Names are imported on first use, so :mod:`climai.evaluation.registry` (metric names, read when
the config is validated) can be imported without numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climai.evaluation.metrics import compute_metrics, radial_power_spectrum, spectral_ratio
    from climai.evaluation.registry import METRICS

_SOURCES = {
    "METRICS": "climai.evaluation.registry",
    "compute_metrics": "climai.evaluation.metrics",
    "radial_power_spectrum": "climai.evaluation.metrics",
    "spectral_ratio": "climai.evaluation.metrics",
}

__all__ = ["METRICS", "compute_metrics", "radial_power_spectrum", "spectral_ratio"]


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_SOURCES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
