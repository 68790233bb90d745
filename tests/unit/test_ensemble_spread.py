"""benchmarks/ensemble_spread.py (issue 19): the pieces its comparison of ways to spread an
ensemble rests on, on seeded toy fields."""

from __future__ import annotations

import numpy as np
import pytest

from climai.evaluation.metrics import block_mean, conservation_error, spread_skill
from climai.testing import random_field
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def spread():
    return load_benchmark("ensemble_spread")


def _rain(shape, seed):
    return np.exp(random_field(shape, seed=seed).astype(np.float64))


def test_conserved_sets_every_members_block_means_to_the_lr(spread):
    fields = _rain((3, 2, 16, 16), 1)
    lr = block_mean(_rain((1, 2, 16, 16), 0)[0], 8)
    out = spread.conserved(fields, lr, 8)
    assert conservation_error(out, lr, 8) < 1e-12
    assert not np.allclose(out, fields)
    # the pattern inside each block is the field's: a multiplicative correction
    ratio = out / fields
    np.testing.assert_allclose(ratio[..., :8, :8], ratio[..., :1, :1].repeat(8, -2).repeat(8, -1))


def test_oracle_factor_makes_spread_skill_one(spread):
    truth = _rain((2, 16, 16), 2)
    members = truth[None] + 0.1 * random_field((6, 2, 16, 16), seed=3)  # far too little spread
    members[:, :, :4] = truth[None, :, :4]  # and none at all in a band of rows
    mean = members.mean(0, keepdims=True)
    noisy = truth + random_field(truth.shape, seed=4)

    def make(f):
        return mean + f * (members - mean)

    f = spread.oracle_factor(make, noisy)
    assert f > 1
    assert spread_skill(make(f), noisy)["ratio"] == pytest.approx(1.0, abs=1e-6)


def test_every_way_keeps_rain_non_negative_and_conserves_the_lr(spread):
    ens = _rain((4, 2, 16, 16), 6)
    lr = block_mean(_rain((1, 2, 16, 16), 7)[0], 8)
    unet = ens.mean(0) * 1.1
    ways = spread.ways(ens, lr, unet, 8, seed=0)
    assert len(ways) == 13 and "recentred on the deterministic U-Net" in ways
    for name, make in ways.items():
        out = make(2.0)
        assert out.shape == ens.shape and (out >= 0).all(), name
        assert conservation_error(out, lr, 8) < 1e-12, name


def test_standardised_patterns_have_unit_spread_over_the_members(spread):
    dep = random_field((5, 2, 16, 16), seed=8).astype(np.float64) * 3.0 + 1.0
    dep[:, :, :2] = 0.5  # members that agree: no pattern there
    z = spread.standardised(dep)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(0)[:, 2:], 1.0, rtol=1e-12)
    assert (z[:, :, :2] == 0).all()


def test_as_calibrated_scales_the_departures_and_recentres_on_the_unet(spread):
    lr = block_mean(_rain((1, 2, 16, 16), 10)[0], 8)
    ens = spread.conserved(_rain((4, 2, 16, 16), 9), lr, 8)  # stored members conserve, as here
    checker = np.indices((16, 16)).sum(0) % 2 * 2.0 - 1.0  # ±1, mean 0 in every 8×8 block
    unet = ens.mean(0) + 0.1 * ens.min() * checker  # another field with the same block means
    out = spread.as_calibrated(ens, lr, unet, 8)
    assert out["as calibrated"] is ens
    mean = ens.mean(0)
    spread_of = {k: np.sqrt(v.var(0).mean()) for k, v in out.items()}
    assert spread_of["departures ×0.7"] < spread_of["departures ×0.85"] < spread_of["as calibrated"]
    assert spread_of["as calibrated"] < spread_of["departures ×1.2"] < spread_of["departures ×1.5"]
    for name, e in out.items():
        assert (e >= 0).all() and conservation_error(e, lr, 8) < 1e-12, name
    # recentred: members nearer the U-Net's field than the members' mean inside every block
    rec = out["recentred on the deterministic U-Net"].mean(0)
    assert np.abs(rec - unet).mean() < 0.1 * np.abs(mean - unet).mean()
