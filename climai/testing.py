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


def synthetic_ensemble_store(
    truth: xr.Dataset, variables: list[str], members: int = 4, noise: float = 0.5, seed: int = 0
) -> xr.Dataset:
    """A downscaled store with a ``member`` dimension, as an ensemble method writes it: each
    member is the HR truth (``hr_<var>``) plus seeded noise of std ``noise`` × the truth's std
    (non-negative variables clipped at 0)."""
    rng = np.random.default_rng(seed)
    out = xr.Dataset(coords={c: truth[c] for c in ("time", "y", "x")})
    for var in variables:
        t = truth[f"hr_{var}"].values
        ens = t[None] + noise * float(np.nanstd(t)) * rng.standard_normal((members, *t.shape))
        if np.nanmin(t) >= 0:
            ens = np.clip(ens, 0, None)
        out[var] = (
            ("member", "time", "y", "x"),
            ens.astype(np.float32),
            {"units": truth[f"hr_{var}"].attrs.get("units", "")},
        )
    return out.assign_coords(member=np.arange(members))
