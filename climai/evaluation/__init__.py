"""Evaluation: every method scored the same way against the truth on the test split."""

from climai.evaluation.metrics import (
    METRICS,
    compute_metrics,
    radial_power_spectrum,
    spectral_ratio,
)

__all__ = ["METRICS", "compute_metrics", "radial_power_spectrum", "spectral_ratio"]
