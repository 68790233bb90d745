"""Random HR patches as a torch ``Dataset``: streamed from the zarr store or from memory.

Sample ``i`` of epoch ``e`` is drawn by a generator seeded with ``(seed, e, i)``: a time step of the
split and a window whose corners lie on LR block boundaries; a window with fewer than
``min_valid`` valid target cells is redrawn. Batches are therefore identical whatever the number of
DataLoader workers or processes, and a run resumed mid-epoch sees exactly the batches it would
have seen (the sampler just starts later).

Two sources give the same numbers: :class:`ZarrSource` reads each window (and a two-cell LR halo
for the bicubic interpolation) from ``prep/dataset.zarr`` in the worker, never the whole store;
:class:`MemorySource` holds a split's arrays in RAM (the fast path for small stores). The model
inputs are built per batch by :func:`collate`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from climai.data.features import FeatureSpec, time_features
from climai.data.prepared import hr_key, lr_key, static_key
from climai.models.interpolate import upsample

HALO = 2  # LR cells each side that the bicubic kernel reaches
WET = 0.1  # a "wet" HR cell for min_wet: above 0.1 in the variable's units (mm h-1 for rain)


@dataclass
class Window:
    """Raw physical arrays of one sample."""

    lr: np.ndarray  # (V, n + 2*HALO, n + 2*HALO) LR with halo (edge-replicated at the domain edge)
    hr: np.ndarray  # (V, p, p) HR truth
    static: np.ndarray  # (S, p, p)
    tfeat: np.ndarray  # (4,)


class MemorySource:
    """A split's arrays in RAM: ``lr`` (T, V, h, w), ``hr`` (T, V, H, W), ``static`` (S, H, W)."""

    def __init__(
        self, lr: np.ndarray, hr: np.ndarray, static: np.ndarray, times: pd.DatetimeIndex
    ) -> None:
        self.lr, self.hr, self.static = lr, hr, static
        self.times = times
        self.tfeat = time_features(times)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(time steps, HR rows, HR columns)."""
        return self.hr.shape[0], self.hr.shape[2], self.hr.shape[3]

    def hr_window(self, t: int, ys: slice, xs: slice) -> np.ndarray:
        return self.hr[t, :, ys, xs]

    def lr_window(self, t: int, ys: slice, xs: slice) -> np.ndarray:
        return self.lr[t, :, ys, xs]

    def static_window(self, ys: slice, xs: slice) -> np.ndarray:
        return self.static[:, ys, xs]


class ZarrSource:
    """Lazy windows of one split of ``prep/dataset.zarr``; the store opens in each process."""

    def __init__(
        self, path: str | Path, variables: list[str], statics: list[str], split_index: int
    ) -> None:
        import zarr

        self.path, self.variables, self.statics = str(path), variables, statics
        group = zarr.open_group(self.path, mode="r")
        self.steps = np.flatnonzero(np.asarray(group["split"][:]) == split_index)
        ny, nx = group[hr_key(variables[0])].shape[1:]
        self._shape = (int(self.steps.size), int(ny), int(nx))
        times = _decode_times(self.path)
        self.tfeat = time_features(pd.DatetimeIndex(times[self.steps]))
        self._group = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_group": None}  # each worker opens the store itself

    @property
    def group(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(self.path, mode="r")
        return self._group

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    def hr_window(self, t: int, ys: slice, xs: slice) -> np.ndarray:
        step = int(self.steps[t])
        return np.stack([self.group[hr_key(v)][step, ys, xs] for v in self.variables])

    def lr_window(self, t: int, ys: slice, xs: slice) -> np.ndarray:
        step = int(self.steps[t])
        return np.stack([self.group[lr_key(v)][step, ys, xs] for v in self.variables])

    def static_window(self, ys: slice, xs: slice) -> np.ndarray:
        if not self.statics:
            return np.zeros((0, ys.stop - ys.start, xs.stop - xs.start), np.float32)
        return np.stack([self.group[static_key(s)][ys, xs] for s in self.statics])


def _decode_times(path: str) -> np.ndarray:
    from climai.io import open_store  # silent about Snakemake's .snakemake_timestamp

    with open_store(path) as ds:
        return ds["time"].values


class PatchDataset(Dataset):
    """``length`` random windows of ``patch`` HR cells per epoch; see the module docstring."""

    def __init__(
        self,
        source: MemorySource | ZarrSource,
        patch: int,
        scale: int,
        length: int,
        seed: int,
        min_valid: float = 0.5,
        max_tries: int = 20,
        min_wet: float = 0.0,
    ) -> None:
        steps, height, width = source.shape
        if patch % scale:
            raise ValueError(f"patch {patch} is not a multiple of scale {scale}")
        if patch > min(height, width):
            raise ValueError(f"patch {patch} is larger than the HR domain {height}×{width}")
        if steps == 0:
            raise ValueError("the split has no time steps")
        self.source, self.patch, self.scale = source, patch, scale
        self.length, self.seed, self.min_valid, self.max_tries = length, seed, min_valid, max_tries
        self.min_wet = min_wet  # fraction of HR cells above WET (any variable) a patch needs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the windows of ``epoch`` (call before creating the epoch's iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def window(self, index: int) -> tuple[int, int, int]:
        """(time index, HR row, HR column) of sample ``index`` this epoch (valid or last tried)."""
        steps, height, width = self.source.shape
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for _ in range(self.max_tries):
            t = int(rng.integers(steps))
            y = int(rng.integers((height - self.patch) // self.scale + 1)) * self.scale
            x = int(rng.integers((width - self.patch) // self.scale + 1)) * self.scale
            if self.min_valid <= 0 and self.min_wet <= 0:
                break
            hr = self.source.hr_window(t, slice(y, y + self.patch), slice(x, x + self.patch))
            if np.isfinite(hr).mean() >= self.min_valid and (
                self.min_wet <= 0 or (np.nan_to_num(hr) > WET).any(axis=0).mean() >= self.min_wet
            ):
                break
        return t, y, x

    def __getitem__(self, index: int) -> Window:
        t, y, x = self.window(index)
        p, s = self.patch, self.scale
        hr = self.source.hr_window(t, slice(y, y + p), slice(x, x + p))
        static = self.source.static_window(slice(y, y + p), slice(x, x + p))
        _, height, width = self.source.shape
        ly, lx, n = y // s, x // s, p // s
        y0, y1 = max(0, ly - HALO), min(height // s, ly + n + HALO)
        x0, x1 = max(0, lx - HALO), min(width // s, lx + n + HALO)
        lr = self.source.lr_window(t, slice(y0, y1), slice(x0, x1))
        pad = (x0 - (lx - HALO), (lx + n + HALO) - x1, y0 - (ly - HALO), (ly + n + HALO) - y1)
        if any(pad):
            lr = np.pad(lr, ((0, 0), (pad[2], pad[3]), (pad[0], pad[1])), mode="edge")
        return Window(
            np.ascontiguousarray(lr, np.float32),
            np.ascontiguousarray(hr, np.float32),
            np.ascontiguousarray(static, np.float32),
            self.source.tfeat[t],
        )


@dataclass
class Batch:
    """Model tensors of one batch (normalised, transformed space; ``lr`` physical)."""

    x: torch.Tensor  # (B, C, p, p) inputs, NaN → 0
    base: torch.Tensor  # (B, V, p, p) normalised bicubic
    target: torch.Tensor  # (B, V, p, p) normalised truth, NaN where missing
    lr: torch.Tensor  # (B, V, p/s, p/s) physical LR (for the conservation constraint)

    def pin_memory(self) -> Batch:
        return Batch(*(t.pin_memory() for t in (self.x, self.base, self.target, self.lr)))

    def to(self, device: torch.device) -> Batch:
        nb = device.type == "cuda"
        return Batch(
            self.x.to(device, non_blocking=nb).contiguous(memory_format=torch.channels_last),
            self.base.to(device, non_blocking=nb),
            self.target.to(device, non_blocking=nb),
            self.lr.to(device, non_blocking=nb),
        )


class Collate:
    """Builds a :class:`Batch` from windows (picklable, runs in the DataLoader workers)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec

    def __call__(self, windows: Sequence[Window]) -> Batch:
        spec, s = self.spec, self.spec.scale
        lr_halo = torch.from_numpy(np.stack([w.lr for w in windows]))
        hr = torch.from_numpy(np.stack([w.hr for w in windows]))
        static = torch.from_numpy(np.stack([w.static for w in windows]))
        tfeat = torch.from_numpy(np.stack([w.tfeat for w in windows]))
        p = hr.shape[-1]
        crop = slice(HALO * s, HALO * s + p)
        bicubic = upsample(lr_halo, s, "bicubic")[:, :, crop, crop]
        lr = lr_halo[:, :, HALO:-HALO, HALO:-HALO]
        nearest = upsample(lr.contiguous(), s, "nearest")
        base = torch.stack(
            [spec.normalise(v, bicubic[:, i]) for i, v in enumerate(spec.variables)], 1
        )
        near = torch.stack(
            [spec.normalise(v, nearest[:, i]) for i, v in enumerate(spec.variables)], 1
        )
        target = torch.stack([spec.normalise(v, hr[:, i]) for i, v in enumerate(spec.variables)], 1)
        st = hr.new_empty((len(windows), 0, p, p))  # no static fields: no channels
        if spec.statics:
            st = torch.stack(
                [
                    (static[:, i] - spec.stats["static"][name]["mean"])
                    / spec.stats["static"][name]["std"]
                    for i, name in enumerate(spec.statics)
                ],
                1,
            )
        tf = spec.times(tfeat)[:, :, None, None].expand(-1, -1, p, p)
        x = torch.cat([base, near, st, tf], 1).nan_to_num(0.0)
        return Batch(x.contiguous(), base.contiguous(), target.contiguous(), lr.contiguous())


class EpochSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of an epoch of ``length``, from batch ``start`` on.

    Each process sees ``length // world`` indices (the same count on every rank), cut to whole
    batches; ``start`` skips the batches a resumed run has already trained on. ``every=True``
    (validation): every index, ``rank, rank + world, ...`` up to ``length``, none left out.
    """

    def __init__(
        self,
        length: int,
        batch: int,
        rank: int = 0,
        world: int = 1,
        start: int = 0,
        every: bool = False,
    ):
        if every:
            self.indices = list(range(rank, length, world))[start * batch :]
            return
        per_rank = (length // world) // batch * batch
        self.indices = [rank + world * i for i in range(per_rank)][start * batch :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def batches_per_epoch(length: int, batch: int, world: int = 1) -> int:
    """Optimiser steps per epoch on each process."""
    return (length // world) // batch
