"""The learning-rate schedule: linear warm-up, then cosine decay to 0.05 × lr at the last step."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up for ``warmup`` steps, then cosine decay to 0.05."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def warmup_warning(warmup: int, total: int, lr: float) -> str | None:
    """A warning when the warm-up of ``warmup`` steps is not shorter than the run's ``total``
    steps: the learning rate then never reaches ``lr``."""
    if warmup < total:
        return None
    return (
        f"WARNING: warmup_steps={warmup} is not shorter than the run ({total} steps): the "
        f"learning rate never reaches lr={lr:g} (it ends at {lr * total / max(1, warmup):.3g})"
    )
