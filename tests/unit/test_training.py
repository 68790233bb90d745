import numpy as np
import pandas as pd
import pytest
import torch

from climai.config import UNetConfig
from climai.data import FeatureSpec, build_split, patch_batches, to_physical
from climai.preprocess import coarsen_block_mean
from climai.testing import create_test_data
from climai.training import masked_mse, train_model
from climai.training.loop import warmup_cosine


def _spec_and_splits(steps=40, seed=0):
    target, static = create_test_data(nx=32, ny=32, steps=steps, seed=seed)
    variables = ["tas", "pr"]
    hr = np.stack([target[v].values for v in variables], axis=1)
    lr = np.stack([coarsen_block_mean(target[v], 8).values for v in variables], axis=1)
    st = np.stack([static[s].values for s in ("lsm", "orography")])
    stats = {
        "tas": {
            "transform": "identity",
            "offset": 1.0,
            "mean": float(hr[:, 0].mean()),
            "std": float(hr[:, 0].std()),
        },
        "pr": {
            "transform": "log1p",
            "offset": 1.0,
            "mean": float(np.log1p(hr[:, 1]).mean()),
            "std": float(np.log1p(hr[:, 1]).std()),
        },
        "static": {
            s: {"mean": float(v.mean()), "std": float(v.std()) or 1.0}
            for s, v in zip(("lsm", "orography"), st, strict=True)
        },
    }
    spec = FeatureSpec(variables, ["lsm", "orography"], 8, stats)
    times = pd.DatetimeIndex(target["time"].values)
    n = int(steps * 0.8)
    train = build_split(spec, lr[:n], st, times[:n], hr[:n])
    val = build_split(spec, lr[n:], st, times[n:], hr[n:])
    return spec, train, val, hr


def test_masked_mse_ignores_missing_cells():
    target = torch.tensor([[1.0, float("nan")], [3.0, 4.0]])
    pred = torch.tensor([[2.0, 100.0], [3.0, 2.0]])
    assert masked_mse(pred, target).item() == pytest.approx((1.0 + 0.0 + 4.0) / 3)


def test_features_round_trip_to_physical_units():
    spec, train, _, hr = _spec_and_splits()
    back = to_physical(spec, train.target).numpy()
    np.testing.assert_allclose(back, hr[: back.shape[0]], rtol=1e-5, atol=1e-5)
    assert train.x.shape[1] == spec.in_channels == 2 * 2 + 2 + 4


def test_patches_are_deterministic_given_the_seed_and_aligned_to_blocks():
    _, train, _, _ = _spec_and_splits()
    a = [b[0] for b in patch_batches(train, 16, 4, 2, 8, np.random.default_rng(1))]
    b = [b[0] for b in patch_batches(train, 16, 4, 2, 8, np.random.default_rng(1))]
    assert len(a) == train.x.shape[0] * 2 // 4
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_schedule_warms_up_then_decays():
    f = warmup_cosine(10, 100)
    assert f(0) == 0.1 and f(9) == 1.0
    assert f(50) < f(10) and abs(f(100) - 0.05) < 1e-9


def test_training_lowers_validation_loss_below_the_bicubic_start():
    spec, train, val, _ = _spec_and_splits(steps=60)
    cfg = UNetConfig(
        epochs=4, patch=32, batch=4, patches_per_step=2, channels=[8, 16], lr=3e-3, warmup_steps=5
    )
    start = masked_mse(val.base, val.target).item()  # an untrained model predicts its base
    _model, history = train_model(
        cfg, spec.in_channels, spec.out_channels, train, val, 8, 0, log=lambda _: None
    )
    assert len(history) == 4
    assert min(h["val_loss"] for h in history) < 0.9 * start
    assert {"epoch", "train_loss", "val_loss", "lr", "samples_per_s", "seconds"} <= set(history[0])


def test_training_is_bitwise_reproducible():
    spec, train, val, _ = _spec_and_splits(steps=30)
    cfg = UNetConfig(epochs=1, patch=32, batch=4, channels=[8, 16], bf16=False)
    a, _ = train_model(
        cfg, spec.in_channels, spec.out_channels, train, val, 8, 7, log=lambda _: None
    )
    b, _ = train_model(
        cfg, spec.in_channels, spec.out_channels, train, val, 8, 7, log=lambda _: None
    )
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
