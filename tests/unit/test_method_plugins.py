"""A method type from a plugin package (entry point in ``climai.methods``): configured, trained
by climai's loop, saved, reloaded and run by inference, without any change to climai."""

from __future__ import annotations

import sys
from types import SimpleNamespace

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
LAYERED = MethodType(
    "emulator", TinyConvConfig, build="climai_tinyconv.net:build", layout="climai_tinyconv.net:layout"
)
BROKEN = MethodType("emulator", TinyConvConfig, build="climai_tinyconv.nosuch:build")
MISSING = MethodType("emulator", TinyConvConfig, build="climai_tinyconv.net:buidl")
TWO_ARGS = MethodType("emulator", TinyConvConfig, build="climai_tinyconv.net:build_two")
NO_BASE = MethodType("emulator", TinyConvConfig, build="climai_tinyconv.net:build_no_base")
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


def layout(cfg, groups):
    return {"name": "TinyConv", "width": cfg.width, "groups": groups}


def build_two(cfg, in_channels):
    return TinyConv(in_channels, in_channels, cfg.width)


class NoBase(TinyConv):
    def forward(self, x):  # forgets the base argument
        return self.head(self.body(x))


def build_no_base(cfg, in_channels, out_channels):
    return NoBase(in_channels, out_channels, cfg.width)
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
                            "notemu": "climai_tinyconv.method:NOT_AN_EMULATOR",
                            "layered": "climai_tinyconv.method:LAYERED",
                            "broken": "climai_tinyconv.method:BROKEN",
                            "missing": "climai_tinyconv.method:MISSING",
                            "twoargs": "climai_tinyconv.method:TWO_ARGS",
                            "nobase": "climai_tinyconv.method:NO_BASE"}},
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(root))
    yield "tinyconv"
    for name in ("tinyconv", "notemu", "layered", "broken", "missing", "twoargs", "late", "nobase"):
        METHOD_TYPES.unregister(name)
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

    with pytest.raises(
        ConfigError, match=r"\n  config key 'methods.conv.width' = 0: Input should be greater"
    ):
        validate_config({"methods": {"conv": {"type": "tinyconv", "width": 0}}})
    # an unknown key of a plugin's config: a close match and the keys allowed, as for climai's own
    with pytest.raises(ConfigError) as err:
        validate_config({"methods": {"conv": {"type": "tinyconv", "widht": 3}}})
    line = str(err.value).splitlines()[1].strip()
    assert line.startswith(
        "config key 'methods.conv.widht' is not known (did you mean 'width'?); allowed here: "
    )
    assert {"width", "epochs", "lr", "type"} <= set(line.split("allowed here: ")[1].split(", "))
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


def test_a_method_named_after_a_type_must_be_of_that_type(tinyconv):
    """The reports find bicubic, the reference of every ratio, by its name: a method called
    after a type (climai's own or a plugin's) cannot hold another type."""
    from climai.config import validate_config

    for name, kind in (("bicubic", "tinyconv"), ("unet", "unet-crps"), ("tinyconv", "unet")):
        with pytest.raises(ConfigError, match=rf"'methods.{name}.type' = '{kind}': '{name}' is"):
            validate_config({"methods": {name: {"type": kind}}})
    cfg = validate_config({"methods": {"bicubic-conv": {"type": "tinyconv"}}})
    assert cfg.methods.type_of("bicubic") == "bicubic"
    assert cfg.methods.type_of("bicubic-conv") == "tinyconv"


def test_a_plugin_named_like_a_builtin_type_is_reported(tmp_path, monkeypatch):
    from climai.config import validate_config

    write_plugin_package(
        tmp_path,
        "climai-shadow",
        {"climai_shadow/__init__.py": "", "climai_shadow/method.py": METHOD.replace(
            "climai_tinyconv", "climai_shadow")},
        {"climai.methods": {"unet": "climai_shadow.method:METHOD"}},
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match=r"method plugin 'unet' \(entry point 'climai_shadow"):
        cfg = validate_config({"methods": {"m1": {"type": "unet", "channels": [8, 16]}}})
    assert cfg.methods.get("m1").channels == [8, 16]  # climai's own U-Net, as the warning says


def test_a_plugin_type_sweeps(tinyconv):
    from climai.config import validate_config

    cfg = validate_config(
        {"methods": {"conv": {"type": "tinyconv", "epochs": 1, "sweep": {"width": [2, "4"]}}}}
    )
    assert cfg.sweeps == {"conv": ["conv-width2", "conv-width4"]}
    assert [cfg.methods.get(m).width for m in cfg.sweeps["conv"]] == [2, 4]
    assert cfg.methods.get("conv") is None
    with pytest.raises(ConfigError, match=r"'methods.conv.sweep.widht' is not a setting of"):
        validate_config({"methods": {"conv": {"type": "tinyconv", "sweep": {"widht": [2]}}}})
    with pytest.raises(
        ConfigError, match=r"'methods.b2.sweep': only trained methods \(emulators\) sweep"
    ):
        validate_config({"methods": {"b2": {"type": "bicubic", "sweep": {"x": [1]}}}})


def test_a_plugin_without_a_layout_cannot_be_fine_tuned(tinyconv):
    from climai.config import validate_config

    with pytest.raises(ConfigError, match=r"methods.ft.init_from: method type 'tinyconv' cannot"):
        validate_config(
            {"methods": {"ft": {"type": "tinyconv", "init_from": {"campaign": "a", "method": "b"}}}}
        )


def test_a_plugin_with_a_layout_is_fine_tuned_from_its_parent(tinyconv, tmp_path):
    from climai.io.checkpoints import load_model_file
    from climai.stages import StageContext
    from climai.stages.train import run as run_train

    methods = {
        "conv": {"type": "layered", "width": 4, "epochs": 1, "patch": 16, "batch": 4, "lr": 0.01},
        "conv-ft": {"type": "layered", "width": 4, "epochs": 1, "patch": 16, "batch": 4,
                    "lr": 1e-9, "ema_decay": 0, "init_from": {"method": "conv"}},
        "conv-wide": {"type": "layered", "width": 6, "epochs": 1, "patch": 16, "batch": 4,
                      "init_from": {"method": "conv"}},
    }  # fmt: skip
    cfg = load_config(prepare_campaign(tmp_path, methods=methods))
    torch.set_num_threads(2)

    def train(method: str) -> None:
        sha = config_sha256(stage_slice(cfg, "train", method))
        run_train(StageContext(cfg, sha, "train", 2), method)

    train("conv")
    train("conv-ft")
    parent, _ = load_model_file(cfg.campaign_dir / "models/conv/model.pt")
    child, card = load_model_file(cfg.campaign_dir / "models/conv-ft/model.pt")
    assert card["lineage"][0]["method"] == "conv"
    assert card["architecture"]["name"] == "TinyConv"
    # started from the parent's weights: at a learning rate of 1e-9 they barely move
    assert parent.keys() == child.keys()
    for key, value in parent.items():
        assert torch.allclose(child[key], value, atol=1e-6), key
    with pytest.raises(ValueError, match=r"architecture width: parent 4, here 6"):
        train("conv-wide")
    assert not (cfg.campaign_dir / "models/conv-wide/model.pt").exists()


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ("broken", r"build 'climai_tinyconv.nosuch:build': no module 'climai_tinyconv.nosuch'"),
        ("missing", r"build 'climai_tinyconv.net:buidl': .*net.py defines no 'buidl'"),
        (
            "twoargs",
            r"build 'climai_tinyconv.net:build_two' must be build\(cfg, in_channels, "
            r"out_channels\); .*net.py line \d+ defines build_two\(cfg, in_channels\)",
        ),
    ],
)
def test_a_plugin_build_that_is_missing_or_takes_other_arguments_stops_validate(
    tinyconv, plugin, message
):
    """Found in the plugin's source when the config is read (not mid-run), naming the plugin;
    the net module is not imported (no torch at parse time)."""
    from climai.config import validate_config

    with pytest.raises(ConfigError, match=rf"method plugin '{plugin}' .*is not a valid method: "):
        validate_config({"methods": {"m1": {"type": plugin}}})
    with pytest.raises(KeyError, match=message):
        method_type(plugin)
    assert "climai_tinyconv.net" not in sys.modules


def test_a_build_that_fails_when_called_names_the_method_type(tinyconv):
    """A type registered in-process skips the plugin checks: building it still names the type
    and the signature expected, not a bare TypeError from inside the training loop."""
    from climai.config import validate_config
    from climai.registry import MethodType
    from climai.training.loop import build_model

    tiny = method_type("tinyconv")
    cfg = validate_config({"methods": {"m1": {"type": "tinyconv"}}}).methods.get("m1")
    late = cfg.model_copy(update={"type": "late"})
    spec = SimpleNamespace(in_channels=5, out_channels=2)
    METHOD_TYPES.register("late", MethodType("emulator", tiny.config, build=lambda cfg, n: n))
    with pytest.raises(ValueError, match=r"method type 'late': build .* must be build\(cfg, "):
        build_model(late, spec)
    METHOD_TYPES.register("late", MethodType("emulator", tiny.config, build="no_such_mod:f"))
    with pytest.raises(ValueError, match=r"method type 'late': .*'no_such_mod:f' cannot be imp"):
        build_model(late, spec)


def test_a_plugin_network_whose_forward_takes_no_base_is_named_before_training(tinyconv, tmp_path):
    """net(x, base) is the documented call: a forward(x) failed at the first batch with a bare
    TypeError from inside the loop; now train stops as it builds the network, naming the type."""
    from climai.stages import StageContext
    from climai.stages.train import run as run_train

    methods = {"conv": {"type": "nobase", "epochs": 1, "patch": 16, "batch": 4}}
    cfg = load_config(prepare_campaign(tmp_path, methods=methods))
    with pytest.raises(
        TypeError,
        match=r"method type 'nobase': its network's forward must take \(x, base\) "
        r"\(docs/add-an-emulator.md\); NoBase.forward has the signature \(x\)",
    ):
        run_train(StageContext(cfg, "x", "train", 1), "conv")
    assert not (cfg.campaign_dir / "models/conv/model.pt").exists()
