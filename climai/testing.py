"""Seeded factories for tests (and for users' own tests of extensions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
import yaml

from climai.config import deep_merge
from climai.data.features import FeatureSpec
from climai.models.unet import ResidualUNet
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


def toy_feature_spec(scale: int = 8) -> FeatureSpec:
    """The toy campaign's features (tas, pr; orography, lsm) with round-number statistics."""
    stats: dict[str, Any] = {
        "tas": {"transform": "identity", "offset": 1.0, "mean": 285.0, "std": 5.0},
        "pr": {"transform": "log1p", "offset": 1.0, "mean": 0.2, "std": 0.4},
        "static": {"lsm": {"mean": 0.5, "std": 0.5}, "orography": {"mean": 800.0, "std": 600.0}},
    }
    return FeatureSpec(
        variables=["tas", "pr"], statics=["lsm", "orography"], scale=scale, stats=stats
    )


def trained_like_unet(
    spec: FeatureSpec, channels: list[int] | None = None, seed: int = 0
) -> ResidualUNet:
    """A residual U-Net with seeded random weights everywhere, the head included (an untrained
    one returns its base exactly, which would hide any tiling error)."""
    torch.manual_seed(seed)
    model = ResidualUNet(spec.in_channels, spec.out_channels, channels or [16, 32, 64])
    torch.nn.init.normal_(model.head.weight, std=0.3)
    torch.nn.init.normal_(model.head.bias, std=0.1)
    return model.eval()


class NoisyUNet(ResidualUNet):
    """A tiny stochastic model: the U-Net's correction plus noise from a seeded generator.

    ``sample(x, base, members)`` → ``(N, members, V, h, w)``; the same seed gives the same members.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: list[int], seed: int = 0):
        super().__init__(in_channels, out_channels, channels)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, x: torch.Tensor, base: torch.Tensor, members: int) -> torch.Tensor:
        mean = self(x, base)
        noise = torch.randn(
            (x.shape[0], members, *mean.shape[1:]), generator=self.generator, dtype=mean.dtype
        )
        return mean[:, None] + 0.5 * noise


def model_card_for(spec: FeatureSpec, channels: list[int], dx: float = 500.0) -> dict[str, Any]:
    """A model card like the train stage's (toy CRS, ``dx`` m HR spacing)."""
    from climai.synthetic import TOY_CRS

    return {
        "method": "unet",
        "architecture": {"name": "ResidualUNet", "norm": "channel", "channels": channels},
        "features": spec.as_dict(),
        "config": {
            "variables": [
                {"name": "tas", "units": "K", "kind": "temperature"},
                {"name": "pr", "units": "mm h-1", "kind": "precipitation"},
            ]
        },
        "config_sha256": "0" * 64,
        "grid": {"hr_dx": dx, "hr_dy": dx, "crs_wkt": TOY_CRS.to_wkt()},
        "units": {"tas": "K", "pr": "mm h-1"},
    }


def lr_inputs(
    ny: int, nx: int, steps: int, scale: int = 8, seed: int = 0, dx: float = 500.0
) -> tuple[xr.Dataset, xr.Dataset]:
    """``(lr, static)``: LR ``tas``/``pr`` of a toy world of ``ny × nx`` HR cells (block means)
    with CF units and CRS, as ``climai downscale`` reads them, and its HR static fields."""
    from climai.preprocess.coarsen import coarsen_block_mean

    target, static = toy_world(seed=seed, nx=nx, ny=ny, dx=dx, steps=steps)
    lr = xr.Dataset({v: coarsen_block_mean(target[v], scale) for v in ("tas", "pr")})
    lr["crs"] = target["crs"]
    for axis in ("x", "y"):
        lr[axis].attrs = dict(target[axis].attrs)
    return lr, static
