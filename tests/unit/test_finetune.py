"""Fine-tuning: init_from, frozen parts, compatibility checks, lineage (issue 11)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from climai.config import (
    ConfigError,
    UNetConfig,
    canonical_json,
    config_sha256,
    from_stage_json,
    load_config,
    stage_slice,
    validate_config,
)
from climai.io import open_store
from climai.io.checkpoints import load_model_file
from climai.models.unet import ResidualUNet
from climai.parents import parent_method, parent_model, training_waves
from climai.preprocess.splits import SPLITS
from climai.stages import StageContext
from climai.testing import prepare_campaign, tiny_sources
from climai.training.distributed import DistContext
from climai.training.finetune import (
    NEW_NOISE_GAIN,
    Parent,
    check_compatible,
    freeze,
    lineage,
    load_parent,
    load_parent_weights,
    part_prefixes,
)
from climai.training.loop import fit
from climai.training.losses import masked_mae
from tests.unit.test_training import _loaders


def test_init_from_a_campaign_resolves_to_its_model_under_the_same_results_root():
    cfg = validate_config(
        {"results": "out", "methods": {"unet": {"init_from": {"campaign": "knmi"}}}}
    )
    assert parent_model(cfg, "unet") == Path("out/knmi/models/unet/model.pt")
    cfg = validate_config({"methods": {"unet": {"init_from": "some/where/model.pt"}}})
    assert parent_model(cfg, "unet") == Path("some/where/model.pt")
    assert parent_model(validate_config({}), "unet") is None
    this = {"type": "unet-crps", "init_from": {"method": "unet"}}
    cfg = validate_config({"campaign": "alps", "methods": {"ens": this}})
    assert parent_model(cfg, "ens") == Path("results/alps/models/unet/model.pt")
    with pytest.raises(ConfigError, match=r"init_from.method='unet' is not a trained method"):
        validate_config({"campaign": "alps", "methods": {"unet": None, "ens": this}})


def test_a_parent_in_the_same_campaign_must_run_but_a_stage_slice_rebuilds_without_it():
    ft = {"type": "unet", "init_from": {"campaign": "toy", "method": "unet"}}
    cfg = validate_config({"methods": {"unet-ft": ft}})
    again, _ = from_stage_json(canonical_json(stage_slice(cfg, "train", "unet-ft")))
    assert parent_model(again, "unet-ft") == Path("results/toy/models/unet/model.pt")
    with pytest.raises(ConfigError, match=r"init_from.method='unet' is not a trained method"):
        validate_config({"methods": {"unet": None, "unet-ft": ft}})


def test_a_parent_in_the_same_campaign_whose_network_differs_is_refused_before_it_trains():
    """unet-crps takes unet-crps's defaults, not unet's values: a campaign that changed unet's
    channels (or joint) failed only when unet-crps started to train, after unet had trained."""
    ens = {"init_from": {"method": "unet"}, "channels": [8, 16]}
    validate_config({"methods": {"unet": {"channels": [8, 16]}, "unet-crps": ens}})
    with pytest.raises(ConfigError) as err:
        validate_config(
            {
                "methods": {
                    "unet": {"channels": [8, 16]},
                    "unet-crps": {**ens, "channels": [8, 16, 32], "joint": False},
                }
            }
        )
    text = str(err.value)
    assert "methods.unet-crps.init_from.method='unet'" in text
    assert "methods.unet.channels=[8, 16] but methods.unet-crps.channels=[8, 16, 32]" in text
    assert "methods.unet.joint=True but methods.unet-crps.joint=False" in text
    # a stage slice holds the method alone: train checks the parent's card instead
    cfg = validate_config({"methods": {"unet": {"channels": [8, 16]}, "unet-crps": ens}})
    again, _ = from_stage_json(canonical_json(stage_slice(cfg, "train", "unet-crps")))
    assert again.methods.get("unet-crps").channels == [8, 16]


@pytest.mark.parametrize(
    ("unet", "message"),
    [
        ({"freeze": ["encoder"]}, r"freeze=\['encoder'\] needs init_from"),
        ({"init_from": {"campaign": "toy"}}, r"methods.unet.init_from names the method itself"),
        ({"init_from": "m.pt", "freeze": ["head"]}, r"methods.unet.freeze.0"),
        ({"loss": "huber"}, r"methods.unet.loss"),
    ],
)
def test_bad_fine_tuning_keys_name_the_key(unet, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"methods": {"unet": unet}})


def test_masked_mae_ignores_missing_cells():
    target = torch.tensor([[1.0, float("nan")], [3.0, 4.0]])
    pred = torch.tensor([[2.0, 100.0], [3.0, 2.0]])
    assert masked_mae(pred, target).item() == pytest.approx((1.0 + 0.0 + 2.0) / 3)


def test_freeze_parts_are_levels_of_the_unet():
    model = ResidualUNet(6, 2, [8, 16, 32])
    assert part_prefixes(3, ["encoder"]) == ("down.0.", "down.1.", "noise_down.0.", "noise_down.1.")
    frozen = freeze(model, 3, ["encoder", "bottleneck"])
    assert frozen and all(name.startswith("down.") for name in frozen)
    assert {n.split(".")[1] for n in frozen} == {"0", "1", "2"}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(("up.", "fuse.", "head.")) for n in trainable)


@pytest.mark.slow
def test_frozen_parts_keep_the_parent_weights_and_the_rest_trains():
    spec, train, val, _ = tiny_sources(steps=24)
    cfg = UNetConfig(epochs=1, patch=16, batch=4, channels=[8, 16], ema_decay=0)
    parent = fit(cfg, spec, _loaders(train, val, spec), DistContext(), log=lambda _: None)
    child_cfg = cfg.model_copy(update={"init_from": "parent.pt", "freeze": ["encoder"]})
    child = fit(
        child_cfg,
        spec,
        _loaders(train, val, spec, seed=3),
        DistContext(),
        log=lambda _: None,
        init=parent.state_dict,
    )
    assert child.frozen == [n for n in parent.state_dict if n.startswith("down.0.")]
    for name, value in child.state_dict.items():
        same = torch.equal(value, parent.state_dict[name])
        assert same == name.startswith("down.0."), name
    assert set(child.scores) == {"tas", "pr"} and child.scores["tas"]["rmse"] > 0


def _parent(card_features: dict, channels: list[int]) -> Parent:
    card = {
        "method": "unet",
        "config": {"campaign": "knmi"},
        "features": card_features,
        "units": {"tas": "K", "pr": "mm h-1"},
        "architecture": {"name": "ResidualUNet", "channels": channels, "noise_channels": 0},
    }
    return Parent(Path("knmi/model.pt"), "0" * 64, {}, card)


def test_a_parent_that_does_not_match_is_refused_naming_every_difference():
    spec, *_ = tiny_sources(steps=8)
    arch = {"name": "ResidualUNet", "channels": [8, 16], "noise_channels": 0}
    same = _parent(spec.as_dict(), [8, 16])
    check_compatible(same, "methods.unet.init_from", spec, {"tas": "K", "pr": "mm h-1"}, arch)
    other = {**spec.as_dict(), "statics": ["x_km", "y_km"], "scale": 4}
    with pytest.raises(ValueError) as err:
        check_compatible(
            _parent(other, [16, 32]),
            "methods.unet.init_from",
            spec,
            {"tas": "K", "pr": "mm day-1"},
            arch,
        )
    text = str(err.value)
    assert "methods.unet.init_from" in text and "knmi/model.pt" in text
    for what in ("static fields", "scale: parent 4, here 8", "units", "architecture channels"):
        assert what in text, what
    assert "variables" not in text


def test_the_lineage_holds_each_parents_config():
    """A fine-tuned card's config says only init_from: {method: unet}: rebuilt from that card
    alone (the default config's unet as parent) the toy unet-crps came out another model
    (max relative weight difference 2.9) with the same config_sha256, the parent's settings
    being nowhere in the card."""
    grand = _parent({}, [8, 16])
    grand.card["config"] = {"campaign": "knmi", "methods": {"unet": {"epochs": 3}}}
    parent = _parent({}, [8, 16])
    parent.card.update(
        config={"campaign": "knmi", "methods": {"unet-crps": {"epochs": 1}}},
        lineage=lineage(grand),
    )
    chain = lineage(parent)
    assert [entry["config"]["methods"] for entry in chain] == [
        {"unet-crps": {"epochs": 1}},
        {"unet": {"epochs": 3}},
    ]


def _context(path: Path, stage: str) -> StageContext:
    cfg = load_config(path)
    return StageContext(cfg, config_sha256(stage_slice(cfg, stage, "unet")), stage, 2)


def _train_and_score(workdir: Path, campaign: str, unet: dict, **overrides) -> dict:
    """Train ``unet`` in a new tiny campaign; return val and test RMSE per variable."""
    from climai.stages.infer import run as run_infer
    from climai.stages.train import run as run_train

    workdir.mkdir()
    path = prepare_campaign(
        workdir, campaign=campaign, methods={"bicubic": None, "unet": unet}, **overrides
    )
    ctx = _context(path, "train")
    run_train(ctx, "unet")
    run_infer(_context(path, "infer"), "unet")
    ds = open_store(ctx.paths.dataset)
    test = ds.isel(time=np.flatnonzero(ds["split"].values == SPLITS.index("test")))
    pred = open_store(ctx.paths.downscaled("unet"))
    val = json.loads(ctx.paths.validation("unet").read_text())["variables"]
    return {
        v: {
            "val": val[v]["rmse"],
            "test": float(np.sqrt(np.nanmean((pred[v].values - test[f"hr_{v}"].values) ** 2))),
        }
        for v in ("tas", "pr")
    } | {"card": load_model_file(ctx.paths.model("unet"))[1]}


@pytest.mark.slow
def test_fine_tuning_on_a_shifted_world_with_a_fifth_of_the_data_beats_training_from_scratch(
    tmp_path,
):
    """Acceptance 1: a U-Net trained on toy world A (seed 0, June), fine-tuned on world B (seed 1:
    other terrain and coast; September) with 20 % of A's training steps, beats the same U-Net
    trained from scratch on the same steps with the same budget, on val and on test RMSE."""
    unet = {
        "epochs": 3,
        "patch": 32,
        "batch": 8,
        "channels": [8, 16, 32],
        "lr": 3e-3,
        "warmup_steps": 5,
        "patience": 10,
    }
    a = {"nx": 32, "ny": 32, "steps": 240}  # train 0.7: 168 steps
    parent = _train_and_score(tmp_path / "a", "world-a", unet, seed=0, data={"target": a})
    b = {
        "seed": 1,
        "data": {"target": {**a, "start": "2020-09-01T00:00"}},
        "split": {"train": 0.14, "val": 0.06, "test": 0.8},  # 33 train steps: 20 % of A's
    }
    scratch = _train_and_score(tmp_path / "scratch", "world-b", unet, **b)
    model_a = tmp_path / "a/results/world-a/models/unet/model.pt"
    tuned = _train_and_score(tmp_path / "ft", "world-b", {**unet, "init_from": str(model_a)}, **b)
    for v in ("tas", "pr"):
        for split in ("val", "test"):
            assert tuned[v][split] < 0.95 * scratch[v][split], (v, split, tuned[v], scratch[v])
    card = tuned["card"]
    assert card["lineage"][0]["path"] == str(model_a)
    assert card["lineage"][0]["campaign"] == "world-a" and card["lineage"][0]["method"] == "unet"
    assert card["lineage"][0]["sha256"] == hashlib.sha256(model_a.read_bytes()).hexdigest()
    # the child's normalisation statistics are its own campaign's, not the parent's
    assert card["features"]["stats"] != parent["card"]["features"]["stats"]
    assert scratch["card"]["lineage"] == []


def test_a_stochastic_child_starts_from_a_deterministic_parent_with_small_new_noise():
    torch.manual_seed(0)
    parent = ResidualUNet(6, 2, [8, 16, 32])
    child = ResidualUNet(6, 2, [8, 16, 32], noise_channels=4)
    fresh = {k: v.clone() for k, v in child.state_dict().items()}
    new = load_parent_weights(child, parent.state_dict())
    assert new and all(n.startswith(("noise_down.", "noise_up.")) for n in new)
    for name, value in child.state_dict().items():
        if name in new:
            torch.testing.assert_close(value, fresh[name] * NEW_NOISE_GAIN)
        else:
            assert torch.equal(value, parent.state_dict()[name]), name
    # the reverse (a stochastic parent for a deterministic child) does not fit
    with pytest.raises(ValueError, match=r"unexpected \['noise_down.0.proj.weight'"):
        load_parent_weights(ResidualUNet(6, 2, [8, 16, 32]), child.state_dict())
    # and the compatibility check lets noise_channels 0 -> 4 through, but not 4 -> 8
    spec, *_ = tiny_sources(steps=8)
    units = {"tas": "K", "pr": "mm h-1"}
    arch = {"name": "ResidualUNet", "channels": [8, 16], "noise_channels": 4}
    check_compatible(_parent(spec.as_dict(), [8, 16]), "methods.e.init_from", spec, units, arch)
    stochastic = _parent(spec.as_dict(), [8, 16])
    stochastic.card["architecture"]["noise_channels"] = 8
    with pytest.raises(ValueError, match="architecture noise_channels: parent 8, here 4"):
        check_compatible(stochastic, "methods.e.init_from", spec, units, arch)


def test_fine_tuned_methods_train_in_the_wave_after_their_parent():
    ens = {"type": "unet-crps", "init_from": {"method": "unet"}}
    other = {"type": "unet", "init_from": {"campaign": "knmi"}}  # another campaign: no wait
    cfg = validate_config({"methods": {"ens": ens, "u2": {"type": "unet"}, "knmi-ft": other}})
    names = ["unet", "ens", "u2", "knmi-ft"]
    assert training_waves(cfg, names) == [["unet", "u2", "knmi-ft"], ["ens"]]
    assert parent_method(cfg, "ens") == "unet" and parent_method(cfg, "knmi-ft") is None


def test_the_model_card_records_the_package_versions(tmp_path):
    """The card recorded torch and Python only; numpy, xarray, dask, zarr, pandas and climai's
    versions were in manifest.json alone, which does not travel with a model file."""
    from climai.manifest import package_versions
    from climai.stages.train import run as run_train

    unet = {"epochs": 1, "patch": 16, "batch": 4, "channels": [8, 16], "patches_per_step": 1}
    cfg = load_config(prepare_campaign(tmp_path, methods={"bicubic": None, "unet": unet}))
    ctx = StageContext(cfg, config_sha256(stage_slice(cfg, "train", "unet")), "train", 2)
    run_train(ctx, "unet")
    card = load_model_file(ctx.paths.model("unet"))[1]
    assert card["provenance"]["packages"] == package_versions()
    assert {"numpy", "xarray", "zarr", "torch"} <= set(card["provenance"]["packages"])


def test_a_methods_own_seed_trains_another_model_of_the_same_prepared_data(tmp_path):
    """methods.<m>.seed: null trains with the campaign's seed, the same number given to the
    method trains the same weights, another number other weights (recorded in the card), all
    from one prepared dataset (the campaign's seed, which the data depend on, is unchanged)."""
    from climai.stages.train import run as run_train

    unet = {"epochs": 1, "patch": 16, "batch": 4, "channels": [8, 16], "patches_per_step": 1}
    methods = {
        "bicubic": None,
        "unet": unet,
        "unet-zero": {**unet, "type": "unet", "seed": 0},
        "unet-five": {**unet, "type": "unet", "seed": 5},
    }
    path = prepare_campaign(tmp_path, methods=methods, seed=0)
    cfg = load_config(path)
    weights, seeds = {}, {}
    for method in ("unet", "unet-zero", "unet-five"):
        ctx = StageContext(cfg, config_sha256(stage_slice(cfg, "train", method)), "train", 2)
        run_train(ctx, method)
        state, card = load_model_file(ctx.paths.model(method))
        weights[method], seeds[method] = state, card["provenance"]["seed"]
    assert seeds == {"unet": 0, "unet-zero": 0, "unet-five": 5}
    for key, w in weights["unet"].items():
        torch.testing.assert_close(weights["unet-zero"][key], w, rtol=0, atol=0)
    assert any(not torch.equal(weights["unet-five"][k], w) for k, w in weights["unet"].items())


def test_an_unreadable_parent_model_is_named_by_its_config_key_in_one_line(tmp_path):
    bad = tmp_path / "parent.pt"
    bad.write_bytes(b"not a torch file\n")
    with pytest.raises(ValueError) as err:
        load_parent(bad, "methods.unet-ft.init_from")
    message = str(err.value)
    assert message.startswith("methods.unet-ft.init_from: model file ")
    assert "is not a model file climai wrote" in message and "\n" not in message
    with pytest.raises(FileNotFoundError, match="methods.unet-ft.init_from: the parent model"):
        load_parent(tmp_path / "absent.pt", "methods.unet-ft.init_from")
