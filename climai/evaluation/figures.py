"""Figures: maps with shared colour scales and units, spectra on log-log axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from climai.evaluation.metrics import radial_power_spectrum
from climai.io.atomic import atomic_path


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def comparison_figure(
    panels: dict[str, dict[str, np.ndarray]],
    units: dict[str, str],
    title: str,
    path: str | Path,
    cubes: dict[str, dict[str, np.ndarray]] | None = None,
) -> None:
    """One row per variable: a map per panel (``{var: {label: 2-D field}}``) with one shared
    colour scale, and, when ``cubes`` (``{var: {label: (T, H, W)}}``) is given, their spectra."""
    variables = list(panels)
    ncols = max(len(p) for p in panels.values()) + (1 if cubes else 0)
    fig, axes = plt.subplots(
        len(variables), ncols, figsize=(3.1 * ncols, 3.0 * len(variables)), squeeze=False
    )
    for row, var in enumerate(variables):
        fields = panels[var]
        stack = np.concatenate([f[np.isfinite(f)].ravel() for f in fields.values()])
        vmin, vmax = np.quantile(stack, [0.01, 0.99]) if stack.size else (0.0, 1.0)
        cmap = "Blues" if units[var].startswith("mm") else "RdYlBu_r"
        for col, (label, field) in enumerate(fields.items()):
            ax = axes[row, col]
            im = ax.imshow(field, origin="lower", vmin=vmin, vmax=vmax, cmap=cmap)
            ax.set_title(f"{var}: {label}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=axes[row, : len(fields)].tolist(), shrink=0.8, label=units[var])
        if cubes:
            ax = axes[row, -1]
            for label, cube in cubes[var].items():
                wl, p = radial_power_spectrum(cube)
                ax.loglog(wl, p, label=label, lw=2 if label == "truth" else 1)
            ax.invert_xaxis()
            ax.set_xlabel("wavelength (HR cells)")
            ax.set_ylabel(f"power ({units[var]})²")
            ax.set_title(f"{var}: spectra", fontsize=9)
            ax.legend(fontsize=7)
        for col in range(len(fields), ncols - (1 if cubes else 0)):
            axes[row, col].axis("off")
    fig.suptitle(title)
    _save(fig, path)
