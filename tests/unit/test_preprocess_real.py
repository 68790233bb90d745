"""Preprocess of the shared real radar campaigns (KNMI 1 km, FMI 250 m): masks stay intact.

The HR fields of ``prep/dataset.zarr`` must equal the ingested target cell for cell (NaN where the
radar saw nothing), an LR cell must be NaN exactly where fewer than ``min_valid_fraction`` of its
HR cells are valid and equal their NaN-aware mean elsewhere, and the statistics must count the
valid train cells only.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from climai.config import config_sha256, stage_slice, validate_config
from climai.io import open_store
from climai.stages import StageContext
from climai.stages.ingest import run as run_ingest
from climai.stages.preprocess import run as run_preprocess
from tests.unit.test_ingest_real import campaign_config

pytestmark = pytest.mark.slow


def _prepare(raw: dict[str, Any]) -> StageContext:
    cfg = validate_config(raw)
    run_ingest(StageContext(cfg, config_sha256(stage_slice(cfg, "ingest")), "ingest", 2))
    ctx = StageContext(cfg, config_sha256(stage_slice(cfg, "preprocess")), "preprocess", 2)
    run_preprocess(ctx)
    return ctx


def _check_masks(ctx: StageContext, min_valid: float) -> tuple[int, int]:
    scale = ctx.cfg.scale
    target = open_store(ctx.paths.target)["pr"].values
    ds = open_store(ctx.paths.dataset)
    hr = ds["hr_pr"].values
    np.testing.assert_array_equal(hr, target)  # bitwise, NaN where the target has NaN
    nt, ny, nx = hr.shape
    blocks = hr.reshape(nt, ny // scale, scale, nx // scale, scale)
    valid = np.isfinite(blocks).sum(axis=(2, 4))
    frac = valid / scale**2
    lr = ds["lr_pr"].values
    np.testing.assert_array_equal(np.isnan(lr), frac < min_valid)
    ok = frac >= min_valid
    mean = np.where(np.isfinite(blocks), blocks, 0).astype(np.float64).sum(axis=(2, 4))
    np.testing.assert_allclose(lr[ok], (mean / np.maximum(valid, 1))[ok], rtol=2e-5, atol=1e-6)
    train = ds["split"].values == 0
    stats = json.loads(ctx.paths.stats.read_text())
    assert stats["pr"]["count"] == int(np.isfinite(hr[train]).sum())
    return int(np.isnan(hr).sum()), int(np.isnan(lr).sum())


def test_knmi_preprocess_keeps_the_radar_mask(in_tmp):
    # the whole radar grid (no domain subset): cells beyond the radars' range are NaN
    raw = campaign_config("knmi", domain=None)
    ctx = _prepare(raw)
    hr_nan, lr_nan = _check_masks(ctx, ctx.cfg.preprocess.min_valid_fraction)
    assert hr_nan > 0 and lr_nan > 0  # the mask is there, and it reached the LR grid


def test_fmi_preprocess_keeps_the_radar_mask(in_tmp):
    ctx = _prepare(campaign_config("fmi"))
    _check_masks(ctx, ctx.cfg.preprocess.min_valid_fraction)
    ds = open_store(ctx.paths.dataset)
    assert ds["hr_pr"].shape[1:] == (1024, 1024) and ds["lr_pr"].shape[1:] == (128, 128)
    assert float(np.nanmin(ds["hr_pr"].values)) >= 0.0  # rain rate from dBZ, never negative
