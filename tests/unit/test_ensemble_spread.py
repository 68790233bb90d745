"""benchmarks/ensemble_spread.py (issue 19): the pieces its comparison of ways to spread an
ensemble rests on, on seeded toy fields."""

from __future__ import annotations

import numpy as np
import pytest

from climai.evaluation.metrics import spread_skill
from climai.testing import random_field
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def spread():
    return load_benchmark("ensemble_spread")


def _rain(shape, seed):
    return np.exp(random_field(shape, seed=seed).astype(np.float64))


def test_restore_blocks_gives_each_member_the_reference_block_means(spread):
    ref, fields = _rain((3, 2, 16, 16), 0), _rain((3, 2, 16, 16), 1)
    out = spread.restore_blocks(fields, ref, 8)
    np.testing.assert_allclose(spread.block_means(out, 8), spread.block_means(ref, 8), rtol=1e-12)
    assert not np.allclose(out, ref)  # the pattern inside each block stays the field's


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


def test_band_ratios_are_one_for_the_truth_and_follow_a_smoothed_copy(spread):
    truth = random_field((2, 64, 64), seed=5).astype(np.float64)
    np.testing.assert_allclose(spread.band_ratios(truth[None], truth), 1.0)
    smooth = (
        truth + np.roll(truth, 1, -1) + np.roll(truth, 1, -2) + np.roll(truth, (1, 1), (-2, -1))
    ) / 4
    r = spread.band_ratios(smooth[None], truth)
    assert r[0] < 0.5 < r[-1] <= 1.0  # the 2-4 cell band loses most, 16-32 cells little


def test_every_way_keeps_rain_non_negative_and_block_means(spread):
    ens = _rain((4, 2, 16, 16), 6)
    lr = spread.block_means(ens.mean(0, keepdims=True), 8)[0]
    unet = ens.mean(0) * 1.1
    ways = spread.ways(ens, lr, unet, 8, seed=0)
    assert len(ways) == 9 and "recentred on the deterministic U-Net" in ways
    for name, make in ways.items():
        out = make(2.0)
        assert out.shape == ens.shape and (out >= 0).all(), name
        np.testing.assert_allclose(
            spread.block_means(out, 8), spread.block_means(ens, 8), rtol=1e-9, err_msg=name
        )
