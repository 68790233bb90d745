"""Blending of overlapping tiles (no I/O): the tiles' weights (:func:`taper`) and how an
ensemble's members are blended so that their spread does not dip where tiles overlap
(:func:`blend_members`)."""

from __future__ import annotations

import functools

import numpy as np
import torch


def taper(n: int, overlap: int, start_inner: bool, end_inner: bool) -> np.ndarray:
    """1-D blending weights of a tile of ``n`` cells; inner edges (shared with a neighbour) taper.

    Zero within ``overlap / 4`` of an inner edge, ``sin²`` over the next ``overlap / 2``, then one.
    Domain edges do not taper (no neighbour takes over there).
    """
    if overlap == 0:  # tiles do not overlap: every cell is one tile's
        return np.ones(n)
    d = np.arange(n) + 0.5
    zero, ramp = overlap / 4, overlap / 2

    def rise(dist: np.ndarray) -> np.ndarray:
        return np.sin(0.5 * np.pi * np.clip((dist - zero) / ramp, 0.0, 1.0)) ** 2

    w = np.ones(n)
    if start_inner:
        w *= rise(d)
    if end_inner:
        w *= rise(n - d)
    return w


@functools.lru_cache(maxsize=16)  # every tile of a layout has one of a few edge patterns
def tile_weights(
    size: tuple[int, int], overlap: int, edges: tuple[bool, bool, bool, bool]
) -> torch.Tensor:
    """Blending weights of a tile of ``size`` whose (top, bottom, left, right) ``edges`` are inner."""
    wy = taper(size[0], overlap, edges[0], edges[1])
    wx = taper(size[1], overlap, edges[2], edges[3])
    return torch.from_numpy(np.outer(wy, wx).astype(np.float32))


def true_runs(keep: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of consecutive true values of the 1-D ``keep``."""
    runs: list[tuple[int, int]] = []
    for t in torch.nonzero(keep).flatten().tolist():
        if runs and runs[-1][1] == t:
            runs[-1] = (runs[-1][0], t + 1)
        else:
            runs.append((t, t + 1))
    return runs


def blend_members(total: torch.Tensor, weight: torch.Tensor, weight2: torch.Tensor) -> torch.Tensor:
    """The blended members ``(M, V, h, w)`` (normalised) of the weighted sums ``total`` of
    every tile's members, ``weight`` the sum of the tiles' weights and ``weight2`` that of their
    squares (``(h, w)``).

    The members' mean is blended as any prediction, ``Σ w·z / Σ w``. Their departures from it
    are divided by ``√(Σ w²)`` in place of ``Σ w``: the tiles draw their noise apart, so where two
    overlap the blend averages independent departures, whose variance a plain weighted mean cuts
    by ``Σ w² / (Σ w)²`` (to one half mid-seam): the members' spread dipped in stripes along
    every tile seam (a tiled run's spread/skill below an untiled one's). Where one tile covers a
    cell the two divisors are the same and so are the members."""
    mean = total.mean(0, keepdim=True)
    gain = weight / weight2.sqrt()
    gain = torch.where((gain - 1).abs() < 1e-6, torch.ones_like(gain), gain)  # one tile: as is
    return (mean + (total - mean) * gain) / weight
