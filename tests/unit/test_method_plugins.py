"""A method type from a plugin package (entry point in ``climai.methods``): configured, trained
by climai's loop, saved, reloaded and run by inference, without any change to climai."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from climai.config import ConfigError, EmulatorConfig, config_sha256, load_config, stage_slice
from climai.registry import METHOD_TYPES, method_kind, method_type
from climai.testing import prepare_campaign, write_plugin_package

METHOD = '''
from pydantic import Field

from climai.config import EmulatorConfig
from climai.registry import MethodType


class TinyConvConfig(EmulatorConfig):
    """A small residual conv net on the bicubic field."""

    width: int = Field(8, ge=1, description="Hidden channels.")


METHOD = MethodType("emulator", TinyConvConfig, build="climai_tinyconv.net:build")
NOT_AN_EMULATOR = MethodType("baseline", TinyConvConfig)
'''

NET = """
from torch import nn


class TinyConv(nn.Module):
    def __init__(self, cin, cout, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.SiLU())
        self.head = nn.Conv2d(width, cout, 3, padding=1)

    def forward(self, x, base):
        return base + self.head(self.body(x))


def build(cfg, in_channels, out_channels):
    return TinyConv(in_channels, out_channels, cfg.width)
"""


@pytest.fixture
def tinyconv(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    root = tmp_path_factory.mktemp("site")
    write_plugin_package(
        root,
        "climai-tinyconv",
        {"climai_tinyconv/__init__.py": "", "climai_tinyconv/method.py": METHOD,
         "climai_tinyconv/net.py": NET},
        {"climai.methods": {"tinyconv": "climai_tinyconv.method:METHOD",
                            "notemu": "climai_tinyconv.method:NOT_AN_EMULATOR"}},
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(root))
    yield "tinyconv"
    METHOD_TYPES.unregister("tinyconv")
    for mod in [m for m in sys.modules if m.startswith("climai_tinyconv")]:
        del sys.modules[mod]


def test_a_plugin_type_is_configured_under_a_method_name(tinyconv):
    from climai.config import validate_config

    cfg = validate_config({"methods": {"conv": {"type": "tinyconv", "width": 4, "epochs": 2}}})
    mcfg = cfg.methods.get("conv")
    assert isinstance(mcfg, EmulatorConfig) and mcfg.width == 4 and mcfg.epochs == 2
    assert method_kind(cfg.methods.type_of("conv")) == "emulator"
    # the config round-trips through a stage slice (what the Snakemake rules pass)
    from climai.config import canonical_json, from_stage_json

    again, _ = from_stage_json(canonical_json(stage_slice(cfg, "train", "conv")))
    assert again.methods.get("conv") == mcfg
    assert "torch" not in {m.split(".")[0] for m in sys.modules if m.startswith("climai_tiny")}


def test_plugin_config_errors_name_the_method_key(tinyconv):
    from climai.config import validate_config

    with pytest.raises(ConfigError, match=r"'methods.conv.width': Input should be greater"):
        validate_config({"methods": {"conv": {"type": "tinyconv", "width": 0}}})
    with pytest.raises(ConfigError, match=r"'methods.conv.widht': Extra inputs"):
        validate_config({"methods": {"conv": {"type": "tinyconv", "widht": 3}}})
    with pytest.raises(ConfigError, match=r"type must be one of: bicubic, .*unet-crps, .*tinyconv"):
        validate_config({"methods": {"conv": {"type": "tinycon"}}})


def test_a_baseline_plugin_without_predict_is_refused(tinyconv):
    with pytest.raises(
        KeyError, match=r"method plugin 'notemu' .* is not a valid method: a baseline needs predict"
    ):
        method_type("notemu")


def test_the_training_loop_trains_a_plugin_network_and_inference_reloads_it(tinyconv, tmp_path):
    from climai.inference.predict import load_emulator
    from climai.io import open_store
    from climai.stages import StageContext
    from climai.stages.infer import run as run_infer
    from climai.stages.train import run as run_train

    methods = {"conv": {"type": "tinyconv", "epochs": 2, "patch": 16, "batch": 4, "lr": 0.01}}
    cfg = load_config(prepare_campaign(tmp_path, methods=methods))
    torch.set_num_threads(2)
    run_train(
        StageContext(cfg, config_sha256(stage_slice(cfg, "train", "conv")), "train", 2), "conv"
    )
    history = (cfg.campaign_dir / "models/conv/history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs
    emulator, _spec, card = load_emulator(cfg.campaign_dir / "models/conv/model.pt")
    assert card["architecture"]["type"] == "tinyconv"
    net = emulator.nets["all"]
    assert type(net).__name__ == "TinyConv" and net.head.weight.abs().sum() > 0
    run_infer(StageContext(cfg, "x", "infer", 2), "conv")
    out = open_store(cfg.campaign_dir / "downscaled/conv/test.zarr")
    assert set(cfg.variable_names) <= set(out.data_vars)
    assert np.isfinite(out["tas"].values).all()
