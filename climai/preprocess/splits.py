"""Time splits: contiguous blocks of the time axis in time order (train, val, test)."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def split_labels(n_times: int, fractions: dict[str, float]) -> np.ndarray:
    """Integer split code per time step (0 train, 1 val, 2 test), contiguous and in time order.

    Raises ``ValueError`` when a split would be empty.

    Examples
    --------
    >>> split_labels(10, {"train": 0.6, "val": 0.2, "test": 0.2}).tolist()
    [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    """
    bounds = np.cumsum([fractions[s] for s in SPLITS])
    edges = np.rint(bounds * n_times).astype(int)
    edges[-1] = n_times
    starts = np.concatenate([[0], edges[:-1]])
    labels = np.empty(n_times, np.int8)
    for code, (name, lo, hi) in enumerate(zip(SPLITS, starts, edges, strict=True)):
        if hi <= lo:
            raise ValueError(
                f"split {name!r} ({fractions[name]:g} of {n_times} time steps) would be empty"
            )
        labels[lo:hi] = code
    return labels
