"""Figures: maps with shared colour scales and units, spectra on log-log axes, QQ plots and rank
histograms. Every figure has a title, axis labels with units, and a legend or colour bar."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from climai.evaluation.metrics import SpectralRegion
from climai.io.atomic import atomic_path

QQ_LEVELS = np.concatenate([np.linspace(0.01, 0.99, 99), [0.995, 0.999, 0.9995]])


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)


def _limits(fields: list[np.ndarray], symmetric: bool = False) -> tuple[float, float]:
    stack = np.concatenate([f[np.isfinite(f)].ravel() for f in fields])
    if not stack.size:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        m = float(np.quantile(np.abs(stack), 0.99)) or 1.0
        return -m, m
    lo, hi = np.quantile(stack, [0.01, 0.99])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def maps_figure(
    steps: list[dict[str, dict[str, np.ndarray]]],
    when: list[str],
    units: dict[str, str],
    title: str,
    path: str | Path,
) -> None:
    """Maps of each chosen time step: per variable one row of fields (LR input, truth, each
    method; one shared colour scale) and one row of errors (method − truth; one shared symmetric
    scale). ``steps[i][var]`` maps panel labels to 2-D fields and must contain ``"truth"``."""
    rows: list[tuple[int, str, bool]] = []
    for i, panels in enumerate(steps):
        for var in panels:
            rows += [(i, var, False), (i, var, True)]
    ncols = max(len(p) for s in steps for p in s.values())
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(2.6 * ncols + 1, 2.5 * len(rows)), squeeze=False
    )
    for r, (i, var, is_error) in enumerate(rows):
        panels = steps[i][var]
        truth = panels["truth"]
        if is_error:
            fields = {k: f - truth for k, f in panels.items() if k not in ("truth", "LR input")}
            vmin, vmax = _limits(list(fields.values()), symmetric=True)
            cmap, label = "RdBu_r", f"error ({units[var]})"
        else:
            fields = panels
            vmin, vmax = _limits(list(fields.values()))
            cmap = "Blues" if units[var].startswith("mm") else "RdYlBu_r"
            label = units[var]
        im = None
        for c, (name, f) in enumerate(fields.items()):
            ax = axes[r, c]
            im = ax.imshow(f, origin="lower", vmin=vmin, vmax=vmax, cmap=cmap)
            ax.set_title(f"{var} {'error ' if is_error else ''}{name}\n{when[i]}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        for c in range(len(fields), ncols):
            axes[r, c].axis("off")
        if im is not None:
            fig.colorbar(im, ax=axes[r, : len(fields)].tolist(), shrink=0.85, label=label)
    fig.suptitle(title)
    save_figure(fig, path)


def spectra_figure(
    spectra: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    regions: dict[str, SpectralRegion],
    units: dict[str, str],
    title: str,
    path: str | Path,
) -> None:
    """Radially averaged power spectra, log-log, one panel per variable, the truth in black.
    ``spectra[var][label]`` is ``(wavelength, power)``; ``regions[var]`` where they were taken."""
    fig, axes = plt.subplots(1, len(spectra), figsize=(4.6 * len(spectra), 3.8), squeeze=False)
    for ax, (var, series) in zip(axes[0], spectra.items(), strict=True):
        region = regions[var]
        for label, (wl, p) in series.items():
            is_truth = label == "truth"
            ax.loglog(
                wl, p, label=label, lw=2.2 if is_truth else 1.2, color="k" if is_truth else None
            )
        ax.invert_xaxis()
        ax.set_xlabel("wavelength (HR cells)")
        ax.set_ylabel(f"power (({units[var]})²)")
        ax.set_title(f"{var}: {region.shape[0]}×{region.shape[1]} cells, {region.steps.size} steps")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)


def qq_figure(
    qq: dict[str, dict[str, np.ndarray]], units: dict[str, str], title: str, path: str | Path
) -> None:
    """Quantile–quantile plots: quantiles of each method against those of the truth at
    :data:`QQ_LEVELS` (1 % to 99.95 %; ``qq[var][label]``, ``"truth"`` among the labels), one
    panel per variable, with the 1:1 line."""
    fig, axes = plt.subplots(1, len(qq), figsize=(4.4 * len(qq), 4.2), squeeze=False)
    for ax, (var, series) in zip(axes[0], qq.items(), strict=True):
        qt = series["truth"]
        for label, q in series.items():
            if label == "truth":
                continue
            ax.plot(qt, q, ".-", ms=3, lw=1, label=label)
        lo, hi = float(qt.min()), float(qt.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
        ax.set_xlabel(f"truth quantile ({units[var]})")
        ax.set_ylabel(f"method quantile ({units[var]})")
        ax.set_title(f"{var}: QQ, p1 to p99.95")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)


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
