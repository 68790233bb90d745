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


def prepare_campaign(workdir: str | Path, **overrides: Any) -> Path:
    """Write a tiny config in ``workdir`` and run ingest and preprocess there; return the config.

    Outputs go under ``workdir/results`` whatever the current folder (the config's ``results``
    is made absolute), so subprocesses can train on it.
    """
    from climai.config import config_sha256, load_config, stage_slice
    from climai.ingest import run_ingest
    from climai.preprocess.stage import run_preprocess
    from climai.stage import StageContext

    workdir = Path(workdir)
    path = write_config(workdir / "tiny.yaml", results=str(workdir / "results"), **overrides)
    cfg = load_config(path)
    for stage, run in (("ingest", run_ingest), ("preprocess", run_preprocess)):
        run(StageContext(cfg, config_sha256(stage_slice(cfg, stage)), stage, 1))
    return path


def tiny_sources(steps: int = 40, seed: int = 0, nan_box: bool = False, size: int = 32):
    """``(spec, train, val, hr)``: a FeatureSpec and in-memory train/val patch sources of a tiny
    toy world (``size`` × ``size`` HR cells, scale 8; 80 % of the steps train, the rest val);
    ``nan_box`` blanks the target's top-left quarter."""
    import pandas as pd

    from climai.data.dataset import MemorySource
    from climai.data.features import FeatureSpec
    from climai.preprocess import coarsen_block_mean

    target, static = create_test_data(nx=size, ny=size, steps=steps, seed=seed)
    variables = ["tas", "pr"]
    hr = np.stack([target[v].values for v in variables], axis=1).astype(np.float32)
    lr = np.stack([coarsen_block_mean(target[v], 8).values for v in variables], axis=1)
    if nan_box:
        hr[:, :, : size // 2, : size // 2] = np.nan
    st = np.stack([static[s].values for s in ("lsm", "orography")]).astype(np.float32)
    stats: dict[str, Any] = {
        "tas": {
            "transform": "identity",
            "offset": 1.0,
            "mean": float(np.nanmean(hr[:, 0])),
            "std": float(np.nanstd(hr[:, 0])),
        },
        "pr": {
            "transform": "log1p",
            "offset": 1.0,
            "mean": float(np.nanmean(np.log1p(hr[:, 1]))),
            "std": float(np.nanstd(np.log1p(hr[:, 1]))),
        },
        "static": {
            s: {"mean": float(v.mean()), "std": float(v.std()) or 1.0}
            for s, v in zip(("lsm", "orography"), st, strict=True)
        },
    }
    spec = FeatureSpec(variables, ["lsm", "orography"], 8, stats, ["temperature", "precipitation"])
    times = pd.DatetimeIndex(target["time"].values)
    n = int(steps * 0.8)
    train = MemorySource(lr[:n].astype(np.float32), hr[:n], st, times[:n])
    val = MemorySource(lr[n:].astype(np.float32), hr[n:], st, times[n:])
    return spec, train, val, hr
