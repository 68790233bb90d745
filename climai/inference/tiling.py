"""Tiled inference: tile layout, blending weights and the :class:`TiledPredictor` (no I/O).

A domain of any size is cut into overlapping HR tiles (sizes and overlaps are multiples of
``scale``, so every tile edge falls on an LR cell edge). Each tile's inputs are built from its LR
window plus a margin of LR cells (the bicubic kernel reaches two LR cells out, so the tile's
interpolation equals the full domain's), its HR static fields and the time features. Predictions
are blended with weights that are zero within ``overlap / 4`` of an inner tile edge, rise as
``sin²`` over the next ``overlap / 2`` cells and are one beyond: the cells a model sees next to its
zero-padded tile edge never count, and a model whose receptive radius is at most ``overlap / 4``
gives the same field as one forward pass over the whole domain. Tiles are processed one row after
another; a row's HR band is final once the next row starts, so memory is one band of the domain
width, never the domain.

Ensembles are drawn tile batch by tile batch: batch ``b`` of time block ``k`` gets the seed
``batch_seed(block_seed, b)`` and member ``m`` of it ``batch_seed(that, m)``
(:func:`climai.inference.distributed.chunk_seed` mixing), so a block's members are the same
whichever rank draws it and whatever the other blocks; they depend on the tile layout and the batch
size (the noise is drawn per tile). A conserving model's constraint is applied to each finished
band after blending: bands start and end on tile-row starts, which are multiples of ``scale``, so
every band holds whole LR blocks and every block mean equals its LR value also across tile seams.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from climai.data.features import FeatureSpec, model_inputs
from climai.inference.blend import blend_members, tile_weights, true_runs
from climai.inference.distributed import chunk_seed
from climai.models.constraints import SPREADS, conserve, lr_roughness, spread_members
from climai.models.interpolate import nan_fill

#: ``predict(x, base, seed)``: normalised inputs ``(N, C, h, w)`` and bicubic base
#: ``(N, V, h, w)`` → normalised predictions ``(N, V, h, w)``, or ``(N, M, V, h, w)`` for an
#: ensemble of M members drawn from ``seed`` (a deterministic model ignores it).
Predict = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

#: LR cells of context around each tile: the reach of the bicubic kernel.
LR_MARGIN = 2


@dataclass(frozen=True)
class Tile:
    """One tile: its HR cells and the LR window (tile plus margin, clipped) its inputs come from."""

    row: int
    col: int
    y0: int
    y1: int
    x0: int
    x1: int
    ly0: int
    ly1: int
    lx0: int
    lx1: int
    scale: int

    @property
    def crop(self) -> tuple[int, int, int, int]:
        """The tile inside the upsampled LR window."""
        oy, ox = self.ly0 * self.scale, self.lx0 * self.scale
        return (self.y0 - oy, self.y1 - oy, self.x0 - ox, self.x1 - ox)


def tile_starts(n: int, tile: int, stride: int) -> list[int]:
    """Starts of tiles of size ``tile`` covering ``n`` cells, ``stride`` apart; the last ends at n."""
    if n <= tile:
        return [0]
    return [*range(0, n - tile, stride), n - tile]


@dataclass(frozen=True)
class TileLayout:
    """Overlapping tiles over an HR domain of ``shape`` = LR shape × ``scale``."""

    shape: tuple[int, int]
    scale: int
    tile: tuple[int, int]
    overlap: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    multiple: int = 1  # the model's size multiple (HR cells)

    @classmethod
    def build(
        cls, lr_shape: tuple[int, int], scale: int, tile: int, overlap: int, multiple: int = 1
    ) -> TileLayout:
        """The layout for LR fields of ``lr_shape``; ``multiple``: the model's size multiple."""
        for name, value in (("tile", tile), ("overlap", overlap)):
            if value % scale:
                raise ValueError(f"infer.{name}={value} is not a multiple of scale={scale}")
        if tile % multiple:
            raise ValueError(f"infer.tile={tile} is not a multiple of the model's {multiple}")
        if not 0 <= overlap < tile:
            raise ValueError(f"infer.overlap={overlap} must be in [0, infer.tile={tile})")
        shape = (lr_shape[0] * scale, lr_shape[1] * scale)
        size = (min(tile, shape[0]), min(tile, shape[1]))
        for axis, n in zip("yx", shape, strict=True):
            if n % multiple:
                raise ValueError(
                    f"HR domain has {n} cells along {axis}, not a multiple of the model's {multiple}"
                )
        stride = tile - overlap
        rows = tuple(tile_starts(shape[0], size[0], stride))
        cols = tuple(tile_starts(shape[1], size[1], stride))
        return cls(shape, scale, size, overlap, rows, cols, multiple)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def tile_at(self, row: int, col: int) -> Tile:
        """The tile in row ``row`` and column ``col`` of the layout."""
        (th, tw), y0, x0 = self.tile, self.rows[row], self.cols[col]
        return self._tile(row, col, y0, y0 + th, x0, x0 + tw)

    def _tile(self, row: int, col: int, y0: int, y1: int, x0: int, x1: int) -> Tile:
        """HR cells ``[y0, y1) × [x0, x1)`` as a :class:`Tile` with its LR window."""
        s, (lh, lw) = self.scale, (self.shape[0] // self.scale, self.shape[1] // self.scale)
        ly0, lx0 = max(0, y0 // s - LR_MARGIN), max(0, x0 // s - LR_MARGIN)
        ly1, lx1 = min(lh, y1 // s + LR_MARGIN), min(lw, x1 // s + LR_MARGIN)
        return Tile(row, col, y0, y1, x0, x1, ly0, ly1, lx0, lx1, s)

    def weights(self, t: Tile) -> torch.Tensor:
        """``(h, w)`` blending weights of tile ``t``."""
        nr, nc = len(self.rows), len(self.cols)
        edges = (t.row > 0, t.row < nr - 1, t.col > 0, t.col < nc - 1)
        return tile_weights(self.tile, self.overlap, edges)

    def wet_part(self, t: Tile, wet: torch.Tensor, margin: int) -> Tile:
        """The part of tile ``t`` around its wet LR cells: their bounding box grown by ``margin``
        LR cells, kept inside the tile, its sides then grown (inside the tile) to multiples of
        the scale and the model's multiple. ``wet`` is ``(h, w)`` over the tile's own LR cells
        and holds at least one true value; the part keeps ``t``'s row and column."""
        s = self.scale
        step = math.lcm(s, self.multiple) // s  # LR cells
        spans = []
        for axis, n in ((1, wet.shape[0]), (0, wet.shape[1])):
            hit = torch.nonzero(wet.any(axis)).flatten()
            a, b = max(0, int(hit[0]) - margin), min(n, int(hit[-1]) + 1 + margin)
            b = a + -(-(b - a) // step) * step  # n is a multiple of step: the part fits
            spans.append((min(a, n - (b - a)) if b > n else a, min(b, n)))
        (a, b), (c, d) = spans
        return self._tile(t.row, t.col, t.y0 + a * s, t.y0 + b * s, t.x0 + c * s, t.x0 + d * s)

    def band_end(self, row: int) -> int:
        """HR row up to which the field is final once tile row ``row`` is done."""
        return self.rows[row + 1] if row + 1 < len(self.rows) else self.shape[0]


@dataclass
class _Band:
    """Weighted sums of the predictions over one band of tile rows."""

    y0: int
    total: torch.Tensor | None  # (T, [M,] V, th, W)
    weight: torch.Tensor  # (th, W)
    weight2: torch.Tensor  # (th, W): the sum of the squared weights (ensembles' departures)


def dry_is_exact(spec: FeatureSpec) -> bool:
    """Whether a conserving prediction is exactly 0 wherever the LR is 0: every variable is
    non-negative and its inverse transform clamps at 0 (no negative value to offset a block)."""
    return all(spec.non_negative) and all(spec.transform(v).name == "log1p" for v in spec.variables)


class TiledPredictor:
    """Applies ``predict`` tile by tile and yields the blended HR field band by band.

    Parameters
    ----------
    predict:
        The model, as a :data:`Predict` callable (deterministic or an ensemble).
    spec:
        Features, statistics and scale of the model.
    layout:
        The tiles.
    batch:
        Tile × time samples per call of ``predict``.
    conserving:
        Correct each finished band so that every HR block mean equals its LR value
        (:func:`climai.models.constraints.conserve`, after blending, in physical units).
    members:
        Members ``predict`` draws (the shape of a band none of whose tiles was computed).
    skip_missing:
        Skip tile steps without LR values or, where exact, dry ones (below); False computes them
        too (the same values).
    crop_dry:
        Where dry tiles are skipped, compute only the part of a tile around its wet LR cells
        (below); False: whole tiles.

    A tile step whose own LR cells are all missing (every variable) is not computed: its HR
    cells are all NaN whatever the model says. When ``conserving`` and every variable is
    non-negative with a clamped inverse transform (precipitation: ``log1p``), a tile step whose
    own LR cells are all 0 or missing is not computed either: the conservation makes every HR
    block of an LR 0 exactly 0 (gain 0, or an all-zero block kept) whatever is predicted there,
    so the tile's prediction never reaches the output (``dry``: 335 of the 1134 tile steps of
    the MRMS CONUS test split). ``samples`` counts the tile steps seen, ``skipped`` those not
    computed, ``dry`` those of them that had LR values (all 0).

    For the same reason (``crop_dry``) a computed batch of a tile's steps runs the model only
    on the part of the tile around their wet LR cells: the bounding box of the LR cells that are
    neither 0 nor missing, grown by ``overlap / 2`` (at least one LR cell) and kept inside the
    tile (:meth:`TileLayout.wet_part`); the rest of the tile adds 0 with its blending weight,
    where the conservation writes 0 anyway. A wet cell is at least that margin from a cut that is
    not a tile edge, so a model whose receptive radius is at most ``overlap / 2`` writes the same
    field as with whole tiles (up to float rounding; the transfer campaigns' U-Net, bitwise); a
    wider one differs by what it sees beyond the margin. An ensemble's noise is drawn per batch,
    so its members change with the parts, not their statistics. ``cells`` counts the HR cells ×
    steps computed and those of the whole tiles they are cut from.
    """

    def __init__(
        self,
        predict: Predict,
        spec: FeatureSpec,
        layout: TileLayout,
        batch: int,
        conserving: bool = False,
        members: int = 1,
        skip_missing: bool = True,
        inflation: list[float] | None = None,
        spread_rule: str = "inflation",
        crop_dry: bool = True,
    ) -> None:
        self.predict, self.spec, self.layout = predict, spec, layout
        self.inflation = inflation if members > 1 else None  # per variable (ensembles)
        if spread_rule not in SPREADS:
            raise ValueError(f"spread_rule {spread_rule!r}: expected one of {list(SPREADS)}")
        self.spread_rule = spread_rule
        self.batch, self.conserving, self.members = max(1, batch), conserving, members
        self.skip_missing = skip_missing
        self.skip_dry = skip_missing and conserving and dry_is_exact(spec)
        self.crop_dry = self.skip_dry and crop_dry
        self.samples = self.skipped = self.dry = 0  # tile steps seen, not computed, dry of those
        self.cells = [0, 0]  # HR cells × steps computed; those of the whole tiles computed
        self._rough: torch.Tensor | None = None

    def run(
        self,
        lr: np.ndarray,
        static: Callable[[Tile], torch.Tensor],
        times: pd.DatetimeIndex,
        progress: Callable[[int], None] = lambda n: None,
        seed: int = 0,
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(y0, y1, values)`` for consecutive HR bands of the domain.

        ``lr`` is ``(T, V, h, w)`` physical LR; ``static(tile)`` the tile's normalised static
        fields ``(S, th, tw)``; ``values`` is ``(T, [M,] V, y1 - y0, W)`` physical, NaN over the HR
        footprint of missing LR cells. ``progress(n)`` is called after every ``n`` samples;
        ``seed`` is the time block's: batch ``b`` is drawn with ``chunk_seed(seed, b)``.
        """
        self._seed, self._batches, self._progress = seed, 0, progress
        lr_t = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
        fill = nan_fill(lr_t)
        missing = torch.isnan(lr_t)
        # the roughness rule's LR neighbourhoods, from the whole domain (no tile edges): h × w
        by_roughness = self.inflation is not None and self.spread_rule == "roughness"
        self._rough = lr_roughness(lr_t) if by_roughness else None
        th, width = self.layout.tile[0], self.layout.shape[1]
        band = _Band(0, None, torch.zeros(th, width), torch.zeros(th, width))
        for row in range(len(self.layout.rows)):
            band = self._shift(band, self.layout.rows[row])
            for col in range(len(self.layout.cols)):
                tile = self.layout.tile_at(row, col)
                band.weight[:, tile.x0 : tile.x1] += self.layout.weights(tile)
                band.weight2[:, tile.x0 : tile.x1] += self.layout.weights(tile).square()
            for tile, part, t0, out in self._predicted_row(row, lr_t, fill, static, times):
                w = self.layout.weights(tile)
                w = w[part.y0 - tile.y0 : part.y1 - tile.y0, part.x0 - tile.x0 : part.x1 - tile.x0]
                band.total = self._accumulate(band, out, w, part, t0, lr_t.shape[0])
                progress(out.shape[0])
            end = self.layout.band_end(row)
            yield band.y0, end, self._finish(band, end, lr_t, missing)

    def _shift(self, band: _Band, y0: int) -> _Band:
        """The band moved down to start at HR row ``y0``, keeping the sums below it."""
        k = y0 - band.y0
        if k == 0:
            return band
        weight, weight2 = torch.zeros_like(band.weight), torch.zeros_like(band.weight2)
        weight[: weight.shape[0] - k], weight2[: weight.shape[0] - k] = (
            band.weight[k:],
            band.weight2[k:],
        )
        total = None
        if band.total is not None:
            total = torch.zeros_like(band.total)
            total[..., : total.shape[-2] - k, :] = band.total[..., k:, :]
        return _Band(y0, total, weight, weight2)

    def _accumulate(
        self,
        band: _Band,
        out: torch.Tensor,
        w: torch.Tensor,
        part: Tile,
        t0: int,
        steps: int,
    ) -> torch.Tensor:
        """The band's sums with ``out`` (the prediction of ``part``, a tile or a part of it)
        weighted by ``w`` added."""
        total = band.total
        if total is None:
            shape = (steps, *out.shape[1:-2], self.layout.tile[0], self.layout.shape[1])
            total = torch.zeros(shape)
        rows = slice(part.y0 - band.y0, part.y1 - band.y0)
        total[t0 : t0 + out.shape[0], ..., rows, part.x0 : part.x1] += out * w
        return total

    def _predicted_row(
        self,
        row: int,
        lr: torch.Tensor,
        fill: torch.Tensor,
        static: Callable[[Tile], torch.Tensor],
        times: pd.DatetimeIndex,
    ) -> Iterator[tuple[Tile, Tile, int, torch.Tensor]]:
        """Predictions of a row's tiles as ``(tile, part, first time index, (n, [M,] V, h, w))``:
        ``part`` is the tile or, where :attr:`crop_dry`, the part of it computed."""
        queue: list[tuple[Tile, Tile, int, torch.Tensor, torch.Tensor]] = []
        s = self.layout.scale
        margin = max(1, -(-self.layout.overlap // (2 * s)))  # LR cells around the wet ones
        for col in range(len(self.layout.cols)):
            tile = self.layout.tile_at(row, col)
            own = lr[..., tile.y0 // s : tile.y1 // s, tile.x0 // s : tile.x1 // s]
            missing = torch.isnan(own).flatten(1).all(1) & self.skip_missing  # no LR value
            empty = missing
            if self.skip_dry:  # all 0 or missing: conserved to exactly 0 (NaN where missing)
                empty = missing | (own.nan_to_num(0.0) == 0).flatten(1).all(1)
                self.dry += int((empty & ~missing).sum())
            n_empty = int(empty.sum())
            self.samples += lr.shape[0]
            self.skipped += n_empty
            self._progress(n_empty)
            fields = static(tile)
            for t0, t1 in true_runs(~empty):  # runs of steps to compute; the others stay NaN
                # inputs built one batch of steps at a time (never the whole time block's)
                for t in range(t0, t1, self.batch):
                    u = min(t1, t + self.batch)
                    part = tile
                    if self.crop_dry:  # only the steps' wet LR cells, with a margin
                        wet = (own[t:u].nan_to_num(0.0) != 0).flatten(0, 1).any(0)
                        part = self.layout.wet_part(tile, wet, margin)
                    self.cells[0] += (u - t) * (part.y1 - part.y0) * (part.x1 - part.x0)
                    self.cells[1] += (u - t) * (tile.y1 - tile.y0) * (tile.x1 - tile.x0)
                    window = lr[..., part.ly0 : part.ly1, part.lx0 : part.lx1]
                    y, x = part.y0 - tile.y0, part.x0 - tile.x0
                    cut = fields[:, y : y + part.y1 - part.y0, x : x + part.x1 - part.x0]
                    x_in, base = model_inputs(
                        self.spec, window[t:u], cut, times[t:u], fill[t:u], part.crop
                    )
                    queue.append((tile, part, t, x_in, base))
                    while sum(q[3].shape[0] for q in queue) >= self.batch:
                        yield from self._flush(queue, self.batch)
        while queue:
            yield from self._flush(queue, self.batch)

    def _flush(
        self, queue: list[tuple[Tile, Tile, int, torch.Tensor, torch.Tensor]], batch: int
    ) -> Iterator[tuple[Tile, Tile, int, torch.Tensor]]:
        """Predict one batch from the front of ``queue`` and hand the pieces back per tile; a
        batch holds pieces of one size (the parts of :attr:`crop_dry` differ), so it may be
        smaller than ``batch``."""
        taken, n = [], 0
        while queue and n < batch:
            tile, part, t, x, base = queue[0]
            if taken and x.shape[-2:] != taken[0][3].shape[-2:]:
                break
            queue.pop(0)
            k = min(batch - n, x.shape[0])
            taken.append((tile, part, t, x[:k], base[:k]))
            if k < x.shape[0]:
                queue.insert(0, (tile, part, t + k, x[k:], base[k:]))
            n += k
        x = torch.cat([p[3] for p in taken])
        base = torch.cat([p[4] for p in taken])
        out = self.predict(x, base.nan_to_num(0.0), chunk_seed(self._seed, self._batches)).float()
        self._batches += 1
        i = 0
        for tile, part, t, xs, _ in taken:
            yield tile, part, t, out[i : i + xs.shape[0]]
            i += xs.shape[0]

    def _step_stats(
        self,
        first: torch.Tensor,
        t: int,
        members: int,
        physical: Callable[[tuple[int, ...]], torch.Tensor],
        y0: int,
        end: int,
    ) -> dict[str, torch.Tensor | None]:
        """``spread_members``' statistics of step ``t``'s band rows ``[y0, end)``, member by
        member (``first`` is member 0): the members' mean, their std (the rules that keep each
        member's standardised departure) and the roughness rule's field on the HR grid, each
        ``(1, 1, V, k, W)``."""
        mean = sum(physical((t, m)) for m in range(1, members)) + first
        mean = mean / members
        std = rough = None
        if self.spread_rule != "inflation":
            dev = (first - mean).square()
            for m in range(1, members):
                dev += (physical((t, m)) - mean).square()
            std = (dev / members).sqrt()[None, None]
        if self._rough is not None:
            s = self.layout.scale
            rough = self._rough[t, :, y0 // s : end // s]
            rough = rough.repeat_interleave(s, -2).repeat_interleave(s, -1)[None, None]
        return {"mean": mean[None, None], "std": std, "roughness": rough}

    def _finish(self, band: _Band, end: int, lr: torch.Tensor, missing: torch.Tensor) -> np.ndarray:
        """Physical values of the band's final rows ``[band.y0, end)`` (conserving the LR block
        means when asked), NaN where LR is missing."""
        k, s = end - band.y0, self.layout.scale
        rows = missing[..., band.y0 // s : end // s, :]
        if band.total is None:  # no tile of the band was computed: LR all missing (or dry)
            holes = rows.repeat_interleave(s, -2).repeat_interleave(s, -1).numpy()
            zero = np.where(holes, np.float32(np.nan), np.float32(0.0))  # (T, V, k, W)
            if self.members > 1:
                return np.repeat(zero[:, None], self.members, axis=1)
            return zero
        total, weight, weight2 = band.total, band.weight[:k], band.weight2[:k]
        lead = tuple(total.shape[:-3])  # (T,) or (T, M)
        out = np.empty((*lead, total.shape[-3], k, total.shape[-1]), np.float32)
        lr_rows = lr[..., band.y0 // s : end // s, :]
        nonneg = self.spec.non_negative

        @functools.lru_cache(maxsize=1)  # one step's members at a time
        def blended(t: int) -> torch.Tensor:
            return blend_members(total[t][..., :k, :], weight, weight2)

        def physical(idx: tuple[int, ...]) -> torch.Tensor:
            z = blended(idx[0])[idx[1]] if len(idx) > 1 else total[idx][..., :k, :] / weight
            # a non-negative kind never below 0 (log1p's inverse clamps already; identity does not)
            return torch.stack(
                [
                    self.spec.denormalise(v, z[i]).clamp(min=0)
                    if nonneg[i]
                    else self.spec.denormalise(v, z[i])
                    for i, v in enumerate(self.spec.variables)
                ]
            )

        # a spread ensemble's per-step statistics (members' mean, std; the roughness rule's field)
        stats: dict[str, torch.Tensor | None] = {}
        # sample by sample (a step, or a step's member): the temporaries are one sample's
        for idx in np.ndindex(*lead):
            phys = physical(idx)
            if self.inflation is not None:
                if idx[1] == 0:  # one member at a time, no step's members all at once
                    stats = self._step_stats(phys, idx[0], lead[1], physical, band.y0, end)
                one = spread_members(
                    self.spread_rule, phys[None, None], self.inflation, nonneg, **stats
                )
                phys = one[0, 0]
            if self.conserving:
                phys = conserve(phys[None], lr_rows[idx[0]][None], s, nonneg)[0]
            hole = rows[idx[0]].repeat_interleave(s, -2).repeat_interleave(s, -1)
            out[idx] = phys.masked_fill(hole, math.nan).numpy()
        return out
