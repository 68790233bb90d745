"""Time splits: train, val and test blocks of the time axis, by fractions or ISO time ranges.

Labels per time step: 0 train, 1 val, 2 test, -1 unused (a gap between blocks, or a step outside
every time range). Downstream stages select ``split == code``, so unused steps never enter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from climai.config.grid import iso_time_range

SPLITS = ("train", "val", "test")
UNUSED = -1


def split_labels(n_times: int, fractions: dict[str, float], gap: int = 0) -> np.ndarray:
    """Integer split code per time step, contiguous blocks in time order.

    ``gap`` time steps at the start of the val and the test block are left out (label -1), so
    that autocorrelated neighbours of the train block do not leak into validation or test.
    Raises ``ValueError`` when a split would be empty.

    Examples
    --------
    >>> split_labels(10, {"train": 0.6, "val": 0.2, "test": 0.2}).tolist()
    [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    >>> split_labels(12, {"train": 0.5, "val": 0.25, "test": 0.25}, gap=1).tolist()
    [0, 0, 0, 0, 0, 0, -1, 1, 1, -1, 2, 2]
    """
    bounds = np.cumsum([fractions[s] for s in SPLITS])
    edges = np.rint(bounds * n_times).astype(int)
    edges[-1] = n_times
    starts = np.concatenate([[0], edges[:-1]])
    labels = np.full(n_times, UNUSED, np.int8)
    for code, (name, lo, hi) in enumerate(zip(SPLITS, starts, edges, strict=True)):
        first = lo + (gap if code else 0)
        if hi <= first:
            raise ValueError(
                f"split {name!r} ({fractions[name]:g} of {n_times} time steps"
                + (f", minus a gap of {gap}" if gap and code else "")
                + ") would be empty"
            )
        labels[first:hi] = code
    return labels


def split_labels_by_time(times: np.ndarray, ranges: dict[str, list[str]]) -> np.ndarray:
    """Split code per time step from inclusive ``[first, last]`` ISO time ranges; ``last``
    runs to the end of the period it names (a date: the whole day; :func:`iso_time_range`).

    Raises ``ValueError`` when ranges overlap or a split holds no time step of ``times``.

    Examples
    --------
    >>> t = np.arange("2020-01-01T00", "2020-01-01T06", dtype="datetime64[h]")
    >>> split_labels_by_time(t, {"train": ["2020-01-01T00", "2020-01-01T02"],
    ...                          "val": ["2020-01-01T04", "2020-01-01T04"],
    ...                          "test": ["2020-01-01T05", "2020-01-01T09"]}).tolist()
    [0, 0, 0, -1, 1, 2]
    """
    times = np.asarray(times).astype("datetime64[ns]")
    labels = np.full(times.size, UNUSED, np.int8)
    for code, name in enumerate(SPLITS):
        lo, hi = iso_time_range(*ranges[name])
        inside = (times >= lo) & (times <= hi)
        if (labels[inside] != UNUSED).any():
            other = SPLITS[int(labels[inside][labels[inside] != UNUSED][0])]
            raise ValueError(f"split {name!r} {ranges[name]} overlaps split {other!r}")
        if not inside.any():
            span = f"{times[0]} .. {times[-1]}" if times.size else "no time steps"
            raise ValueError(
                f"split {name!r} {ranges[name]} holds no time step of the data ({span})"
            )
        labels[inside] = code
    return labels


def make_split_labels(times: np.ndarray, split: dict[str, Any]) -> np.ndarray:
    """Split codes for ``times`` from the ``split`` config section (fractions or time ranges)."""
    if isinstance(split["train"], list):
        return split_labels_by_time(times, {s: split[s] for s in SPLITS})
    return split_labels(len(times), {s: split[s] for s in SPLITS}, int(split.get("gap", 0)))
