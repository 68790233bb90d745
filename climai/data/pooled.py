"""Patches from several campaigns' prepared datasets at once (``methods.<m>.train_on``).

Each campaign keeps its own :class:`~climai.data.dataset.PatchDataset`; :class:`PooledPatches`
draws sample ``i`` of epoch ``e`` from campaign ``k`` with a generator seeded by ``(seed, e, i)``
and the stated shares, appends the campaign's grid channel (log2 of its HR spacing in km) and,
when asked, flips and rotates the patch (LR with its halo, HR and static fields together) and
scales its rain by a random gain. The normalisation is the same fixed physical transform for
every campaign (:func:`physical_stats`): one radar's statistics would put another radar's rain
at the wrong place on the model's scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from climai.data.dataset import PatchDataset, Window
from climai.data.prepared import GRID_STATIC
from climai.variables import transform_for

PHYSICAL_OFFSET = 1.0  # log1p(x / 1 mm h-1): the same curve on every radar
PHYSICAL_STD = 1.0  # log1p of rain in mm h-1 is 0–5: unit scale without any campaign's std


def physical_stats(variables: list[str], kinds: list[str], grid: bool) -> dict:
    """Fixed normalisation statistics (``prep/stats.json``'s layout): ``log1p(x / 1 mm h-1)``,
    mean 0 and std 1 for every (precipitation) variable; the grid channel
    (when ``grid``) unscaled. Nothing depends on a campaign's data, so a model trained on one
    radar reads another's rain on the same scale."""
    other = [v for v, k in zip(variables, kinds, strict=True) if k != "precipitation"]
    if other:
        raise ValueError(
            f"normalisation: physical is defined for precipitation only; variables {other} "
            f"are of other kinds (use normalisation: campaign)"
        )
    stats: dict = {
        v: {
            "transform": transform_for(k).name,
            "offset": PHYSICAL_OFFSET,
            "mean": 0.0,
            "std": PHYSICAL_STD,
        }
        for v, k in zip(variables, kinds, strict=True)
    }
    stats["static"] = {GRID_STATIC: {"mean": 0.0, "std": 1.0}} if grid else {}
    return stats


def augment(window: Window, rotations: int, flip: bool, gain: float = 1.0) -> Window:
    """``window`` rotated by ``rotations`` × 90° and then (``flip``) mirrored left–right; the
    LR halo is symmetric, so its bicubic interpolation is the transformed interpolation. Its
    LR and HR (rain, physical units) multiplied by ``gain``: every block mean scales with it."""

    def op(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, rotations, axes=(-2, -1))
        return np.ascontiguousarray(a[..., ::-1] if flip else a)

    lr, hr = op(window.lr), op(window.hr)
    if gain != 1.0:
        lr, hr = lr * np.float32(gain), hr * np.float32(gain)
    return replace(window, lr=lr, hr=hr, static=op(window.static))


@dataclass
class Member:
    """One campaign's patches and its grid channel value (log2 km)."""

    name: str
    patches: PatchDataset
    grid: float


def shares(names: list[str], weights: dict[str, float] | None) -> np.ndarray:
    """The share of patches per campaign (equal when ``weights`` is None), summing to 1."""
    w = np.array([1.0 if weights is None else float(weights.get(n, 0.0)) for n in names])
    if not np.all(w > 0):
        raise ValueError(f"train_weights={weights}: every train_on campaign {names} needs a share")
    return w / w.sum()


class PooledPatches:
    """``length`` patches per epoch drawn from ``members`` with ``weights`` (see module doc).

    ``weights`` None with ``draw=False`` concatenates the members' own patches in order (the
    fixed validation set); otherwise each sample picks its campaign at random with those shares.
    """

    def __init__(
        self,
        members: list[Member],
        length: int,
        seed: int,
        weights: np.ndarray | None = None,
        augment: bool = False,
        grid: bool = True,
        gain: float = 1.0,
    ) -> None:
        if not members:
            raise ValueError("no campaigns to draw patches from")
        self.members, self.length, self.seed = members, length, seed
        self.weights, self.augment, self.grid, self.gain = weights, augment, grid, gain
        self.offsets = np.cumsum([0] + [len(m.patches) for m in members])
        if weights is None and length != self.offsets[-1]:
            raise ValueError(f"length {length} != the members' {self.offsets[-1]} patches")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for m in self.members:
            m.patches.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    @property
    def source(self) -> object:  # the first member's source (for logs)
        return self.members[0].patches.source

    def pick(self, index: int) -> tuple[int, int, np.random.Generator]:
        """(member, its sample index, this sample's generator for augmentation)."""
        rng = np.random.default_rng([self.seed, self.epoch, index, 19])
        if self.weights is None:
            k = int(np.searchsorted(self.offsets, index, side="right") - 1)
            return k, index - int(self.offsets[k]), rng
        k = int(rng.choice(len(self.members), p=self.weights))
        # the member's window of this very index (its own seeded draw): every sample of the
        # epoch is a window of its own, never a repeat of another index's
        return k, index, rng

    def __getitem__(self, index: int) -> Window:
        k, i, rng = self.pick(index)
        member = self.members[k]
        w = member.patches[i]
        if self.grid:
            grid = np.full((1, *w.hr.shape[-2:]), member.grid, np.float32)
            w = replace(w, static=np.concatenate([w.static, grid]))
        if self.augment or self.gain > 1:
            turns, flip = (
                (int(rng.integers(4)), bool(rng.integers(2))) if self.augment else (0, False)
            )
            # log-uniform in [1/gain, gain]: as likely halved as doubled
            g = float(np.exp(rng.uniform(-1, 1) * np.log(self.gain))) if self.gain > 1 else 1.0
            w = augment(w, turns, flip, g)
        return w

    def counts(self) -> dict[str, int]:
        """Patches per campaign this epoch (the stated shares, as drawn)."""
        n = np.zeros(len(self.members), int)
        for index in range(self.length):
            n[self.pick(index)[0]] += 1
        return {m.name: int(c) for m, c in zip(self.members, n, strict=True)}
