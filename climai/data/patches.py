"""Random HR patches from full-domain split tensors, deterministic given a generator."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from climai.data.features import SplitTensors


def patch_batches(
    split: SplitTensors,
    patch: int,
    batch: int,
    per_step: int,
    scale: int,
    rng: np.random.Generator,
    min_valid: float = 0.5,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(x, base, target)`` batches of ``patch`` × ``patch`` windows for one epoch.

    Each time step contributes ``per_step`` windows whose corners lie on LR block boundaries;
    windows with fewer than ``min_valid`` valid target cells are skipped.
    """
    assert split.target is not None, "patches need a target"
    n, _, height, width = split.x.shape
    if patch > min(height, width):
        raise ValueError(f"patch {patch} is larger than the HR domain {height}×{width}")
    t_idx = np.repeat(np.arange(n), per_step)
    rng.shuffle(t_idx)
    ys = rng.integers(0, (height - patch) // scale + 1, size=t_idx.size) * scale
    xs = rng.integers(0, (width - patch) // scale + 1, size=t_idx.size) * scale
    keep = [
        i
        for i in range(t_idx.size)
        if torch.isfinite(split.target[t_idx[i], :, ys[i] : ys[i] + patch, xs[i] : xs[i] + patch])
        .float()
        .mean()
        >= min_valid
    ]
    for start in range(0, len(keep) - batch + 1, batch):
        sel = keep[start : start + batch]
        windows = [
            (t_idx[i], slice(ys[i], ys[i] + patch), slice(xs[i], xs[i] + patch)) for i in sel
        ]
        yield tuple(  # type: ignore[misc]
            torch.stack([arr[t, :, sy, sx] for t, sy, sx in windows])
            for arr in (split.x, split.base, split.target)
        )
