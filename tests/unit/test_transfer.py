"""Training on several campaigns (issue 19): patch shares, the physical transform, augmentation
equivariance, the grid channel, the baseline flag and fallback, and the spread calibration."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from climai.config.methods import UNetConfig, UNetCRPSConfig
from climai.data.dataset import Collate, MemorySource, PatchDataset
from climai.data.features import FeatureSpec
from climai.data.pooled import Member, PooledPatches, augment, physical_stats, shares
from climai.data.prepared import GRID_STATIC, PreparedDataset, grid_spacing_km
from climai.io import open_store, write_store
from climai.models.constraints import (
    INTENSITY_POWER,
    blur_departures,
    conserve,
    inflate,
    lr_roughness,
    spread_by_intensity,
    spread_by_roughness,
    spread_members,
)
from climai.models.unet import ResidualUNet
from climai.testing import create_prepared_test_data, reference_roughness, tiny_sources
from climai.training.distributed import DistContext
from climai.training.guard import (
    MIN_CALIBRATION_PATCHES,
    calibrate_noise,
    calibration_patches,
    ensemble_ratio,
    guard,
    head_fallback,
    noise_weights,
    val_members,
    worse_than_bicubic,
)
from climai.training.loop import Loaders, Objective
from climai.training.pooled import (
    Source,
    coarsened_source,
    pooled_loaders,
    pooled_spec,
)
from climai.training.resident import resident_bytes

CPU = DistContext()


def two_members(length: int = 40) -> tuple[FeatureSpec, list[Member]]:
    spec, train, val, _ = tiny_sources(steps=20)
    members = [
        Member("a", PatchDataset(train, 16, 8, length, seed=1), 0.0),
        Member("b", PatchDataset(val, 16, 8, length, seed=2), -2.0),
    ]
    return spec, members


@pytest.mark.parametrize(
    ("weights", "expected"),
    [(None, [0.5, 0.5]), ({"a": 3.0, "b": 1.0}, [0.75, 0.25]), ({"a": 1, "b": 4}, [0.2, 0.8])],
)
def test_patches_are_drawn_in_the_stated_shares(weights, expected):
    _, members = two_members()
    pooled = PooledPatches(members, 4000, seed=0, weights=shares(["a", "b"], weights))
    counts = pooled.counts()
    got = np.array([counts["a"], counts["b"]]) / 4000
    np.testing.assert_allclose(got, expected, atol=0.03)
    assert pooled.counts() == counts  # seeded: the same draws every time
    pooled.set_epoch(1)
    assert pooled.counts() != counts  # another epoch, other draws


def test_every_drawn_patch_is_a_window_of_its_own():
    """pooled_patches above the members' own lengths (4000 draws from members of 40): each
    sample is its member's window of that index, not one of 40 windows repeated ~50 times."""
    _, members = two_members()
    pooled = PooledPatches(members, 4000, seed=0, weights=shares(["a", "b"], None))
    picks = [pooled.pick(i)[:2] for i in range(4000)]
    assert len(set(picks)) == 4000
    k, i = picks[3000]
    assert i == 3000 and np.array_equal(pooled[3000].hr, members[k].patches[3000].hr)


def test_shares_need_every_campaign():
    with pytest.raises(ValueError, match="needs a share"):
        shares(["a", "b"], {"a": 1.0})


def test_validation_patches_are_every_members_patches_in_order():
    _, members = two_members(length=5)
    pooled = PooledPatches(members, 10, seed=0, weights=None, grid=True)
    assert [pooled.pick(i)[:2] for i in (0, 4, 5, 9)] == [(0, 0), (0, 4), (1, 0), (1, 4)]
    assert pooled[7].static[-1, 0, 0] == -2.0  # the member's grid channel is appended
    assert np.array_equal(pooled[7].hr, members[1].patches[2].hr)


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0, 12.0, 150.0])
def test_the_physical_transform_is_the_same_on_every_radar(rate):
    stats = physical_stats(["pr"], ["precipitation"], grid=True)
    spec = FeatureSpec(["pr"], [GRID_STATIC], 8, stats, ["precipitation"])
    z = spec.normalise("pr", torch.tensor([rate]))
    assert float(z) == pytest.approx(math.log1p(rate))  # log1p of mm h-1, mean 0, std 1
    assert float(spec.denormalise("pr", z)) == pytest.approx(rate, rel=1e-5)
    assert stats["static"] == {GRID_STATIC: {"mean": 0.0, "std": 1.0}}


def test_the_physical_transform_is_for_precipitation_only():
    with pytest.raises(ValueError, match=r"\['tas'\] are of other kinds"):
        physical_stats(["tas", "pr"], ["temperature", "precipitation"], grid=False)


@pytest.mark.parametrize("rotations", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_is_equivariant(rotations, flip):
    """Augmenting the raw patch (LR with its halo, HR, static) then building the model inputs
    equals building them and then augmenting: the bicubic base and the target rotate together."""
    spec, train, _, _ = tiny_sources(steps=10)
    window = PatchDataset(train, 16, 8, 4, seed=5)[1]
    collate = Collate(spec)
    plain, turned = collate([window]), collate([augment(window, rotations, flip)])

    def op(t: torch.Tensor) -> torch.Tensor:
        t = torch.rot90(t, rotations, dims=(-2, -1))
        return t.flip(-1) if flip else t

    torch.testing.assert_close(
        turned.base, op(plain.base), atol=1e-4, rtol=1e-4
    )  # float32 rounding of the interpolation
    torch.testing.assert_close(turned.target, op(plain.target), equal_nan=True)
    torch.testing.assert_close(
        turned.x, op(plain.x), atol=1e-4, rtol=1e-4
    )  # float32 rounding of the interpolation


def test_gain_augmentation_scales_a_patchs_rain_log_uniformly_and_nothing_else():
    """augment_gain g: each patch's LR (with halo) and HR are the unaugmented patch's times one
    factor in [1/g, g], log-uniform (as often halved as doubled); the grid channel and the
    static fields are not scaled; without it, a flipped patch is not scaled."""
    _, members = two_members()
    plain = PooledPatches(members, 400, seed=3, weights=shares(["a", "b"], None))
    gained = PooledPatches(members, 400, seed=3, weights=shares(["a", "b"], None), gain=2.0)
    factors = []
    for i in range(400):
        p, g = plain[i], gained[i]
        wet = np.isfinite(p.hr) & (p.hr > 0.01)
        f = g.hr[wet] / p.hr[wet]
        np.testing.assert_allclose(f, f[0], rtol=1e-6)
        np.testing.assert_allclose(
            g.lr[np.isfinite(p.lr)], f[0] * p.lr[np.isfinite(p.lr)], rtol=1e-6
        )
        np.testing.assert_array_equal(g.static, p.static)
        factors.append(f[0])
    logs = np.log2(factors)
    assert logs.min() >= -1 - 1e-6 and logs.max() <= 1 + 1e-6
    assert abs(logs.mean()) < 0.1 and logs.std() == pytest.approx(1 / np.sqrt(3), abs=0.06)
    turned = PooledPatches(members, 20, seed=3, weights=shares(["a", "b"], None), augment=True)
    for i in range(20):  # flips and rotations alone: one of the 8 views of the patch, unscaled
        views = [augment(plain[i], r, f).hr for r in range(4) for f in (False, True)]
        assert any(np.array_equal(turned[i].hr, v, equal_nan=True) for v in views)


def test_config_augmentation_needs_the_pooled_patches():
    from climai.config import CampaignConfig

    rain = [{"name": "pr", "units": "mm h-1", "kind": "precipitation"}]
    ok = {"unet": {"normalisation": "physical", "augment_gain": 2}}
    cfg = CampaignConfig.model_validate({"campaign": "t", "variables": rain, "methods": ok})
    assert cfg.methods.get("unet").augment_gain == 2.0
    for bad in ({"augment": True}, {"augment_gain": 2}):
        with pytest.raises(ValueError, match="augmentation needs normalisation: physical"):
            CampaignConfig.model_validate(
                {"campaign": "t", "variables": rain, "methods": {"unet": bad}}
            )
    with pytest.raises(ValueError, match="augment_gain"):
        UNetConfig(augment_gain=0.5)


def test_a_model_without_static_fields_gets_no_static_channels():
    """A pooled model without the grid channel (grid_channel: false) sees no static field at
    all: its inputs are the others, in the same order (this crashed the batch builder)."""
    from dataclasses import replace

    spec, train, _, _ = tiny_sources(steps=10)
    bare = FeatureSpec(spec.variables, [], spec.scale, {**spec.stats, "static": {}})
    window = PatchDataset(train, 16, 8, 4, seed=5)[1]
    full = Collate(spec)([window, window])
    batch = Collate(bare)([replace(window, static=window.static[:0])] * 2)
    assert (
        batch.x.shape == (2, bare.in_channels, 16, 16) and bare.in_channels == spec.in_channels - 2
    )
    torch.testing.assert_close(batch.x, torch.cat([full.x[:, :4], full.x[:, 6:]], 1))
    torch.testing.assert_close(batch.target, full.target, equal_nan=True)


def _grid(units: str, dx: float, dy: float, lat0: float = 0.0) -> xr.Dataset:
    return xr.Dataset(
        coords={
            "x": ("x", np.arange(4) * dx, {"units": units}),
            "y": ("y", lat0 + np.arange(4) * dy, {"units": units}),
        }
    )


@pytest.mark.parametrize(
    ("units", "dx", "dy", "lat0", "km"),
    [
        ("m", 1000.0, -1000.0, 0.0, 1.0),
        ("m", 250.0, -250.0, 0.0, 0.25),
        ("km", 0.5, -0.5, 0.0, 0.5),
        ("degrees_east", 0.01, 0.01, 0.0, 1.112),  # at the equator
        ("degrees_east", 0.01, -0.01, 60.0, 1.112 * math.sqrt(math.cos(math.radians(60.015)))),
    ],
)
def test_grid_spacing_in_km(units, dx, dy, lat0, km):
    assert grid_spacing_km(_grid(units, dx, dy, lat0)) == pytest.approx(km, rel=2e-3)


def test_every_prepared_dataset_has_the_grid_channel():
    prep = PreparedDataset(create_prepared_test_data())
    spacing = grid_spacing_km(prep.ds)
    field = prep.static(GRID_STATIC)
    assert field.shape == (prep.sizes["y"], prep.sizes["x"])
    assert float(field[0, 0]) == pytest.approx(math.log2(spacing))
    both = prep.statics_dataset([GRID_STATIC, prep.statics[0]])
    assert list(both.data_vars) == [GRID_STATIC, prep.statics[0]]


def test_config_train_on_needs_the_physical_normalisation():
    with pytest.raises(ValueError, match="train_on needs normalisation: physical"):
        UNetConfig(train_on=["knmi", "fmi"])
    with pytest.raises(ValueError, match="positive weights"):
        UNetConfig(train_on=["knmi"], normalisation="physical", train_weights={"fmi": 1.0})
    with pytest.raises(ValueError, match="validate_on needs train_on"):
        UNetConfig(validate_on=["knmi"])
    cfg = UNetConfig(train_on=["knmi", "fmi"], normalisation="physical", pooled_patches=64)
    assert cfg.train_on == ["knmi", "fmi"]


def test_patches_with_min_wet_hold_more_rain():
    _, train, _, _ = tiny_sources(steps=10, size=64)
    rain = MemorySource(train.lr[:, 1:], train.hr[:, 1:], train.static, train.times)

    def wet(min_wet: float) -> float:
        patches = PatchDataset(rain, 16, 8, 60, seed=2, min_wet=min_wet)
        return float(np.mean([(patches[i].hr > 0.1).mean() for i in range(60)]))

    assert wet(0.3) > wet(0.0) + 0.05


@pytest.mark.parametrize(
    ("scores", "worse"),
    [
        ({"pr": {"rmse": 1.1, "bicubic_rmse": 1.0}}, ["pr"]),
        ({"pr": {"rmse": 0.8, "bicubic_rmse": 1.0}}, []),
        (
            {"pr": {"rmse": 0.8, "bicubic_rmse": 1.0}, "tas": {"rmse": 2, "bicubic_rmse": 1}},
            ["tas"],
        ),
    ],
)
def test_worse_than_bicubic(scores, worse):
    assert worse_than_bicubic(scores) == worse


def _loaders(spec: FeatureSpec, train, val, patch: int = 16) -> Loaders:
    return Loaders(
        PatchDataset(train, patch, 8, 16, seed=0),
        PatchDataset(val, patch, 8, 16, seed=1),
        Collate(spec),
        batch=8,
        workers=0,
        seed=0,
    )


def test_a_model_worse_than_bicubic_is_flagged_and_falls_back():
    spec, train, val, _ = tiny_sources(steps=20)
    torch.manual_seed(0)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16])
    with torch.no_grad():
        model.head.bias.fill_(0.5)  # a constant offset: worse than its bicubic base
    loaders = _loaders(spec, train, val)
    objective = Objective(spec)
    logged: list[str] = []
    _, record = guard(
        model,
        loaders,
        objective,
        CPU,
        calibrate=False,
        fallback=False,
        members=1,
        seed=0,
        log=logged.append,
    )
    assert record["worse_than_bicubic"] == ["tas", "pr"] and record["fallback"] == []
    assert any("WARNING: pr" in line for line in logged)
    scores, record = guard(
        model,
        loaders,
        objective,
        CPU,
        calibrate=False,
        fallback=True,
        members=1,
        seed=0,
        log=logged.append,
    )
    assert record["fallback"] == ["tas", "pr"]
    for v in ("tas", "pr"):
        assert scores[v]["rmse"] == pytest.approx(scores[v]["bicubic_rmse"], rel=1e-4)
        assert record["trained_scores"][v]["rmse"] > scores[v]["rmse"]


def test_head_fallback_needs_a_head():
    with pytest.raises(ValueError, match="no output head"):
        head_fallback(torch.nn.Linear(2, 2), [0])


@pytest.mark.parametrize("slope", [0.05, 0.3, 1.0, 4.0])
def test_calibration_brings_spread_skill_to_one(slope):
    """The spread/skill ratio grows with the noise factor: bisection finds the factor where it
    is 1 (here ratio = slope × factor, so the factor is 1 / slope)."""
    model = ResidualUNet(3, 1, [4, 8], noise_channels=2)
    weights = {k: v.detach().clone() for k, v in model.named_parameters() if "proj.weight" in k}
    first = next(iter(weights))

    def ratio_of(m: torch.nn.Module) -> float:
        factor = float(
            dict(m.named_parameters())[first].detach().flatten()[0] / weights[first].flatten()[0]
        )
        return slope * factor

    cal = calibrate_noise(model, ratio_of)
    assert 0.8 <= cal.ratio <= 1.2
    assert cal.factor == pytest.approx(1 / slope, rel=0.2)
    assert ratio_of(model) == pytest.approx(cal.ratio)  # the model keeps the chosen factor


def test_calibration_on_a_real_ensemble():
    spec, train, val, _ = tiny_sources(steps=20)
    spec = spec.subset(["pr"])
    torch.manual_seed(0)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16], noise_channels=2)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)  # an untrained head: the noise reaches the output
    loaders = _loaders(spec, train, val)
    _, record = guard(
        model,
        loaders,
        Objective(spec),
        CPU,
        calibrate=True,
        fallback=False,
        members=4,
        seed=0,
        log=lambda _m: None,
    )
    assert 0.8 <= record["calibration"]["spread_skill_val"]["pr"] <= 1.2
    assert UNetCRPSConfig(calibrate=True).calibrate


def test_noise_calibration_of_a_joint_ensemble_balances_the_variables_ratios(monkeypatch):
    """One noise for tas and pr: calibration's ratio is the geometric mean of their own
    validation ratios, whatever their units. It was the ratio of their cells pooled in K and
    mm h-1: here 1.64 (tas 0.33, pr 1.88), and 1.88 with rain in mm day-1."""
    import climai.training.guard as g

    spec, _, _, _ = tiny_sources(steps=4)
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(64, 2, 8, 8, generator=gen, dtype=torch.float64)
    truth[:, 1] = truth[:, 1].abs()  # rain: (B, V, p, p)
    centre = truth + torch.randn(truth.shape, generator=gen, dtype=torch.float64)
    spread = torch.tensor([0.3, 3.0], dtype=torch.float64)[:, None, None]  # tas narrow, pr wide
    noise = torch.randn(64, 4, 2, 8, 8, generator=gen, dtype=torch.float64)
    members = centre[:, None] + spread * noise
    lr = torch.zeros(64, 2, 1, 1)
    objective = Objective(spec)

    def ratio(units_of_pr: float) -> tuple[float, dict[str, float]]:
        k = torch.tensor([1.0, units_of_pr], dtype=torch.float64)[:, None, None]
        drawn = [(members * k, truth * k, lr)]
        monkeypatch.setattr(g, "val_members", lambda *a, **kw: drawn)
        own = {
            v: ensemble_ratio(drawn, objective, variable=i) for i, v in enumerate(spec.variables)
        }
        return g.spread_skill(None, None, objective, CPU, 4, 8, 0), own  # type: ignore[arg-type]

    hourly, own = ratio(1.0)
    daily, own_daily = ratio(24.0)
    assert own == pytest.approx(own_daily) and own["tas"] < 0.8 < 1.2 < own["pr"]
    assert hourly == pytest.approx(math.sqrt(own["tas"] * own["pr"]))
    assert daily == pytest.approx(hourly)


def test_a_calibration_that_cannot_reach_one_is_a_warning():
    """Members that do not differ (the noise never reaches the output): no factor spreads them,
    and the log says so as a WARNING (it logged the ratio as an INFO line only)."""
    spec, train, val, _ = tiny_sources(steps=20)
    spec = spec.subset(["pr"])
    torch.manual_seed(0)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16], noise_channels=2)
    with torch.no_grad():
        for w in noise_weights(model).values():
            w.zero_()
    lines: list[str] = []
    _, record = guard(
        model, _loaders(spec, train, val), Objective(spec), CPU, calibrate=True,
        fallback=False, members=4, seed=0, calibrate_by="inflation", log=lines.append,
    )  # fmt: skip
    assert record["calibration"]["spread_skill_val"]["pr"] < 0.8
    warned = [ln for ln in lines if ln.startswith("WARNING: calibration of pr reached")]
    assert len(warned) == 1 and "under-dispersive" in warned[0], lines


@pytest.mark.parametrize("n_val, warned", [(16, True), (40, False)])
def test_calibration_records_and_logs_its_val_patches_and_warns_when_few(n_val, warned):
    """The factor is fitted on the first 8 val batches: the card says on how many patches and
    the log warns under MIN_CALIBRATION_PATCHES (6 toy patches calibrated tas to 1.00 there and
    1.29 over the whole val domain, with nothing in the log)."""
    spec, train, val, _ = tiny_sources(steps=20)
    spec = spec.subset(["pr"])
    torch.manual_seed(0)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16], noise_channels=2)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    loaders = _loaders(spec, train, val)
    loaders.val = PatchDataset(val, 16, 8, n_val, seed=1)
    for rule in ("noise", "inflation"):
        lines: list[str] = []
        _, record = guard(
            model, loaders, Objective(spec), CPU, calibrate=True, fallback=False, members=4,
            seed=0, calibrate_by=rule, log=lines.append,
        )  # fmt: skip
        assert record["calibration"]["val_patches"] == n_val == calibration_patches(loaders, 8)
        assert f"calibrating by {rule} on {n_val} of the {n_val} val patches" in lines[0]
        few = [ln for ln in lines if ln.startswith("WARNING: calibration on only")]
        assert len(few) == int(warned), lines
    assert calibration_patches(loaders, 2) == 16  # 2 batches of 8 of the 16 or 40
    assert MIN_CALIBRATION_PATCHES == 32


@pytest.mark.parametrize("constraint", ["none", "conserve"])
def test_inflation_calibration_keeps_the_noise_and_brings_spread_skill_to_one(constraint):
    """calibrate_by: inflation searches the factor on the members' departures from their mean
    (then the constraint) instead of scaling the noise: the weights stay as trained."""
    spec, train, val, _ = tiny_sources(steps=20)
    torch.manual_seed(0)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16], noise_channels=2)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)  # an untrained head: the noise reaches the output
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loaders = _loaders(spec, train, val)
    objective = Objective(spec, constraint=constraint)
    _, record = guard(
        model, loaders, objective, CPU, calibrate=True, fallback=False, members=4, seed=0,
        calibrate_by="inflation", log=lambda _m: None,
    )  # fmt: skip
    cal = record["calibration"]
    assert cal["noise_factor"] == 1.0 and set(cal["inflation"]) == {"tas", "pr"}
    drawn = val_members(model, loaders, objective, CPU, 4, 8, 0)
    for i, v in enumerate(spec.variables):  # each variable's own factor, on its own cells
        native = ensemble_ratio(drawn, objective, variable=i)
        assert 0.8 <= cal["spread_skill_val"][v] <= 1.2
        assert cal["trials"][v][0] == {"factor": 1.0, "spread_skill": pytest.approx(native)}
        again = ensemble_ratio(drawn, objective, cal["inflation"][v], variable=i)
        assert again == pytest.approx(cal["spread_skill_val"][v])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_joint_ensemble_is_calibrated_variable_by_variable():
    """One model of tas and pr: each variable's validation spread/skill (the evaluation's, on
    the members spread by the factors the card records, then conserved) is 1. The factor was
    one for the group, searched on the two variables' cells pooled in their units (K and
    mm h-1): the pooled ratio was 1, tas 1.3 and pr 0.4 on the toy world's validation."""
    from climai.evaluation.ensemble import spread_skill as evaluated

    spec, train, val, _ = tiny_sources(steps=20)
    torch.manual_seed(0)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16], noise_channels=2)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    loaders = _loaders(spec, train, val)
    objective = Objective(spec, constraint="conserve")
    _, record = guard(
        model, loaders, objective, CPU, calibrate=True, fallback=False, members=4, seed=0,
        calibrate_by="inflation", log=lambda _m: None,
    )  # fmt: skip
    cal = record["calibration"]["inflation"]
    factors = [cal[v] if isinstance(cal, dict) else cal for v in spec.variables]
    ratios = {}
    for phys, truth, lr in val_members(model, loaders, objective, CPU, 4, 8, 0):
        spread = inflate(phys, factors, spec.non_negative)
        flat = conserve(
            spread.flatten(0, 1), lr.double().repeat_interleave(4, 0), 8, spec.non_negative
        )
        spread = flat.view_as(phys)
        for i, v in enumerate(spec.variables):
            ratios.setdefault(v, []).append((spread[:, :, i], truth[:, i]))
    for v, parts in ratios.items():
        ens = torch.cat([p for p, _ in parts]).movedim(1, 0).numpy()  # (M, B, p, p)
        truth = torch.cat([t for _, t in parts]).numpy()
        assert 0.8 <= evaluated(ens, truth)["ratio"] <= 1.2, v


def test_inflation_moves_members_from_their_mean_which_stays():
    gen = torch.Generator().manual_seed(0)
    members = torch.rand(2, 5, 2, 8, 8, generator=gen, dtype=torch.float64)
    members[:, :, 0] -= 0.5  # an unbounded variable (e.g. temperature anomaly), then rain
    out = inflate(members, [3.0, 3.0], [False, True])
    mean = members.mean(1, keepdim=True)
    torch.testing.assert_close(out[:, :, 0] - mean[:, :, 0], 3 * (members - mean)[:, :, 0])
    assert (
        float(out[:, :, 1].min()) == 0.0 and float((mean + 3 * (members - mean))[:, :, 1].min()) < 0
    )
    torch.testing.assert_close(inflate(members, [1.0, 1.0], [False, True]), members)
    with pytest.raises(ValueError, match="inflate: members have 2 variables, factors 1"):
        inflate(members, [2.0], [False, True])


def test_intensity_spread_sets_every_cells_spread_from_the_members_mean():
    """calibrate_by: intensity: spread = factor × mean ** 0.75 at every cell, whatever the size of
    the network's departures; each member keeps its standardised departure; the mean stays."""
    gen = torch.Generator().manual_seed(0)
    members = 4.0 + torch.rand(2, 6, 1, 8, 8, generator=gen, dtype=torch.float64)
    members[:, :, :, :4] = 4.0 + 1e-3 * (members[:, :, :, :4] - 4.0)  # tiny departures there
    members[:, :, :, 0, 0] = 2.0  # all members agree at one cell
    out = spread_by_intensity(members, [0.3], [True])
    mean = members.mean(1, keepdim=True)
    torch.testing.assert_close(out.mean(1, keepdim=True), mean)
    expected = 0.3 * mean**INTENSITY_POWER
    spread = out.std(1, correction=0, keepdim=True)
    torch.testing.assert_close(spread[..., 1:, :], expected[..., 1:, :])  # tiny or not
    torch.testing.assert_close(out[:, :, :, 0, 0], members[:, :, :, 0, 0])  # no spread to scale
    z = (members - mean) / members.std(1, correction=0, keepdim=True)
    z_out = (out - mean) / spread
    torch.testing.assert_close(z_out[..., 1:, :], z[..., 1:, :])
    # a large factor on light rain: clipped at 0, never negative
    assert float(spread_by_intensity(members * 1e-3, [5.0], [True]).min()) == 0.0
    with pytest.raises(ValueError, match="non-negative variables .precipitation. only"):
        spread_by_intensity(members.repeat(1, 1, 2, 1, 1), [0.3, 0.3], [False, True])
    with pytest.raises(
        ValueError, match="spread_by_intensity: members have 1 variables, factors 2"
    ):
        spread_by_intensity(members, [0.3, 0.3], [True])


def test_lr_roughness_is_the_coefficient_of_variation_of_every_cells_neighbourhood():
    rng = np.random.default_rng(3)
    lr = rng.gamma(0.6, 2.0, size=(6, 7))
    lr[lr < 0.4] = 0.0  # dry cells, as radars have
    lr[2, 3] = np.nan  # a missing cell: out of its neighbours' windows
    lr[5, :3] = 0.0
    lr[4, :3] = 0.0  # a dry corner: roughness 0
    got = lr_roughness(torch.from_numpy(lr)[None, None]).numpy()[0, 0]
    np.testing.assert_allclose(got, reference_roughness(lr), rtol=1e-9, atol=1e-12)
    assert got[5, 0] == 0.0 and np.isfinite(got).all()
    one = np.zeros((3, 3))
    one[1, 1] = 5.0  # one wet cell of nine: the largest roughness a neighbourhood has
    assert float(lr_roughness(torch.from_numpy(one))[1, 1]) == pytest.approx(math.sqrt(8))
    assert float(lr_roughness(torch.full((4, 4), 2.5)).abs().max()) < 1e-6  # uniform: none
    # dimensionless: mm h-1 or m s-1 give the same roughness
    t = torch.from_numpy(lr)
    torch.testing.assert_close(lr_roughness(t / 3600), lr_roughness(t))


def test_roughness_spread_sets_every_cells_spread_from_the_mean_and_the_lr_roughness():
    """calibrate_by: roughness: spread = factor × mean × the LR roughness around the cell, each
    member keeping its standardised departure, the mean kept (until the clip at 0)."""
    gen = torch.Generator().manual_seed(1)
    lr = 1.0 + 3.0 * torch.rand(2, 1, 3, 4, generator=gen, dtype=torch.float64)
    members = 4.0 + torch.rand(2, 5, 1, 12, 16, generator=gen, dtype=torch.float64)
    out = spread_members("roughness", members, [0.5], [True], lr=lr, scale=4)
    mean = members.mean(1, keepdim=True)
    torch.testing.assert_close(out.mean(1, keepdim=True), mean)
    rough = torch.from_numpy(np.stack([reference_roughness(a[0].numpy()) for a in lr]))
    rough = rough.repeat_interleave(4, -2).repeat_interleave(4, -1)[:, None, None]
    torch.testing.assert_close(out.std(1, correction=0, keepdim=True), 0.5 * mean * rough)
    z = (members - mean) / members.std(1, correction=0, keepdim=True)
    torch.testing.assert_close((out - mean) / out.std(1, correction=0, keepdim=True), z)
    # where the LR is uniform the members collapse onto their mean: nothing to spread by
    flat = spread_members("roughness", members, [0.5], [True], lr=torch.ones(2, 1, 3, 4), scale=4)
    torch.testing.assert_close(flat, mean.expand_as(members))
    with pytest.raises(ValueError, match="roughness rule needs the members' LR input"):
        spread_members("roughness", members, [0.5], [True])
    with pytest.raises(ValueError, match="calibrate_by: roughness is defined for non-negative"):
        spread_by_roughness(members, [0.5], [False], rough)
    with pytest.raises(ValueError, match="spread rule 'wider': expected one of"):
        spread_members("wider", members, [0.5], [True])


def test_blur_departures_smooths_what_the_members_differ_by_and_keeps_their_mean():
    """departure_blur: mean + Gaussian(σ) of each member's departure from the members' mean
    (scipy's mirror edges, truncated at 3σ); the mean stays exactly, grid-scale power goes."""
    from scipy.ndimage import gaussian_filter

    g = torch.Generator().manual_seed(3)
    members = torch.randn(2, 6, 2, 24, 30, generator=g, dtype=torch.float64) + 5.0
    mean = members.mean(1, keepdim=True)
    for sigma in (0.7, 1.0, 2.0):
        out = blur_departures(members, sigma)
        want = gaussian_filter(
            (members - mean).numpy(), (0, 0, 0, sigma, sigma), mode="mirror", truncate=3.0
        )
        np.testing.assert_allclose((out - mean).numpy(), want, atol=1e-12)
        torch.testing.assert_close(out.mean(1, keepdim=True), mean, rtol=0, atol=1e-12)

    # the departures' grid-scale variability (neighbour differences) falls, by more for wider σ
    def rough(t):
        return float((t - t.mean(1, keepdim=True)).diff(dim=-1).square().mean())

    r0, r1, r2 = (
        rough(members),
        rough(blur_departures(members, 1.0)),
        rough(blur_departures(members, 2.0)),
    )
    assert r2 < r1 < 0.2 * r0
    assert torch.equal(blur_departures(members, 0.0), members)
    assert torch.equal(blur_departures(members[:, :1], 1.0), members[:, :1])  # one member
    with pytest.raises(ValueError, match=r"departure_blur=-1.0: expected a finite sigma >= 0"):
        blur_departures(members, -1.0)


def test_calibration_sees_the_departures_blurred_as_inference_blurs_them():
    """guard(blur=σ) calibrates the members val_members draws with their departures blurred:
    the factor is the one that brings those members' spread/skill to 1."""
    spec, train, val, _ = tiny_sources(steps=20, variables=("pr",))
    torch.manual_seed(0)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16], noise_channels=2)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    loaders = _loaders(spec, train, val, patch=32)
    objective = Objective(spec, constraint="conserve")
    plain = val_members(model, loaders, objective, CPU, 4, 8, 0)
    blurred = val_members(model, loaders, objective, CPU, 4, 8, 0, blur=1.5)
    for (p, t, lr), (b, t2, lr2) in zip(plain, blurred, strict=True):
        assert torch.equal(t, t2) and torch.equal(lr, lr2)
        assert not torch.allclose(p, b)
        # the members' mean moves only through the inverse transform (log1p: convex)
        assert float((b.mean(1) - p.mean(1)).abs().max()) < 0.05 * float(p.mean(1).abs().max())
        # and every blurred member is conserved again: its block means are the LR's
        blocks = torch.nn.functional.avg_pool2d(b.flatten(0, 1), spec.scale).view(
            *b.shape[:3], *lr.shape[-2:]
        )
        ok = torch.isfinite(lr)[:, None].expand_as(blocks)
        want = lr.double()[:, None].expand_as(blocks)
        torch.testing.assert_close(blocks[ok], want[ok], rtol=1e-4, atol=1e-5)
    _, record = guard(
        model, loaders, objective, CPU, calibrate=True, fallback=False, members=4, seed=0,
        calibrate_by="roughness", log=lambda _m: None, blur=1.5,
    )  # fmt: skip
    cal = record["calibration"]
    f, r = cal["inflation"]["pr"], cal["spread_skill_val"]["pr"]
    assert ensemble_ratio(blurred, objective, f, "roughness") == pytest.approx(r)
    assert ensemble_ratio(plain, objective, f, "roughness") != pytest.approx(r)


def test_config_departure_blur_is_for_ensembles():
    from climai.config import CampaignConfig

    rain = [{"name": "pr", "units": "mm h-1", "kind": "precipitation"}]
    crps = {"unet-crps": {"calibrate": True, "calibrate_by": "roughness", "departure_blur": 1}}
    cfg = CampaignConfig.model_validate({"campaign": "t", "variables": rain, "methods": crps})
    assert cfg.methods.get("unet-crps").departure_blur == 1.0
    with pytest.raises(ValueError, match=r"methods.unet.departure_blur=1.0: only an ensemble"):
        CampaignConfig.model_validate(
            {"campaign": "t", "variables": rain, "methods": {"unet": {"departure_blur": 1}}}
        )
    with pytest.raises(ValueError, match="departure_blur"):
        UNetCRPSConfig(departure_blur=-0.5)


@pytest.mark.parametrize("rule", ["intensity", "roughness"])
def test_rate_rules_calibration_brings_spread_skill_to_one_and_records_the_rule(rule):
    spec, train, val, _ = tiny_sources(steps=20, variables=("pr",))  # for rain only
    torch.manual_seed(0)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16], noise_channels=2)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    loaders = _loaders(spec, train, val, patch=32)  # roughness: 4 x 4 LR cells, 2 x 2 inside
    objective = Objective(spec, constraint="conserve")
    _, record = guard(
        model, loaders, objective, CPU, calibrate=True, fallback=False, members=4, seed=0,
        calibrate_by=rule, log=lambda _m: None,
    )  # fmt: skip
    cal = record["calibration"]
    factor, ratio = cal["inflation"]["pr"], cal["spread_skill_val"]["pr"]
    assert cal["rule"] == rule and 0.8 <= ratio <= 1.2
    # the search's result is the ratio of the members spread that way, then conserved
    drawn = val_members(model, loaders, objective, CPU, 4, 8, 0)
    again = ensemble_ratio(drawn, objective, factor, rule)
    assert again == pytest.approx(ratio)
    assert ensemble_ratio(drawn, objective, 2 * factor, rule) > again
    # roughness scores only cells with a whole LR neighbourhood in the patch: the edge ring of
    # LR blocks (8 HR cells here) does not count, under intensity it does
    edged = [(p, t.clone(), lr) for p, t, lr in drawn]
    for _, t, _ in edged:
        t[..., :8, :] = t[..., :, :8] = t[..., -8:, :] = t[..., :, -8:] = math.nan
    moved = ensemble_ratio(edged, objective, factor, rule)
    assert (moved == pytest.approx(again)) == (rule == "roughness")


def test_roughness_calibration_needs_patches_with_whole_lr_neighbourhoods():
    from climai.config import CampaignConfig

    spec, train, val, _ = tiny_sources(steps=20, variables=("pr",))
    torch.manual_seed(0)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16], noise_channels=2)
    loaders = _loaders(spec, train, val)  # 16-cell patches: 2 x 2 LR cells, none inside
    objective = Objective(spec, constraint="conserve")
    drawn = val_members(model, loaders, objective, CPU, 4, 2, 0)
    with pytest.raises(ValueError, match=r"roughness needs validation patches of more than 16"):
        ensemble_ratio(drawn, objective, 1.0, "roughness")
    rain = [{"name": "pr", "units": "mm h-1", "kind": "precipitation"}]
    crps = {"unet-crps": {"calibrate": True, "calibrate_by": "roughness", "patch": 16}}
    with pytest.raises(ValueError, match=r"methods.unet-crps.patch=16: .* patch >= 24 at scale 8"):
        CampaignConfig.model_validate({"campaign": "t", "variables": rain, "methods": crps})


@pytest.mark.parametrize("rule", ["intensity", "roughness"])
def test_config_rate_rules_need_every_variable_to_be_rain(rule):
    from climai.config import CampaignConfig

    crps = {"unet-crps": {"calibrate": True, "calibrate_by": rule}}
    with pytest.raises(
        ValueError, match=rf"methods.unet-crps.calibrate_by={rule} .* not \['tas'\]"
    ):
        CampaignConfig.model_validate({"campaign": "t", "methods": crps})
    rain = [{"name": "pr", "units": "mm h-1", "kind": "precipitation"}]
    cfg = CampaignConfig.model_validate({"campaign": "t", "variables": rain, "methods": crps})
    assert cfg.methods.get("unet-crps").calibrate_by == rule


def test_config_inflation_needs_calibrate():
    for way in ("inflation", "intensity", "roughness"):
        with pytest.raises(ValueError, match=f"calibrate_by='{way}' needs calibrate: true"):
            UNetCRPSConfig(calibrate_by=way)
        assert UNetCRPSConfig(calibrate=True, calibrate_by=way).calibrate_by == way


def test_a_model_with_nan_weights_is_not_shipped():
    spec, train, val, _ = tiny_sources(steps=20)
    model = ResidualUNet(spec.in_channels, spec.out_channels, [8, 16])
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite weights in 1 tensors"):
        guard(
            model,
            _loaders(spec, train, val),
            Objective(spec),
            CPU,
            calibrate=False,
            fallback=True,
            members=1,
            seed=0,
        )


def test_config_coarsen_sources_needs_train_on_and_the_grid_channel():
    pooled = {"train_on": ["knmi"], "normalisation": "physical"}
    with pytest.raises(ValueError, match="coarsen_sources=\\[2\\] needs train_on and grid_chan"):
        UNetConfig(coarsen_sources=[2])
    with pytest.raises(ValueError, match="coarsen_sources=\\[2\\] needs train_on and grid_chan"):
        UNetConfig(coarsen_sources=[2], **pooled)
    with pytest.raises(ValueError, match="distinct integer factors of 2 or more"):
        UNetConfig(coarsen_sources=[2, 2], grid_channel=True, **pooled)
    with pytest.raises(ValueError, match="distinct integer factors of 2 or more"):
        UNetConfig(coarsen_sources=[1, 2], grid_channel=True, **pooled)
    assert UNetConfig(coarsen_sources=[2, 4], grid_channel=True, **pooled).coarsen_sources == [2, 4]


def test_a_coarsened_source_is_the_block_means_of_the_campaigns_split():
    prep = PreparedDataset(create_prepared_test_data(nx=72, ny=64, steps=20))
    coarse = coarsened_source(prep, ["pr"], 2, "train", 16, "toy")
    hr = prep.split("train").hr_stack(["pr"])  # (12, 1, 64, 72): cut to whole 16-cell blocks
    assert coarse.hr.shape == (12, 1, 32, 32) and coarse.lr.shape == (12, 1, 4, 4)
    want = hr[..., :64, :64].reshape(12, 1, 32, 2, 32, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(coarse.hr, want, rtol=1e-5)
    np.testing.assert_allclose(
        coarse.lr, hr[..., :64, :64].reshape(12, 1, 4, 16, 4, 16).mean(axis=(3, 5)), rtol=1e-5
    )
    assert coarse.static.shape == (0, 32, 32)
    assert list(coarse.times) == list(pd.DatetimeIndex(prep.split("train").times))
    in_ram = coarsened_source(prep, ["pr"], 2, "train", 16, "toy", hr.astype(np.float32))
    np.testing.assert_array_equal(in_ram.hr, coarse.hr)  # from the loaded split: the same
    np.testing.assert_array_equal(in_ram.lr, coarse.lr)
    with pytest.raises(ValueError, match="coarsen_sources: campaign 'toy'.*32×32 cells.*patch=48"):
        coarsened_source(prep, ["pr"], 2, "train", 48, "toy")


def test_pooled_training_draws_coarsened_copies_with_their_grid_spacing(tmp_path):
    ds = create_prepared_test_data(nx=64, ny=64, steps=20)
    sources = {n: Source(n, tmp_path / n, ds) for n in ("a", "b")}
    mcfg = UNetConfig(
        train_on=["a", "b"],
        normalisation="physical",
        grid_channel=True,
        coarsen_sources=[2, 4],
        patch=16,
        pooled_patches=600,
    )
    spec = pooled_spec(mcfg, ["pr"], ["precipitation"], 8)
    loaders = pooled_loaders(mcfg, spec, sources, seed=0, world=1)
    names = ["a", "a/2x", "a/4x", "b", "b/2x", "b/4x"]
    assert [m.name for m in loaders.train.members] == names
    km = grid_spacing_km(ds)
    for m, f in zip(loaders.train.members, [1, 2, 4] * 2, strict=True):
        assert m.grid == pytest.approx(math.log2(km * f))
    counts = loaders.train.counts()
    assert set(counts) == set(names) and min(counts.values()) > 60  # 1/6 each: 100 expected
    patches = [loaders.train[i] for i in range(60)]
    assert all(w.hr.shape == (1, 16, 16) for w in patches)
    grids = sorted({round(float(w.static[-1, 0, 0]), 6) for w in patches})
    assert grids == pytest.approx([math.log2(km * f) for f in (1, 2, 4)])
    assert [m.name for m in loaders.val.members] == ["a", "b"]  # validation: the originals
    unbudgeted = mcfg.model_copy(update={"pooled_patches": None})
    plain = mcfg.model_copy(update={"pooled_patches": None, "coarsen_sources": []})
    epoch = len(pooled_loaders(unbudgeted, spec, sources, seed=0, world=1).train)
    assert epoch == len(pooled_loaders(plain, spec, sources, seed=0, world=1).train)


@pytest.mark.parametrize("limit_gb", [2.0, 1e-4])  # in RAM, or streamed with copies only
def test_the_bytes_a_pooled_training_holds_are_its_loaders_arrays(tmp_path, limit_gb):
    """The cost model's pooled memory (``resident_bytes``, climai.sizing) is the float32 arrays
    the pooled loaders hold: train and val splits of small stores, every coarsened copy."""
    sources = {}
    for name, n, steps in (("a", 64, 20), ("b", 48, 30)):
        write_store(create_prepared_test_data(nx=n, ny=n, steps=steps), tmp_path / name)
        sources[name] = Source(name, tmp_path / name, open_store(tmp_path / name))
    mcfg = UNetConfig(train_on=["a", "b"], validate_on=["b"], normalisation="physical",
                      grid_channel=True, coarsen_sources=[2], patch=16,
                      memory_limit_gb=limit_gb)  # fmt: skip
    spec = pooled_spec(mcfg, ["pr"], ["precipitation"], 8)
    loaders = pooled_loaders(mcfg, spec, sources, seed=0, world=1)
    held = [m.patches.source for m in [*loaders.train.members, *loaders.val.members]]
    arrays = sum(s.hr.nbytes + s.lr.nbytes for s in held if isinstance(s, MemorySource))
    estimate = sum(
        resident_bytes(PreparedDataset(s.ds), mcfg, ["pr"], True, n == "b")
        for n, s in sources.items()
    )
    assert estimate == arrays
    copies = sum(s.hr.nbytes + s.lr.nbytes for s in held[1:2] + held[3:4])  # a/2x, b/2x
    assert (arrays == copies) == (limit_gb < 1e-3)  # streamed: only the copies in RAM


@pytest.mark.parametrize("key, value", [("grid_channel", True), ("min_wet", 0.3)])
def test_config_refuses_a_pooled_only_key_under_campaign_normalisation(key, value):
    """grid_channel and min_wet act on the physical (pooled) features and patches only: under
    normalisation: campaign they were accepted and silently ignored (no grid channel in the
    model card's statics, no patch redrawn); now the config names the key."""
    with pytest.raises(ValueError, match=f"{key}={value} needs normalisation: physical"):
        UNetConfig(**{key: value})
    assert getattr(UNetConfig(**{key: value}, normalisation="physical"), key) == value


def test_a_model_trained_with_an_ignored_pooled_only_key_still_loads(tmp_path):
    """Models trained before the config refused grid_channel/min_wet under normalisation:
    campaign (the keys did nothing) record them in their card: they still load."""
    from climai.inference.predict import load_emulator
    from climai.io.checkpoints import save_model
    from climai.testing import model_card_for, toy_feature_spec, trained_like_unet

    spec = toy_feature_spec()
    card = model_card_for(spec, [8, 16])
    config = {**UNetConfig(channels=[8, 16]).model_dump(mode="json"), "grid_channel": True}
    card["architecture"] = {"type": "unet", "method_config": {**config, "min_wet": 0.3}}
    save_model(tmp_path / "model.pt", trained_like_unet(spec, [8, 16]).state_dict(), card)
    emulator, _, _ = load_emulator(tmp_path / "model.pt")
    assert list(emulator.nets) == ["all"]
