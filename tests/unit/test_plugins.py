"""Registries by name with third-party plugins through entry points (climai/plugins.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climai.config import ConfigError, validate_config
from climai.converters import CONVERTERS, get_converter
from climai.evaluation.metrics import CONTRACT_METRICS, METRICS, MetricInput, compute_metrics
from climai.io.readers import READERS, SourceError, open_source
from climai.plugins import PluginError, Registry
from climai.testing import write_plugin_package

PLUGIN = '''
import numpy as np
import xarray as xr

from climai.evaluation.metrics import Metric

IMPORTS = []  # module-level side effect: records that the module was imported


def max_error(inp):
    """Largest absolute error over valid cells."""
    return float(np.nanmax(np.abs(inp.point - inp.truth)))


wet_max = Metric(lambda inp: float(np.nanmax(inp.pred)), precipitation_only=True)
no_streams = Metric(max_error, accumulator=lambda: None)  # its accumulator takes no Streams


def half(da, factor: float = 0.5):
    return (da * factor).assign_attrs(units=da.attrs["units"])


def ramp_of(spec, names):  # a reader without the key argument
    return None


def ramp(spec, names, key):
    n = int(spec.options.get("n", 4))
    values = np.arange(n * 3 * 2, dtype=np.float32).reshape(n, 3, 2)
    return xr.Dataset({v: (("time", "y", "x"), values, {"units": "K"}) for v in ("tas", "pr")})
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package ``climai_testplug`` with one metric, converter and reader, on ``sys.path``."""
    write_plugin_package(
        tmp_path,
        "climai-testplug",
        {"climai_testplug/__init__.py": PLUGIN, "climai_broken/__init__.py": "import nope\n"},
        {
            "climai.metrics": {
                "max_error": "climai_testplug:max_error",
                "wet_max": "climai_testplug:wet_max",
                "broken_metric": "climai_broken:fn",
                "no_streams": "climai_testplug:no_streams",
            },
            "climai.converters": {"half": "climai_testplug:half"},
            "climai.readers": {
                "ramp": "climai_testplug:ramp",
                "ramp_of": "climai_testplug:ramp_of",
                "ramp_broken": "climai_broken:read",
            },
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "climai_testplug"
    for registry in (METRICS, CONVERTERS, READERS):
        for name in ("max_error", "wet_max", "no_streams", "half", "ramp", "ramp_of"):
            registry.unregister(name)
    sys.modules.pop("climai_testplug", None)


def test_plugins_are_listed_after_the_builtins_without_being_imported(plugin):
    names = METRICS.names()
    assert names[: len(METRICS.builtins)] == list(METRICS.builtins)
    assert {"max_error", "wet_max", "broken_metric"} <= set(names)
    assert plugin not in sys.modules and "climai_broken" not in sys.modules


def test_unknown_names_list_the_plugins_too(plugin):
    with pytest.raises(
        KeyError, match=r"unknown metric 'maxerror'; valid metrics: rmse, .*max_error"
    ):
        METRICS.get("maxerror")
    with pytest.raises(ValueError, match=r"unknown converter 'halve'; valid converters: .*half"):
        get_converter("halve")
    with pytest.raises(
        ConfigError, match=r"unknown metric\(s\) \['maxerr'\]; valid metrics: .*wet_max"
    ):
        validate_config({"evaluate": {"metrics": [*CONTRACT_METRICS, "maxerr"]}})


def test_a_plugin_metric_is_configured_and_computed(plugin):
    cfg = validate_config({"evaluate": {"metrics": [*CONTRACT_METRICS, "max_error", "wet_max"]}})
    truth = np.zeros((2, 16, 16))
    pred = truth.copy()
    pred[1, 3, 4] = -2.5
    m = compute_metrics(MetricInput(pred, truth, kind="temperature"), names=cfg.evaluate.metrics)
    assert m["max_error"] == 2.5
    assert "wet_max" not in m  # precipitation only
    assert compute_metrics(
        MetricInput(pred + 3, truth, kind="precipitation"), names=["wet_max"]
    ) == {"wet_max": 3.0}


def test_default_metrics_are_the_builtin_ones(plugin):
    assert validate_config({}).evaluate.metrics == list(METRICS.builtins)


def test_a_broken_plugin_names_its_entry_point(plugin):
    with pytest.raises(
        PluginError,
        match=r"metric plugin 'broken_metric' \(entry point "
        r"'climai_broken:fn' in group 'climai.metrics'\) cannot be loaded: "
        r"ModuleNotFoundError",
    ):
        METRICS.get("broken_metric")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("broken_metric", r"'broken_metric' .* cannot be loaded: ModuleNotFoundError"),
        (
            "no_streams",
            r"'no_streams' .* is not a valid metric: its accumulator \(Streams\) -> "
            r"Accumulator must take one argument, .* has the signature \(\)",
        ),
    ],
)
def test_a_broken_metric_plugin_stops_the_checks_before_any_job(plugin, name, message):
    """Not the evaluate job after every training: the workflow's and validate's checks load
    the plugin metrics a campaign names."""
    from climai.io.headers import check_before_jobs

    cfg = validate_config({"evaluate": {"metrics": [*CONTRACT_METRICS, name]}})
    with pytest.raises(
        ConfigError, match=rf"config key 'evaluate.metrics': metric plugin {message}"
    ):
        check_before_jobs(cfg, files=False)
    check_before_jobs(validate_config({"evaluate": {"metrics": [*CONTRACT_METRICS, "max_error"]}}))


def test_a_plugin_converter_is_found_by_name(plugin):
    da = xr.DataArray([2.0, 4.0], attrs={"units": "K"})
    np.testing.assert_allclose(get_converter("half")(da, factor=0.25).values, [0.5, 1.0])


def test_a_plugin_reader_is_a_config_source(plugin):
    target = {"source": "ramp", "options": {"n": 5}}
    cfg = validate_config(
        {"data": {"target": target, "static": {"x": {"source": "derived", "field": "x"}}}}
    )
    ds = open_source(cfg.data.target, ["tas"], "data.target")
    assert ds["tas"].shape == (5, 3, 2)
    with pytest.raises(SourceError, match=r"data.target: variable 'qq' is not in what reader "):
        open_source(cfg.data.target, ["qq"], "data.target")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ramp_broken", r"'ramp_broken' .* cannot be loaded: ModuleNotFoundError"),
        (
            "ramp_of",
            r"'ramp_of' .* is not a valid reader: expected a function \(spec, names, key\) -> "
            r"xarray.Dataset, .* has the signature \(spec, names\)",
        ),
    ],
)
def test_a_broken_reader_plugin_stops_the_checks_before_any_job(plugin, name, message):
    """Not the ingest job: the workflow's and validate's checks load a plugin reader."""
    from climai.io.headers import check_before_jobs

    static = {"x": {"source": "derived", "field": "x"}}
    cfg = validate_config({"data": {"target": {"source": name}, "static": static}})
    with pytest.raises(SourceError, match=rf"^data.target.source: reader plugin {message}"):
        check_before_jobs(cfg, cache=False)
    check_before_jobs(
        validate_config({"data": {"target": {"source": "ramp"}, "static": static}}), cache=False
    )


def test_an_unknown_source_lists_builtin_and_plugin_readers(plugin):
    with pytest.raises(
        ConfigError, match=r"unknown source 'rampp'; valid sources: .*plugins: ramp"
    ):
        validate_config({"data": {"target": {"source": "rampp"}}})


def test_a_registered_entry_shadows_nothing_and_is_removed():
    reg: Registry[int] = Registry("metric", {"a": 1})
    reg.register("b", 2)
    assert reg["b"] == 2 and "b" in reg and reg.names()[:2] == ["a", "b"]
    reg.unregister("b")
    assert "b" not in reg


def test_registries_import_no_torch():
    code = textwrap.dedent(
        """
        import sys
        import climai.config, climai.plugins, climai.registry
        climai.config.validate_config({})
        assert "torch" not in sys.modules, "torch imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
