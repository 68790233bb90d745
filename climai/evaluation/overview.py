"""The whole domain with a zoom: the truth at one test step over the whole grid (block means when
it is large) with a box around its largest-value region, and that box at full resolution for the
LR input, the truth and every method. Only the drawn step is read, and of the methods only the box.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.patches import Rectangle

from climai.evaluation.figures import colour_limits, draw_map, figure_style, save_figure
from climai.evaluation.mapgrid import MapGrid

ZOOM_CELLS = 256  # the zoom box's side at most, in HR cells


def zoom_size(shape: tuple[int, int], align: int = 1) -> int:
    """The zoom box's side for a grid of ``shape``: a quarter of the longer side, at most
    :data:`ZOOM_CELLS` and at most the shorter side, a multiple of ``align`` (the LR scale)."""
    ny, nx = shape
    size = min(ZOOM_CELLS, max(ny, nx) // 4, ny, nx)
    return max(align, size // align * align)


def zoom_box(field: np.ndarray, size: int, align: int = 1) -> tuple[slice, slice]:
    """Row and column slices of the ``size``×``size`` box with the largest mean of ``field``
    (missing cells count as 0; of equally good boxes the middle one), its corner on a multiple of
    ``align`` cells. Found on block means of ``size // 8`` cells, so a 3500×7000 field costs one
    pass."""
    ny, nx = field.shape
    if size > min(ny, nx):
        raise ValueError(f"a zoom of {size} cells does not fit a {ny}×{nx} field")
    k = max(1, size // 8)
    cy, cx = ny // k, nx // k
    coarse = np.nan_to_num(field[: cy * k, : cx * k], nan=0.0).reshape(cy, k, cx, k)
    coarse = coarse.mean(axis=(1, 3), dtype=np.float64)
    b = size // k
    sat = np.pad(coarse.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    sums = sat[b:, b:] - sat[:-b, b:] - sat[b:, :-b] + sat[:-b, :-b]
    # every box as good as the best (a compact feature fits in many): the middle one, centred
    ii, jj = np.nonzero(sums >= sums.max() - 1e-9 * abs(sums.max()))
    i, j = (ii.min() + ii.max()) // 2, (jj.min() + jj.max()) // 2
    r0 = min(round(int(i) * k / align) * align, (ny - size) // align * align)
    c0 = min(round(int(j) * k / align) * align, (nx - size) // align * align)
    return slice(r0, r0 + size), slice(c0, c0 + size)


def zoom_panels(
    lr: xr.DataArray,
    truth: np.ndarray,
    methods: dict[str, xr.DataArray],
    step: int,
    box: tuple[slice, slice],
    scale: int,
) -> dict[str, np.ndarray]:
    """The box of the LR input (``lr``: (time, y_lr, x_lr), blocks repeated), of the truth
    (``truth``: the step's whole field, already read) and of each method (lazy (time, y, x) or
    (member, time, y, x) cubes: member 0; only the box of ``step`` is read)."""
    ys, xs = box
    lr_box = lr.isel(
        time=step,
        y_lr=slice(ys.start // scale, ys.stop // scale),
        x_lr=slice(xs.start // scale, xs.stop // scale),
    ).values
    panels = {"LR input": np.kron(lr_box, np.ones((scale, scale))), "truth": truth[ys, xs]}
    for label, da in methods.items():
        sel = da.isel(time=step, y=ys, x=xs)
        if "member" in sel.dims:
            panels[f"{label} member 0"] = sel.isel(member=0).values
        else:
            panels[label] = sel.values
    return panels


@figure_style
def overview_figure(
    whole: np.ndarray,
    grid: MapGrid,
    box: tuple[slice, slice],
    zooms: dict[str, np.ndarray],
    units: str,
    title: str,
    path: str | Path,
) -> None:
    """``whole`` (the truth on ``grid``) with the zoom ``box`` outlined, beside the ``zooms``
    (label → the box's field) on one shared colour scale, set by the zooms."""
    zgrid = grid.subset(*box)
    vmin, vmax = colour_limits(list(zooms.values()))  # the zoom's values: not a dry domain's
    cmap = "Blues" if units.startswith("mm") else "RdYlBu_r"
    ncols = math.ceil(len(zooms) / 2)
    ny, nx = grid.shape
    wide = min(max(nx / (ny * grid.aspect), 0.6), 2.5)  # the overview's width / height
    fig = plt.figure(figsize=(5.2 * wide + 2.6 * ncols + 1, 6.2), layout="constrained")
    gs = fig.add_gridspec(2, ncols + 1, width_ratios=[2 * wide] + [1] * ncols)
    ax = fig.add_subplot(gs[:, 0])
    im = draw_map(ax, whole, grid, vmin=vmin, vmax=vmax, cmap=cmap)
    west, east, south, north = zgrid.extent
    ax.add_patch(Rectangle((west, south), east - west, north - south, fill=False, ec="red", lw=1.5))
    ax.set_title(f"truth, whole domain ({ny}×{nx} cells)", fontsize=9)
    axes = [ax]
    for n, (label, field) in enumerate(zooms.items()):
        zax = fig.add_subplot(gs[n % 2, 1 + n // 2])
        draw_map(zax, field, zgrid, vmin=vmin, vmax=vmax, cmap=cmap)
        zax.set_title(f"{label} (zoom)", fontsize=8)
        for side in zax.spines.values():
            side.set_edgecolor("red")
        axes.append(zax)
    fig.colorbar(im, ax=axes, shrink=0.8, label=units)
    fig.suptitle(title)
    save_figure(fig, path)
