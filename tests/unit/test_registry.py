"""The method registry: climai's own method types follow the rules a plugin's must follow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from climai import registry
from climai.config import validate_config
from climai.data.prepared import PreparedDataset
from climai.registry import MethodType, check_method_type
from climai.testing import TINY_CAMPAIGN, create_prepared_test_data


@pytest.mark.parametrize("name", list(registry.BUILTIN_METHOD_TYPES))
def test_builtin_method_types_pass_the_plugin_checks(name):
    mtype = registry.BUILTIN_METHOD_TYPES[name]
    assert check_method_type(name, mtype, builtin=True) is mtype
    assert mtype.config.model_fields["type"].default == name


@pytest.mark.parametrize(
    "name", [n for n, t in registry.BUILTIN_METHOD_TYPES.items() if t.kind == "emulator"]
)
def test_builtin_emulators_build_their_network_from_the_registry(name):
    mtype = registry.BUILTIN_METHOD_TYPES[name]
    cfg = mtype.config()
    net = mtype.builder()(cfg, 5, 2)
    assert net(torch.zeros(1, 5, 16, 16), torch.zeros(1, 2, 16, 16)).shape == (1, 2, 16, 16)
    assert bool(net.noise_channels) == mtype.stochastic
    layout = mtype.layout_of(cfg, {"all": ["tas", "pr"]})
    assert layout["channels"] == list(cfg.channels)
    assert layout["noise_channels"] == net.noise_channels


def test_builtin_baselines_predict_the_split_from_the_prepared_dataset():
    cfg = validate_config(
        {**TINY_CAMPAIGN, "methods": {"nearest": {}, "quantile-mapping": {}, "unet": None}}
    )
    prep = PreparedDataset(create_prepared_test_data(scale=cfg.scale))
    lr = prep.split("test").lr_stack(cfg.variable_names)
    for method in ("bicubic", "nearest", "quantile-mapping"):
        baseline = registry.method_type(method).predictor()(prep, cfg, method)
        values = baseline(lr)
        assert values.shape == (*lr.shape[:2], lr.shape[2] * cfg.scale, lr.shape[3] * cfg.scale)
        assert np.isfinite(values).any()
        assert bool(baseline.extra) == (method == "quantile-mapping")
    nearest = registry.method_type("nearest").predictor()(prep, cfg, "nearest")(lr)
    block = nearest[0, 0, : cfg.scale, : cfg.scale]
    np.testing.assert_array_equal(block, block[0, 0])  # nearest keeps the LR blocks


@pytest.mark.parametrize(
    ("mtype", "message"),
    [
        (MethodType("baseline", registry.BicubicConfig), "a baseline needs predict"),
        (MethodType("emulator", registry.UNetConfig), "an emulator needs build"),
        (
            MethodType("emulator", registry.BicubicConfig, build="m:f"),
            "must subclass EmulatorConfig",
        ),
        (
            MethodType("emulator", registry.UNetConfig, build="m:f", stochastic=True),
            "needs the keys ['members', 'train_members']",
        ),
        (MethodType("baseline", registry.BicubicConfig, predict="m:f", default=True), "default"),
    ],
)
def test_incomplete_method_types_are_refused_with_what_is_missing(mtype, message):
    with pytest.raises(TypeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_method_type("x", mtype)
