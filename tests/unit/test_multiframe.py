"""benchmarks/multiframe.py (issue 19): motion from cross-correlation and multi-frame
back-projection, on seeded toy rain advected by a known displacement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from climai.models.constraints import block_mean, conserve
from climai.models.interpolate import upsample
from climai.testing import random_field
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def mf():
    return load_benchmark("multiframe")


def _rain(n: int, seed: int, length: float = 3.0) -> torch.Tensor:
    """``(1, 1, n, n)`` smooth log-normal toy rain (Gaussian spectrum of ``length`` cells)."""
    k = np.fft.fftfreq(n)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    z = np.fft.ifft2(
        np.fft.fft2(random_field((n, n), seed=seed)) * np.exp(-k2 * (np.pi * length) ** 2)
    ).real
    z = (z - z.mean()) / z.std()
    return torch.from_numpy(np.exp(z - 1.0).astype(np.float32))[None, None]


def _shifted(f: torch.Tensor, d: tuple[float, float], mf) -> torch.Tensor:
    return mf.warp(f, torch.tensor(d, dtype=torch.float32)[:, None, None].expand(2, *f.shape[-2:]))


def test_displacement_recovers_a_known_sub_cell_shift(mf):
    f = _rain(128, 0, length=6.0)
    for d in [(2.4, -5.6), (-7.3, 0.5)]:
        g = _shifted(f, d, mf)
        got = mf.displacement(np.log1p(f[0, 0].numpy()), np.log1p(g[0, 0].numpy()))
        np.testing.assert_allclose(got, d, atol=0.3)


def test_displacement_of_a_window_outside_the_radar_is_no_motion(mf):
    f = np.log1p(_rain(64, 2)[0, 0].numpy())
    missing = np.full_like(f, np.nan)
    assert mf.displacement(missing, f) == (0.0, 0.0)
    assert mf.displacement(f, missing) == (0.0, 0.0)
    part = f.copy()
    part[:, :32] = np.nan  # half the window outside the radar: still a finite estimate
    assert np.isfinite(mf.displacement(part, f)).all()


def test_flow_is_the_uniform_motion_at_every_cell(mf):
    f = _rain(192, 1, length=6.0)
    g = _shifted(f, (3.2, 6.7), mf)
    d = mf.flow(np.log1p(f[0, 0].numpy()), np.log1p(g[0, 0].numpy()), win=96)
    assert d.shape == (2, 192, 192)
    np.testing.assert_allclose(d[0].mean(), 3.2, atol=0.3)
    np.testing.assert_allclose(d[1].mean(), 6.7, atol=0.3)
    assert float(d.std(dim=(1, 2)).max()) < 0.3  # windows agree: nearly constant


def test_back_projection_recovers_sub_block_structure_of_advected_rain(mf):
    scale, d = 8, (2.5, 5.0)  # neither a whole block nor zero along either axis
    f0 = _rain(128, 2)
    frames = {k: _shifted(f0, (k * d[0], k * d[1]), mf) for k in (-1, 0, 1)}
    lr = {k: block_mean(v, scale) for k, v in frames.items()}
    flow = {
        k: torch.tensor((k * d[0], k * d[1]))[:, None, None].expand(2, 128, 128) for k in (-1, 1)
    }
    out = mf.back_project(lr[0], [(lr[k], flow[k]) for k in (-1, 1)], scale, iters=40)
    wrong = mf.back_project(lr[0], [(lr[k], -flow[k]) for k in (-1, 1)], scale, iters=40)
    base = conserve(upsample(lr[0], scale, "bicubic").clamp(min=0), lr[0], scale, [True])
    inner = (..., slice(16, -16), slice(16, -16))  # away from the replicated edges
    err = float(((out - f0)[inner] ** 2).mean().sqrt())
    err_base = float(((base - f0)[inner] ** 2).mean().sqrt())
    assert err < 0.8 * err_base  # 0.74 measured
    # the information is in the alignment: the opposite motion makes it worse than none
    assert float(((wrong - f0)[inner] ** 2).mean().sqrt()) > err_base
    torch.testing.assert_close(block_mean(out, scale), lr[0], rtol=1e-5, atol=1e-6)
    # without neighbours it is the conserved bicubic field
    torch.testing.assert_close(mf.back_project(lr[0], [], scale), base)


def test_back_projection_is_finite_and_conserving_around_a_missing_block(mf):
    f0 = _rain(64, 3)
    lr = block_mean(f0, 8)
    lr[..., 0, 0] = float("nan")
    out = mf.back_project(lr, [(block_mean(f0, 8), torch.zeros(2, 64, 64))], 8)
    assert torch.isfinite(out[..., 8:, 8:]).all()
    torch.testing.assert_close(
        block_mean(out, 8)[..., 1:, 1:], lr[..., 1:, 1:], rtol=1e-5, atol=1e-6
    )
