"""The stochastic U-Net, the conservation constraint, ensemble metrics and ensemble outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from climai.config import ConfigError, validate_config
from climai.data.dataset import Batch
from climai.evaluation.metrics import block_mean_error, crps_ensemble, crps_fair, spread_skill
from climai.models.constraints import MAX_GAIN, block_mean, conserve
from climai.models.unet import ResidualUNet
from climai.preprocess.coarsen import block_mean_numpy
from climai.testing import create_masked_test_data, random_field, toy_feature_spec
from climai.training.loop import Objective
from tests.conftest import REPO


def test_unet_crps_is_configured_by_its_registry_name():
    cfg = validate_config({"methods": {"unet-crps": {"members": 8, "constraint": "conserve"}}})
    assert cfg.methods.enabled() == ["bicubic", "nearest", "quantile-mapping", "unet", "unet-crps"]
    assert cfg.methods.get("unet-crps").members == 8
    with pytest.raises(ConfigError, match="train_members"):
        validate_config({"methods": {"unet-crps": {"train_members": 1}}})
    with pytest.raises(ConfigError, match="constraint"):
        validate_config({"methods": {"unet": {"constraint": "exact"}}})


def test_noise_makes_draws_differ_and_is_seeded():
    net = ResidualUNet(6, 2, [8, 16], noise_channels=3)
    torch.nn.init.normal_(net.head.weight, std=0.1)
    x, base = torch.randn(2, 6, 16, 16), torch.zeros(2, 2, 16, 16)
    torch.manual_seed(0)
    a, b = net(x, base), net(x, base)
    torch.manual_seed(0)
    assert not torch.allclose(a, b) and torch.equal(a, net(x, base))
    assert len(net.noise_down) == 2 and len(net.noise_up) == 1  # every scale gets noise


@pytest.mark.parametrize("non_negative", [False, True])
def test_conserve_matches_the_lr_block_means_exactly(non_negative):
    y = torch.from_numpy(np.abs(random_field((3, 1, 16, 16), seed=1)))
    lr = torch.from_numpy(np.abs(random_field((3, 1, 2, 2), seed=2)))
    y[0, 0, :8, :8] = 0.0  # an all-zero block: multiplicative correction cannot scale it
    lr[1, 0, 0, 0] = float("nan")  # a missing LR block is left as predicted
    out = conserve(y, lr, 8, [non_negative])
    bm = block_mean(out.double(), 8)
    ok = torch.isfinite(lr)
    rel = ((bm - lr.double()).abs()[ok] / lr.double()[ok].abs()).max()
    assert rel < 1e-6
    assert torch.equal(out[1, 0, :8, :8], y[1, 0, :8, :8])
    if non_negative:
        assert (out >= 0).all()
        # multiplicative: the pattern inside a block keeps its shape
        ratio = out[2, 0, 8:, 8:] / y[2, 0, 8:, 8:]
        torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio))


def test_conserve_keeps_precipitation_non_negative_where_additive_would_not():
    y = torch.tensor([[[[0.0, 4.0], [0.0, 0.0]]]])
    lr = torch.tensor([[[[0.5]]]])
    assert conserve(y, lr, 2, [True]).min() >= 0
    assert conserve(y, lr, 2, [False]).min() < 0


def _radar_pr(scale: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR, LR) toy precipitation ``(4, 1, 64, 64)``/``(4, 1, 8, 8)`` in mm h-1: NaN outside a
    radar's range (whole LR blocks missing), fully dry blocks, LR = the NaN-aware block mean."""
    target, _ = create_masked_test_data(nx=64, ny=64, steps=4, seed=0)
    hr = target["pr"].values[:, None].astype(np.float32)
    hr[0, :, :16, 32:] = 0.0  # a dry corner inside the radar's range: LR blocks exactly 0
    lr = block_mean_numpy(hr, scale)
    assert np.isnan(lr).all(axis=(-2, -1)).sum() == 0 and np.isnan(lr).any()
    assert (lr == 0).any() and (lr > 0).any()
    return torch.from_numpy(hr), torch.from_numpy(lr)


def _members(kind: str, hr: torch.Tensor) -> torch.Tensor:
    wet = hr.nan_to_num(0.0) + torch.from_numpy(np.abs(random_field(hr.shape, seed=5)))
    if kind == "all-zero":
        return torch.zeros_like(hr)
    if kind == "one-zero-member":  # one member dry everywhere, the others wet
        return torch.cat([torch.zeros_like(hr[:1]), wet[1:]])
    if kind == "near-zero-mean":  # float32 subnormal rain: lr / mean overflows float32
        return wet * 1e-40
    return wet  # rain predicted where the LR is missing or dry


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
@pytest.mark.parametrize("kind", ["wet-over-missing-and-dry", "all-zero", "one-zero-member",
                                  "near-zero-mean"])  # fmt: skip
def test_conserve_output_and_gradient_are_finite_on_radar_like_precipitation(kind):
    """Issue 19: unet-crps trained to NaN on real radar. The constrained members and their
    gradient are finite for missing, dry and all-zero blocks; every block still conserves."""
    hr, lr = _radar_pr()
    y = _members(kind, hr).requires_grad_()
    weight = torch.from_numpy(random_field(hr.shape, seed=6))
    with torch.autograd.detect_anomaly():
        out = conserve(y, lr, 8, [True])
        (out.log1p() * weight).sum().backward()
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert torch.isfinite(y.grad).all()
    assert y.grad.abs().max() <= 2 * MAX_GAIN * weight.abs().max()
    ok = torch.isfinite(lr)
    bm = block_mean(out.double(), 8)
    torch.testing.assert_close(bm[ok], lr.double()[ok], rtol=1e-6, atol=1e-12)
    assert (bm[lr == 0] == 0).all()  # a dry LR block stays exactly dry
    hole = (~ok).repeat_interleave(8, -2).repeat_interleave(8, -1)
    assert torch.equal(out[hole], y.detach()[hole])  # a missing LR block: as predicted


def test_conserve_is_the_plain_ratio_below_the_gain_cap_and_keeps_nan_predictions():
    y = torch.tensor([[[[1.0, 3.0], [0.0, 0.0]]]])
    assert torch.equal(conserve(y, torch.tensor([[[[4.0]]]]), 2, [True]), y * 4.0)
    y[0, 0, 0, 0] = float("nan")  # a diverged network is not hidden behind the LR value
    assert torch.isnan(conserve(y, torch.tensor([[[[4.0]]]]), 2, [True])).all()


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
def test_crps_objective_with_conservation_has_finite_gradients_on_missing_lr_blocks():
    """The fair CRPS of 2 conserved members from a stochastic U-Net, on a batch whose LR has
    missing and dry blocks (the failing batch of issue 19, on the toy grid): anomaly-free."""
    hr, lr = _radar_pr()
    spec = toy_feature_spec(8).subset(["pr"])
    torch.manual_seed(0)
    net = ResidualUNet(spec.in_channels, 1, [8, 16], noise_channels=2)
    torch.nn.init.normal_(net.head.weight, std=0.3)
    torch.nn.init.normal_(net.head.bias, mean=0.5, std=0.1)  # rain predicted everywhere
    up = lr.repeat_interleave(8, -2).repeat_interleave(8, -1)
    x = torch.from_numpy(random_field((4, spec.in_channels, 64, 64), seed=7))
    batch = Batch(x, spec.normalise("pr", up), spec.normalise("pr", hr), lr)
    with torch.autograd.detect_anomaly():
        total, count = Objective(spec, members=2, constraint="conserve").sums(net, batch)
        (total / count).backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_ensemble_crps_and_spread_skill_match_their_definitions():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(4, 6))
    members = truth + rng.normal(size=(8, 4, 6))  # calibrated: truth is one more draw around it
    mean = members.mean(0)
    members = members - mean + truth + rng.normal(size=(4, 6))  # centred on a noisy mean
    x = members.reshape(8, -1)
    y = truth.ravel()
    brute = np.mean(np.abs(x - y).mean(0) - np.abs(x[:, None] - x[None]).sum((0, 1)) / (2 * 64))
    assert crps_ensemble(members, truth) == pytest.approx(brute)
    fair = np.mean(np.abs(x - y).mean(0) - np.abs(x[:, None] - x[None]).sum((0, 1)) / (2 * 56))
    assert crps_fair(members, truth) == pytest.approx(fair)
    big = rng.normal(size=(20000,))
    draws = rng.normal(size=(16, 20000))  # members and truth from the same distribution
    assert spread_skill(draws, big)["ratio"] == pytest.approx(1.0, abs=0.05)
    assert spread_skill(0.3 * draws, big)["ratio"] < 0.5


def test_block_mean_error_is_zero_for_a_conservative_field():
    lr = np.abs(random_field((2, 4, 4), seed=3)) + 1.0
    hr = np.kron(lr, np.ones((8, 8)))
    assert block_mean_error(hr, lr, 8) < 1e-12
    assert block_mean_error(hr * 1.1, lr, 8) == pytest.approx(
        0.1 * np.abs(lr).max() / np.abs(lr).mean()
    )


@pytest.mark.slow
def test_gpu_benchmark_runs_small_on_cpu():
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = __import__("json").loads(run.stdout[run.stdout.index("{") :])
    assert report["samples_per_s"] > 0 and report["gflop_per_sample"] > 0
    assert 0 < report["fraction_of_measured_conv_peak"] < 1
