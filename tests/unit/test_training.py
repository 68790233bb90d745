import numpy as np
import pandas as pd
import pytest
import torch

from climai.config import UNetConfig, UNetCRPSConfig
from climai.data.dataset import Collate, EpochSampler, PatchDataset
from climai.data.features import build_split, to_physical
from climai.testing import tiny_sources
from climai.training.distributed import DistContext
from climai.training.loop import Loaders, fit
from climai.training.losses import fair_crps, masked_mse
from climai.training.schedule import warmup_cosine


def _loaders(train, val, spec, batch=4, seed=0, workers=0, patch=16):
    return Loaders(
        PatchDataset(train, patch, 8, train.shape[0] * 2, seed),
        PatchDataset(val, patch, 8, max(batch, val.shape[0] * 2), seed + 1000),
        Collate(spec),
        batch,
        workers,
        seed,
    )


def test_masked_mse_ignores_missing_cells():
    target = torch.tensor([[1.0, float("nan")], [3.0, 4.0]])
    pred = torch.tensor([[2.0, 100.0], [3.0, 2.0]])
    assert masked_mse(pred, target).item() == pytest.approx((1.0 + 0.0 + 4.0) / 3)


def test_fair_crps_matches_the_definition_and_ignores_missing_cells():
    gen = torch.Generator().manual_seed(0)
    members = torch.randn(3, 4, 5, generator=gen)
    target = torch.randn(3, 5, generator=gen)
    target[0, 0] = float("nan")
    x, y = members.numpy(), target.numpy()
    want = []
    for b in range(3):
        for c in range(5):
            if np.isnan(y[b, c]):
                continue
            e = x[b, :, c]
            pairs = np.abs(e[:, None] - e[None, :]).sum() / (2 * 4 * 3)
            want.append(np.abs(e - y[b, c]).mean() - pairs)
    assert fair_crps(members, target).item() == pytest.approx(np.mean(want), rel=1e-5)
    # two identical members: no spread term, the CRPS is the absolute error
    same = members[:, :1].expand(-1, 2, -1)
    assert fair_crps(same, target).item() == pytest.approx(
        np.nanmean(np.abs(x[:, 0] - y)), rel=1e-5
    )
    with pytest.raises(ValueError, match="at least 2 members"):
        fair_crps(members[:, :1], target)


def test_features_round_trip_to_physical_units():
    spec, train, _, hr = tiny_sources()
    split = build_split(
        spec, train.lr, train.static, pd.date_range("2020", periods=32, freq="h"), train.hr
    )
    back = to_physical(spec, split.target).numpy()
    np.testing.assert_allclose(back, hr[:32], rtol=1e-5, atol=1e-5)
    assert split.x.shape[1] == spec.in_channels == 2 * 2 + 2 + 4


def test_patch_features_equal_the_full_domain_features_inside_the_domain():
    """The two-cell LR halo makes a patch's bicubic input identical to the full-domain one."""
    spec, train, _, _ = tiny_sources()
    split = build_split(
        spec, train.lr, train.static, pd.date_range("2020", periods=32, freq="h"), train.hr
    )
    ds = PatchDataset(train, 16, 8, 16, seed=3)
    batch = Collate(spec)([ds[i] for i in range(16)])
    for i in range(16):
        t, y, x = ds.window(i)
        win = (t, slice(None), slice(y, y + 16), slice(x, x + 16))
        torch.testing.assert_close(batch.base[i], split.base[win], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch.target[i], split.target[win], rtol=0, atol=0)
        torch.testing.assert_close(batch.x[i, 4:6], split.x[win][4:6], rtol=1e-6, atol=1e-6)
        assert y % 8 == 0 and x % 8 == 0
        np.testing.assert_array_equal(
            batch.lr[i].numpy(), train.lr[t, :, y // 8 : y // 8 + 2, x // 8 : x // 8 + 2]
        )


def test_patches_are_deterministic_skip_missing_data_and_ignore_workers():
    spec, train, _, _ = tiny_sources(nan_box=True)
    a = PatchDataset(train, 16, 8, 40, seed=1, min_valid=0.9)
    b = PatchDataset(train, 16, 8, 40, seed=1, min_valid=0.9)
    assert [a.window(i) for i in range(40)] == [b.window(i) for i in range(40)]
    # the blank quarter is never drawn: every window keeps ≥ 90 % valid cells
    assert all(np.isfinite(a[i].hr).mean() >= 0.9 for i in range(40))
    b.set_epoch(1)
    assert [a.window(i) for i in range(40)] != [b.window(i) for i in range(40)]
    loaders0 = _loaders(train, train, spec, workers=0)
    loaders2 = _loaders(train, train, spec, workers=2)
    ctx = DistContext()
    for x, y in zip(
        loaders0.loader(loaders0.train, 0, ctx),
        loaders2.loader(loaders2.train, 0, ctx),
        strict=True,
    ):
        torch.testing.assert_close(x.x, y.x, rtol=0, atol=0)


def test_zarr_source_streams_the_same_patches_as_memory(tmp_path):
    from climai.config import load_config
    from climai.data.dataset import ZarrSource
    from climai.data.features import feature_spec
    from climai.io import open_store
    from climai.stages import StageContext
    from climai.stages.train import memory_source
    from climai.testing import prepare_campaign

    cfg = load_config(prepare_campaign(tmp_path))
    ctx = StageContext(cfg, "x", "test", 1)
    ds = open_store(ctx.paths.dataset)
    import json

    spec = feature_spec(ds, cfg.variable_names, 8, json.loads(ctx.paths.stats.read_text()))
    mem = PatchDataset(memory_source(ds, spec, "train"), 16, 8, 12, seed=5)
    stream = PatchDataset(
        ZarrSource(ctx.paths.dataset, spec.variables, spec.statics, 0), 16, 8, 12, seed=5
    )
    collate = Collate(spec)
    a, b = collate([mem[i] for i in range(12)]), collate([stream[i] for i in range(12)])
    for name in ("x", "base", "target", "lr"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
    # the stream holds no array data until asked: only the store path travels to workers
    import pickle

    assert len(pickle.dumps(stream.source)) < 20_000
    # loader=auto streams a store above memory_limit_gb and loads a small one into RAM
    from climai.stages.train import make_loaders

    big = UNetConfig(patch=16, batch=4, memory_limit_gb=1e-6)
    assert isinstance(make_loaders(ctx, big, spec, ds, 1).train.source, ZarrSource)
    small = UNetConfig(patch=16, batch=4)
    assert not isinstance(make_loaders(ctx, small, spec, ds, 1).train.source, ZarrSource)


def test_sampler_splits_ranks_and_resumes_mid_epoch():
    r0, r1 = EpochSampler(20, 3, 0, 2), EpochSampler(20, 3, 1, 2)
    assert len(r0) == len(r1) == 9 and not set(r0) & set(r1)
    assert list(EpochSampler(20, 3, 0, 2, start=2)) == list(r0)[6:]


def test_schedule_warms_up_then_decays():
    f = warmup_cosine(10, 100)
    assert f(0) == 0.1 and f(9) == 1.0
    assert f(50) < f(10) and abs(f(100) - 0.05) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg",
    [
        UNetConfig(epochs=3, patch=16, batch=4, channels=[8, 16], lr=3e-3, warmup_steps=3),
        UNetCRPSConfig(
            epochs=3,
            patch=16,
            batch=4,
            channels=[8, 16],
            lr=3e-3,
            warmup_steps=3,
            constraint="conserve",
        ),
    ],
    ids=["unet", "unet-crps-conserve"],
)
def test_training_lowers_the_validation_loss(cfg):
    spec, train, val, _ = tiny_sources(steps=48)
    loaders = _loaders(train, val, spec)
    result = fit(cfg, spec, loaders, DistContext(), log=lambda _: None)
    hist = result.history
    assert len(hist) == 3
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert {"epoch", "train_loss", "val_loss", "lr", "samples_per_s", "seconds"} <= set(hist[0])


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience(monkeypatch):
    import climai.training.loop as loop

    losses = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    seen = []

    def fake_validate(model, *_args):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(losses)

    monkeypatch.setattr(loop, "validate", fake_validate)
    spec, train, val, _ = tiny_sources(steps=24)
    cfg = UNetConfig(epochs=6, patch=16, batch=4, channels=[8, 16], patience=1)
    result = fit(cfg, spec, _loaders(train, val, spec), DistContext(), log=lambda _: None)
    assert [h["val_loss"] for h in result.history] == [1.0, 0.5, 0.6]
    for k, v in seen[1].items():  # the weights returned are those of the best (second) epoch
        assert torch.equal(result.state_dict[k], v), k


@pytest.mark.slow
def test_training_is_bitwise_reproducible():
    spec, train, val, _ = tiny_sources(steps=24)
    cfg = UNetCRPSConfig(epochs=1, patch=16, batch=4, channels=[8, 16], bf16=False)
    a = fit(cfg, spec, _loaders(train, val, spec, seed=7), DistContext(), log=lambda _: None)
    b = fit(cfg, spec, _loaders(train, val, spec, seed=7), DistContext(), log=lambda _: None)
    for k, v in a.state_dict.items():
        assert torch.equal(v, b.state_dict[k]), k


def test_checkpoint_every_changes_no_weight(tmp_path):
    """methods.<m>.checkpoint_every is one of the RUN_KEYS (climai/config/slices.py): a training
    that checkpoints after every step ends with the weights of one that never does."""
    spec, train, val, _ = tiny_sources(steps=24)
    weights = []
    for every, folder in ((1, tmp_path / "ckpt"), (200, None)):
        cfg = UNetConfig(epochs=2, patch=16, batch=4, channels=[8, 16], bf16=False,
                         checkpoint_every=every)  # fmt: skip
        loaders = _loaders(train, val, spec, seed=7)
        weights.append(fit(cfg, spec, loaders, DistContext(), folder, log=lambda _: None))
    assert any((tmp_path / "ckpt").iterdir())  # it did write checkpoints
    for k, v in weights[0].state_dict.items():
        assert torch.equal(v, weights[1].state_dict[k]), k


def test_physical_loss_space_scores_the_variables_in_their_units():
    """``loss_space: physical``: the masked MSE of rain in mm h-1 (over its 1 mm h-1 offset)
    and of temperature in units of its std; missing cells never count; huge values clipped."""
    from climai.data.dataset import Batch
    from climai.testing import toy_feature_spec
    from climai.training.loop import Objective
    from climai.training.losses import PHYSICAL_LOG_MAX, in_units

    spec = toy_feature_spec(8)
    assert spec.variables == ["tas", "pr"] and spec.transform("pr").name == "log1p"
    rng = np.random.default_rng(3)
    phys = {"tas": 280 + 5 * rng.random((2, 16, 16)), "pr": 4 * rng.random((2, 16, 16)) ** 3}
    pred = {"tas": phys["tas"] + rng.normal(size=(2, 16, 16)), "pr": phys["pr"] * 1.5}
    truth = {k: torch.tensor(v, dtype=torch.float32) for k, v in phys.items()}
    truth["pr"][0, 0, 0] = float("nan")
    z = {k: torch.tensor(v, dtype=torch.float32) for k, v in pred.items()}
    target = torch.stack([spec.normalise(v, truth[v]) for v in spec.variables], 1)
    out = torch.stack([spec.normalise(v, z[v]) for v in spec.variables], 1)

    class Fixed(torch.nn.Module):
        def forward(self, x, base):
            return out

    x = torch.zeros(2, spec.in_channels, 16, 16)
    batch = Batch(x, torch.zeros_like(target), target, torch.zeros(2, 2, 2, 2))
    total, count = Objective(spec, space="physical").sums(Fixed(), batch)
    std = spec.stats["tas"]["std"]
    err = np.concatenate(
        [((pred["tas"] - phys["tas"]) / std).ravel(), ((pred["pr"] - phys["pr"]) / 1.0).ravel()[1:]]
    )
    assert int(count) == err.size
    assert (total / count).item() == pytest.approx(np.mean(err**2), rel=1e-4)
    # the transformed space scores something else
    other, _ = Objective(spec).sums(Fixed(), batch)
    assert abs(other.item() - total.item()) > 0.1 * total.item()
    # a wild prediction cannot overflow: log1p(rain) is clipped at PHYSICAL_LOG_MAX
    wild = in_units(torch.full((1, 2, 2, 2), 1e4), spec)
    assert torch.isfinite(wild).all() and wild[0, 1].max().item() == pytest.approx(
        np.expm1(PHYSICAL_LOG_MAX), rel=1e-5
    )


def test_validation_scores_every_val_patch_not_only_whole_batches():
    """10 val patches with batch 4: all 10 are validated (a short last batch), across ranks too;
    the val loss and RMSE equal a direct computation over all of them."""
    from climai.training.loop import Objective, validate, validation_scores

    spec, train, val, _ = tiny_sources()
    loaders = Loaders(
        PatchDataset(train, 16, 8, 16, 0),
        PatchDataset(val, 16, 8, 10, 1000),
        Collate(spec),
        4,
        0,
        0,
    )
    seen = [i for b in (0, 1) for i in EpochSampler(10, 4, b, 2, every=True)]
    assert sorted(seen) == list(range(10))
    assert len(list(EpochSampler(10, 4, every=True))) == 10
    torch.manual_seed(0)
    from climai.models.unet import ResidualUNet

    model = ResidualUNet(spec.in_channels, spec.out_channels, [4, 8]).eval()
    objective = Objective(spec)
    batch = Collate(spec)([loaders.val[i] for i in range(10)])
    with torch.no_grad():
        pred = model(batch.x, batch.base.nan_to_num(0.0)).float()
    ok = torch.isfinite(batch.target)
    want = float(((pred - batch.target)[ok] ** 2).mean())
    assert validate(model, loaders, objective, DistContext()) == pytest.approx(want, rel=1e-5)
    scores = validation_scores(model, loaders, objective, DistContext())
    assert scores[spec.variables[0]]["cells"] == 10 * 16 * 16


def test_validation_without_a_valid_val_cell_is_an_error_not_a_zero_loss():
    from climai.models.unet import ResidualUNet
    from climai.training.loop import Objective, validate

    spec, train, val, _ = tiny_sources()
    val.hr[:] = np.nan
    loaders = Loaders(
        PatchDataset(train, 16, 8, 16, 0),
        PatchDataset(val, 16, 8, 3, 1000, min_valid=0.0),
        Collate(spec),
        4,
        0,
        0,
    )
    model = ResidualUNet(spec.in_channels, spec.out_channels, [4, 8]).eval()
    with pytest.raises(ValueError, match="val patches hold no valid target cell.*split.val"):
        validate(model, loaders, Objective(spec), DistContext())


def test_the_model_card_names_the_epoch_whose_weights_were_kept(tmp_path):
    """Early stopping after a worse epoch: the card's and validation.json's best epoch is the
    history's lowest val loss, and the shipped weights score exactly that val loss."""
    import json

    from climai.config import config_sha256, load_config, stage_slice
    from climai.io import open_store
    from climai.io.checkpoints import load_model_file
    from climai.stages import StageContext
    from climai.stages.train import make_loaders
    from climai.stages.train import run as run_train
    from climai.testing import prepare_campaign
    from climai.training.loop import build_model, make_objective, validate

    unet = {"epochs": 5, "patch": 16, "batch": 4, "channels": [4, 8], "lr": 0.5, "patience": 1}
    path = prepare_campaign(tmp_path, methods={"bicubic": None, "unet": unet})
    cfg = load_config(path)
    ctx = StageContext(cfg, config_sha256(stage_slice(cfg, "train", "unet")), "train", 1)
    run_train(ctx, "unet")
    history = pd.read_csv(ctx.paths.history("unet"))
    best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    state, card = load_model_file(ctx.paths.model("unet"))
    selected = card["training"]["all"]
    assert selected["best_epoch"] == best
    assert selected["epochs_run"] == len(history) and selected["epochs"] == 5
    assert selected["stopped_early"] == (len(history) < 5)
    record = json.loads(ctx.paths.validation("unet").read_text())
    assert record["selected"] == card["training"]
    # the card's config is what the training read, no defaults of other sections
    assert config_sha256(card["config"]) == card["config_sha256"] == ctx.config_sha256
    assert "evaluate" not in card["config"] and list(card["config"]["methods"]) == ["unet"]
    mcfg = cfg.methods.get("unet")
    from climai.data.features import FeatureSpec

    spec = FeatureSpec(**card["features"])
    net = build_model(mcfg, spec)
    net.load_state_dict({k.removeprefix("all."): v for k, v in state.items()})
    loaders = make_loaders(ctx, mcfg, spec, open_store(ctx.paths.dataset), 1)
    got = validate(net, loaders, make_objective(mcfg, spec, torch.device("cpu")), DistContext())
    assert got == pytest.approx(selected["best_val_loss"], rel=1e-5)


def test_a_warm_up_longer_than_the_run_is_a_warning():
    """warmup_steps past the run's last step: the learning rate never reaches lr, and the log
    says so (it was silent)."""
    spec, train, val, _ = tiny_sources(steps=24)
    cfg = UNetConfig(epochs=1, patch=16, batch=4, channels=[8, 16], warmup_steps=1000)
    lines: list[str] = []
    fit(cfg, spec, _loaders(train, val, spec), DistContext(), log=lines.append)
    warned = [ln for ln in lines if ln.startswith("WARNING: warmup_steps=1000")]
    assert len(warned) == 1 and "never reaches lr=" in warned[0], lines
    lines.clear()
    fit(cfg.model_copy(update={'warmup_steps': 1}), spec, _loaders(train, val, spec), DistContext(),
        log=lines.append)  # fmt: skip
    assert not [ln for ln in lines if ln.startswith("WARNING: warmup")], lines


def test_time_features_false_reaches_a_campaign_normalised_model(tmp_path):
    """``time_features: false`` zeroes the four time channels with the default ``normalisation:
    campaign`` too (it was honoured by the physical/pooled spec only: the card said true and the
    model saw hour and day)."""
    from climai.config import config_sha256, load_config, stage_slice
    from climai.io.checkpoints import load_model_file
    from climai.stages import StageContext
    from climai.stages.train import run as run_train
    from climai.testing import prepare_campaign

    unet = {"epochs": 1, "patch": 32, "batch": 4, "patches_per_step": 1, "channels": [8, 16]}
    path = prepare_campaign(tmp_path, methods={"unet": {**unet, "time_features": False}})
    cfg = load_config(path)
    run_train(
        StageContext(cfg, config_sha256(stage_slice(cfg, "train", "unet")), "train", 1), "unet"
    )
    card = load_model_file(cfg.campaign_dir / "models" / "unet" / "model.pt")[1]
    assert card["features"]["time_features"] is False


@pytest.mark.parametrize("grad_clip", [1e-3, 1e3])
def test_weight_decay_and_grad_clip_reach_the_optimiser_step(grad_clip):
    """methods.<m>.weight_decay is AdamW's decay and grad_clip bounds the gradient norm of the
    step (the gradients stay on the parameters until the next step)."""
    from climai.training.loop import build_model, init_state, make_objective, train_step

    spec, train, val, _ = tiny_sources()
    cfg = UNetConfig(patch=16, batch=4, channels=[4, 8], weight_decay=0.3, grad_clip=grad_clip)
    torch.manual_seed(0)
    model = build_model(cfg, spec)
    state = init_state(cfg, model, 10, torch.device("cpu"))
    assert [g["weight_decay"] for g in state.opt.param_groups] == [0.3]
    loaders = _loaders(train, val, spec)
    batch = next(iter(loaders.loader(loaders.train, 0, DistContext())))
    objective = make_objective(cfg, spec, torch.device("cpu"))
    train_step(model, state, batch, objective, cfg.grad_clip)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    )
    if grad_clip < 1:
        assert norm == pytest.approx(grad_clip, rel=1e-3)  # clipped to the bound
    else:
        assert 1e-3 < norm < grad_clip  # the same batch's gradient, unclipped
