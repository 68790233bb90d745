"""Seeded factories for tests (and for users' own tests of extensions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml

from climai.config import deep_merge
from climai.synthetic import toy_world


def create_test_data(
    nx: int = 32, ny: int = 32, steps: int = 24, seed: int = 0
) -> tuple[xr.Dataset, xr.Dataset]:
    """A tiny toy world: ``(target, static)`` with ``tas`` and ``pr``."""
    return toy_world(seed=seed, nx=nx, ny=ny, steps=steps)


def radar_mask(ny: int, nx: int, radius: float = 0.45, blocked_deg: float = 20.0) -> np.ndarray:
    """Boolean ``(ny, nx)``, True where a radar sees: a disc of ``radius`` × the domain size
    around the centre, minus a beam-blocked wedge of ``blocked_deg`` degrees (pointing north-east).
    """
    yy, xx = np.meshgrid(np.arange(ny) + 0.5 - ny / 2, np.arange(nx) + 0.5 - nx / 2, indexing="ij")
    inside = np.hypot(yy, xx) <= radius * min(ny, nx)
    angle = np.degrees(np.arctan2(yy, xx))
    return inside & ~((angle > 45 - blocked_deg / 2) & (angle < 45 + blocked_deg / 2))


def create_masked_test_data(
    nx: int = 32, ny: int = 32, steps: int = 24, seed: int = 0, radius: float = 0.45
) -> tuple[xr.Dataset, xr.Dataset]:
    """The tiny toy world with ``pr`` NaN outside a radar's range and in a blocked wedge.

    Like the radar composites of the KNMI and FMI campaigns: ``tas`` stays complete.
    """
    target, static = create_test_data(nx=nx, ny=ny, steps=steps, seed=seed)
    seen = radar_mask(ny, nx, radius)
    target["pr"] = target["pr"].where(xr.DataArray(seen, dims=("y", "x")))
    return target, static


def random_field(shape: tuple[int, ...], seed: int = 0, nan_fraction: float = 0.0) -> np.ndarray:
    """Seeded float32 normal noise with a fraction of NaN cells."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal(shape).astype(np.float32)
    if nan_fraction:
        out[rng.uniform(size=shape) < nan_fraction] = np.nan
    return out


TINY_CAMPAIGN: dict[str, Any] = {
    "campaign": "tiny",
    "data": {"target": {"source": "synthetic", "nx": 32, "ny": 32, "steps": 48}},
    "methods": {"bicubic": {}, "unet": {"epochs": 1, "patch": 32, "batch": 8}},
}


def write_config(path: str | Path, **overrides: Any) -> Path:
    """Write a tiny campaign config (``TINY_CAMPAIGN`` updated with ``overrides``) to ``path``."""
    path = Path(path)
    path.write_text(yaml.safe_dump(deep_merge(TINY_CAMPAIGN, overrides), sort_keys=False))
    return path
