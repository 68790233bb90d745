"""Figures: maps with shared colour scales and units, spectra on log-log axes, QQ plots and rank
histograms. Every figure has a title, axis labels with units, and a legend or colour bar.

Maps are drawn in the data's coordinates (km on projected grids, longitude/latitude on geographic
ones; :class:`~climai.evaluation.mapgrid.MapGrid`), north up whichever way the data's y axis runs,
and decimated by block means to at most :data:`MAP_CELLS` values per side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.image import AxesImage

from climai.evaluation.mapgrid import MAP_CELLS, MapGrid
from climai.evaluation.metrics import SpectralRegion
from climai.io.atomic import atomic_path

QQ_LEVELS = np.concatenate([np.linspace(0.01, 0.99, 99), [0.995, 0.999, 0.9995]])
# Every climai figure is drawn under these settings (:func:`figure_style`): titles sit at the top
# of their axes (matplotlib's automatic title height measures every tick label of the axes at
# each draw, twice with a tight bounding box), and map axes get at most MAP_TICKS intervals (4-5
# labelled ticks per 2.8-inch panel, up to 9 before). Both together: 0.65-0.68x the time of a
# 20-panel comparison map (`python benchmarks/figures.py --maps`, BENCHMARKS.md).
FIGURE_RC = {"axes.titley": 1.0}
MAP_TICKS = 4


def figure_style(func):
    """Decorator: run a figure function under :data:`FIGURE_RC` (a context, not a global change:
    a user's own plots keep their settings)."""
    return matplotlib.rc_context(FIGURE_RC)(func)


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)


def colour_limits(fields: list[np.ndarray], symmetric: bool = False) -> tuple[float, float]:
    stack = np.concatenate([f[np.isfinite(f)].ravel() for f in fields])
    if not stack.size:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        m = float(np.quantile(np.abs(stack), 0.99)) or 1.0
        return -m, m
    lo, hi = np.quantile(stack, [0.01, 0.99])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def draw_map(
    ax: plt.Axes, field: np.ndarray, grid: MapGrid, max_cells: int = MAP_CELLS, **style
) -> AxesImage:
    """Draw ``field`` (on ``grid``, in the data's row order) on ``ax`` in the grid's coordinates,
    north up, with labelled axes; ``style``: ``imshow`` keywords (vmin, vmax, cmap)."""
    if field.shape != grid.shape:
        raise ValueError(f"a field of shape {field.shape} on a grid of shape {grid.shape}")
    field, grid = grid.decimated(field, max_cells)
    im = ax.imshow(
        grid.north_up(field),
        origin="lower",
        extent=grid.extent,
        aspect=grid.aspect,
        interpolation="nearest",
        **style,
    )
    ax.locator_params(nbins=MAP_TICKS)
    xlabel, ylabel = grid.labels
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=6)
    return im


@figure_style
def maps_figure(
    steps: list[dict[str, dict[str, np.ndarray]]],
    when: list[str],
    units: dict[str, str],
    title: str,
    path: str | Path,
    grid: MapGrid,
) -> None:
    """Maps of each chosen time step: per variable one row of fields (LR input, truth, each
    method; one shared colour scale) and one row of errors (method − truth; one shared symmetric
    scale). ``steps[i][var]`` maps panel labels to 2-D fields on ``grid`` and must contain
    ``"truth"``; on fields reduced for drawing (:func:`~climai.evaluation.cubes.map_panels`)
    the errors are differences of block means."""
    rows: list[tuple[int, str, bool]] = []
    for i, panels in enumerate(steps):
        for var in panels:
            rows += [(i, var, False), (i, var, True)]
    ncols = max(len(p) for s in steps for p in s.values())
    ny, nx = grid.shape
    ratio = min(max(ny * grid.aspect / nx, 0.4), 1.5)  # panel height / width
    height = (1.9 * ratio + 0.9) * len(rows) + 0.6
    fig, axes = plt.subplots(
        len(rows),
        ncols,
        figsize=(2.8 * ncols + 1, height),
        squeeze=False,
        gridspec_kw={"hspace": 0.6, "wspace": 0.3, "top": 1 - 0.9 / height},
    )
    for r, (i, var, is_error) in enumerate(rows):
        panels = steps[i][var]
        truth = panels["truth"]
        if is_error:
            fields = {k: f - truth for k, f in panels.items() if k not in ("truth", "LR input")}
            vmin, vmax = colour_limits(list(fields.values()), symmetric=True)
            cmap, label = "RdBu_r", f"error ({units[var]})"
        else:
            fields = panels
            vmin, vmax = colour_limits(list(fields.values()))
            cmap = "Blues" if units[var].startswith("mm") else "RdYlBu_r"
            label = units[var]
        im = None
        for c, (name, f) in enumerate(fields.items()):
            ax = axes[r, c]
            im = draw_map(ax, f, grid, vmin=vmin, vmax=vmax, cmap=cmap)
            ax.set_title(f"{var} {'error ' if is_error else ''}{name}\n{when[i]}", fontsize=8)
            if c:
                ax.set_ylabel("")  # the first column's label holds for the row
        for c in range(len(fields), ncols):
            axes[r, c].axis("off")
        if im is not None:
            fig.colorbar(im, ax=axes[r, : len(fields)].tolist(), shrink=0.85, label=label)
    fig.suptitle(title, y=1 - 0.25 / height)
    save_figure(fig, path)


@figure_style
def spectra_figure(
    spectra: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    regions: dict[str, SpectralRegion],
    units: dict[str, str],
    title: str,
    path: str | Path,
    grid: MapGrid,
) -> None:
    """Radially averaged power spectra, log-log, one panel per variable, the truth in black,
    against wavelength in km (:attr:`MapGrid.cell_km` per HR cell; on a lat/lon grid at the
    domain's mean latitude, which the axis label states). ``spectra[var][label]`` is
    ``(wavelength in HR cells, power)``; ``regions[var]`` where they were taken."""
    fig, axes = plt.subplots(1, len(spectra), figsize=(4.6 * len(spectra), 3.8), squeeze=False)
    for ax, (var, series) in zip(axes[0], spectra.items(), strict=True):
        region = regions[var]
        for label, (wl, p) in series.items():
            is_truth = label == "truth"
            ax.loglog(
                wl * grid.cell_km,
                p,
                label=label,
                lw=2.2 if is_truth else 1.2,
                color="k" if is_truth else None,
            )
        ax.invert_xaxis()
        ax.set_xlabel(f"wavelength (km)\n{grid.cell_note}", fontsize=8)
        ax.set_ylabel(f"power (({units[var]})²)")
        ax.set_title(f"{var}: {region.shape[0]}×{region.shape[1]} cells, {region.steps.size} steps")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)


@figure_style
def qq_figure(
    qq: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    units: dict[str, str],
    title: str,
    path: str | Path,
) -> None:
    """Quantile–quantile plots: quantiles of each method against those of the truth at
    :data:`QQ_LEVELS` (1 % to 99.95 %), one panel per variable, with the 1:1 line.
    ``qq[var][method]`` is the pair (truth's, method's quantiles), each truth's on the cells
    valid in it and that method's prediction: methods with other NaN cells have other truths."""
    fig, axes = plt.subplots(1, len(qq), figsize=(4.4 * len(qq), 4.2), squeeze=False)
    for ax, (var, series) in zip(axes[0], qq.items(), strict=True):
        for label, (qt, q) in series.items():
            ax.plot(qt, q, ".-", ms=3, lw=1, label=label)
        truths = np.concatenate([qt for qt, _ in series.values()])
        lo, hi = float(np.nanmin(truths)), float(np.nanmax(truths))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
        ax.set_xlabel(f"truth quantile ({units[var]})")
        ax.set_ylabel(f"method quantile ({units[var]})")
        ax.set_title(f"{var}: QQ, p1 to p99.95")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)


@figure_style
def rank_histogram_figure(
    counts: dict[str, dict[str, list[int]]], title: str, path: str | Path
) -> None:
    """Rank histograms (relative frequency of the truth's rank among the members), one panel per
    variable and method (``counts[method][var]``); the dashed line is the flat, reliable level."""
    panels = [(m, v, c) for m, per_var in counts.items() for v, c in per_var.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.2), squeeze=False)
    for ax, (method, var, c) in zip(axes[0], panels, strict=True):
        freq = np.asarray(c, float) / max(sum(c), 1)
        ax.bar(np.arange(freq.size), freq, color="tab:blue", label="truth rank")
        ax.axhline(1 / freq.size, color="k", ls="--", lw=1, label="reliable")
        ax.set_xlabel(f"rank of the truth among {freq.size - 1} members")
        ax.set_ylabel("relative frequency")
        ax.set_title(f"{method}: {var}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)


@figure_style
def learning_curves_figure(
    histories: dict[str, list[dict[str, str]]], title: str, path: str | Path
) -> None:
    """Learning curves of every emulator from its ``history.csv`` rows (``histories[method]``):
    training and validation loss (log scale), learning rate and throughput against epoch; one
    colour per method (and variable group when trained per variable)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    for method, rows in histories.items():
        for group in dict.fromkeys(r.get("group", "all") for r in rows):
            sel = [r for r in rows if r.get("group", "all") == group]
            label = method if group == "all" else f"{method}/{group}"
            epoch = [int(r["epoch"]) for r in sel]

            def col(key: str, sel: list[dict[str, str]] = sel) -> list[float]:
                return [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in sel]

            c = next(colours)
            axes[0].plot(epoch, col("train_loss"), "--", color=c, label=f"{label} train")
            axes[0].plot(epoch, col("val_loss"), "-", color=c, marker=".", label=f"{label} val")
            axes[1].plot(epoch, col("lr"), "-", color=c, label=label)
            axes[2].plot(epoch, col("samples_per_s"), "-", color=c, marker=".", label=label)
    for ax, ylabel, log in (
        (axes[0], "loss (training objective)", True),
        (axes[1], "learning rate", True),
        (axes[2], "training samples / s", False),
    ):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("loss: train (dashed), validation (solid)", fontsize=9)
    axes[1].set_title("learning rate at the end of each epoch", fontsize=9)
    axes[2].set_title("throughput", fontsize=9)
    fig.suptitle(title)
    save_figure(fig, path)
