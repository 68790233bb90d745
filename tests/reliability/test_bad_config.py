"""The bad-input battery: bad configs, bad source files and bad model files, each run through the
``climai`` command as a user runs it. Every case must exit 1 with a message that names the
culprit (key, file or variable) and what was expected, and leave no file behind (no output, no
temporary): the working folder holds exactly what the case put there."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

from climai import cli
from climai.config import ConfigError, load_config
from climai.io.checkpoints import save_model
from climai.testing import model_card_for, toy_feature_spec, trained_like_unet, write_cf_netcdf

PR = {"name": "pr", "units": "mm h-1", "kind": "precipitation"}
XY_STATIC = {"xk": {"source": "derived", "field": "x"}}
TIMES = pd.date_range("2020-06-01", periods=6, freq="h")
XY = np.arange(16) * 500.0


def files_campaign(target: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A campaign of one precipitation variable read from files (a 16 × 16 grid, scale 4)."""
    return {
        "campaign": "bad",
        "scale": 4,
        "variables": [PR],
        "data": {"target": target, "static": XY_STATIC},
        "methods": {"unet": None, "unet-crps": None},
        **extra,
    }


def netcdf(name: str = "pr.nc", **kw: Any) -> Callable[[Path], None]:
    """A factory of a CF NetCDF file of ``pr`` (mm h-1, 6 hourly steps, EPSG:3035) with the
    changes ``kw``: ``values``/``units``/``times``/``var``/``crs``/``poke`` (index → value)."""

    def make(root: Path) -> None:
        times = kw.get("times", TIMES)
        values = np.full((len(times), 16, 16), 0.5, np.float32)
        for index, value in kw.get("poke", {}).items():
            values[index] = value
        write_cf_netcdf(
            root / name,
            {kw.get("var", "pr"): (kw.get("values", values), kw.get("units", "mm h-1"))},
            XY,
            XY,
            crs=kw.get("crs", "EPSG:3035"),
            times=times,
        )

    return make


def nc_target(path: str = "pr.nc", **extra: Any) -> dict[str, Any]:
    return {"source": "netcdf", "path": path, **extra}


def zarr_store(root: Path) -> None:
    xr.Dataset({"pr": (("time", "y", "x"), np.zeros((2, 4, 4), np.float32))}).to_zarr(
        root / "in.zarr"
    )


def model_file(change: Callable[[dict[str, Any]], Any] | None = None) -> Callable[[Path], None]:
    """A factory of a small model file (random U-Net weights, a toy card) edited in place by
    ``change`` (its return value is ignored)."""

    def make(root: Path) -> None:
        spec = toy_feature_spec()
        model = trained_like_unet(spec, [8, 16])
        save_model(root / "model.pt", model.state_dict(), model_card_for(spec, [8, 16]))
        if change is None:
            return
        obj = torch.load(root / "model.pt", weights_only=True)
        change(obj)
        torch.save(obj, root / "model.pt")

    return make


def _truncate(root: Path) -> None:
    model_file()(root)
    data = (root / "model.pt").read_bytes()
    (root / "model.pt").write_bytes(data[: len(data) // 2])


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned",))


def _pickle_payload(root: Path) -> None:
    (root / "model.pt").write_bytes(pickle.dumps({"state_dict": _Payload(), "card": {}}))


@dataclass
class Case:
    """One bad input: the config (``None``: none), the files ``make`` writes, the command, and
    the regexes its message must match (the culprit, and what was expected)."""

    id: str
    config: dict[str, Any] | None
    expect: list[str]
    make: list[Callable[[Path], None]] = field(default_factory=list)
    command: str = "validate"


def config_case(id_: str, raw: dict[str, Any], *expect: str) -> Case:
    return Case(id_, raw, list(expect))


def ingest_case(id_: str, raw: dict[str, Any], make: list[Callable[[Path], None]], *expect: str):
    return Case(id_, raw, list(expect), make, "ingest")


def model_case(id_: str, make: Callable[[Path], None], *expect: str) -> Case:
    return Case(id_, None, list(expect), [make], "downscale")


CONFIG_CASES = [
    config_case("unknown-key", {"sclae": 4}, r"'sclae' is not known \(did you mean 'scale'\?\)"),
    config_case(
        "unknown-method-key",
        {"methods": {"unet": {"epoch": 3}}},
        r"'methods.unet.epoch' is not known \(did you mean 'epochs'\?\)",
    ),
    config_case(
        "unknown-method", {"methods": {"unett": {}}}, r"'methods.unett' is not known", r"'unet'"
    ),
    config_case("scale-type", {"scale": "eight"}, r"'scale' = \"eight\"", "valid integer"),
    config_case("scale-small", {"scale": 1}, r"'scale' = 1", r"greater than or equal to 2"),
    config_case(
        "split-sum",
        {"split": {"train": 0.5, "val": 0.1, "test": 0.1}},
        r"train \+ val \+ test must be 1, got 0.7",
    ),
    config_case(
        "split-range",
        {"split": {"train": 1.2, "val": -0.1, "test": -0.1}},
        r"split.train=1.2 must be a fraction between 0 and 1",
    ),
    config_case(
        "nx-multiple", {"data": {"target": {"nx": 100}}}, r"data.target.nx=100", "multiple of scale"
    ),
    config_case(
        "patch-multiple",
        {"methods": {"unet": {"patch": 60}}},
        r"methods.unet.patch=60 is not a multiple of scale=8",
    ),
    config_case(
        "patch-large",
        {"methods": {"unet": {"patch": 256}}},
        r"patch=256 is larger than the HR domain 128×128",
    ),
    config_case(
        "unet-levels",
        {"methods": {"unet": {"patch": 8, "channels": [8, 16, 32, 64, 128]}}},
        r"methods.unet.patch=8 must be a multiple of 16 for 5 U-Net levels",
    ),
    config_case("results-dotdot", {"results": "../../etc"}, r"'../../etc' must not contain '..'"),
    config_case(
        "results-braces",
        {"results": "out/{method}"},
        r"results folder 'out/\{method\}'",
        r"without \['\{', '\}'\].*allowed: letters",
    ),
    config_case(
        "results-glob", {"results": "out*"}, r"results folder 'out\*'", r"without \['\*'\]"
    ),
    config_case("results-empty", {"results": " "}, r"results folder must not be empty"),
    config_case("campaign-slash", {"campaign": "a/b"}, r"campaign name 'a/b' must be letters"),
    config_case(
        "variable-shell",
        {"variables": [{"name": "x; touch pwned", "units": "K"}]},
        r"variable name 'x; touch pwned' must be letters, digits",
    ),
    config_case(
        "variable-twice",
        {"variables": [{"name": "tas", "units": "K"}, {"name": "tas", "units": "K"}]},
        r"variables: names must be unique, got \['tas', 'tas'\]",
    ),
    config_case(
        "variable-kind",
        {"variables": [{"name": "tas", "units": "K", "kind": "rain"}]},
        r"'variables.0.kind' = \"rain\"",
        r"'precipitation', 'temperature', 'generic' or 'non-negative'",
    ),
    config_case(
        "toy-variable",
        {"variables": [{"name": "huss", "units": "1"}]},
        r"variables \['huss'\] are not in the synthetic toy world; it provides tas, pr",
    ),
    config_case("no-variables", {"variables": []}, r"'variables' = \[\]", "at least 1 item"),
    config_case("lr-zero", {"methods": {"unet": {"lr": 0}}}, r"'methods.unet.lr' = 0", "than 0"),
    config_case(
        "epochs-zero", {"methods": {"unet": {"epochs": 0}}}, r"'methods.unet.epochs' = 0", "1"
    ),
    config_case(
        "band-order", {"evaluate": {"bands": [[8, 4]]}}, r"band \[8.0, 4.0\] must be \[lo, hi\]"
    ),
    config_case("seed-negative", {"seed": -1}, r"'seed' = -1", "greater than or equal to 0"),
    config_case(
        "init-from-campaign-dotdot",
        {"methods": {"ft": {"type": "unet", "init_from": {"campaign": "../x"}}}},
        r"init_from.campaign '../x' must be a campaign name",
        r"no '/', '..' or absolute path",
    ),
    config_case(
        "init-from-campaign-absolute",
        {"methods": {"ft": {"type": "unet", "init_from": {"campaign": "/etc"}}}},
        r"init_from.campaign '/etc' must be a campaign name",
    ),
    config_case(
        "init-from-method-path",
        {"methods": {"ft": {"type": "unet", "init_from": {"method": "../../m"}}}},
        r"init_from.method '../../m' must be a method name",
        r"lower-case letters, digits",
    ),
    config_case(
        "init-from-unknown-method",
        {"methods": {"ft": {"type": "unet", "init_from": {"method": "nope"}}}},
        r"methods.ft.init_from.method='nope' is not a trained method of campaign 'toy'",
        r"trained methods: unet",
    ),
    config_case(
        "init-from-missing-file",
        {"methods": {"ft": {"type": "unet", "init_from": "absent.pt"}}},
        r"methods.ft.init_from: the parent model 'absent.pt' does not exist",
    ),
    config_case(
        "init-from-untrained-campaign",
        {"methods": {"ft": {"type": "unet", "init_from": {"campaign": "other", "method": "unet"}}}},
        r"methods.ft.init_from: the parent model 'results/other/models/unet/model.pt' does not "
        r"exist; train it first",
    ),
    config_case(
        "train-on-unprepared-campaign",
        {"methods": {"unet": {"train_on": ["other"], "normalisation": "physical"}}},
        r"methods.unet.train_on: campaign 'other' has no prepared data at "
        r"'results/other/prep/dataset.zarr'; run it up to preprocess first",
    ),
    config_case(
        "secret-in-storage-options",
        files_campaign(
            {"source": "zarr", "path": "s3://b/x.zarr", "storage_options": {"secret": "s3cr3t"}}
        ),
        r"storage_options holds secret-looking option\(s\) \['secret'\]",
        r"storage_options_env: \{secret: ENV_VARIABLE\} or in a credentials_file",
    ),
    config_case(
        "nested-secret",
        files_campaign(
            {
                "source": "zarr",
                "path": "s3://b/x.zarr",
                "storage_options": {"client_kwargs": {"aws_secret_access_key": "s3cr3t"}},
            }
        ),
        r"\['client_kwargs.aws_secret_access_key'\]",
        r"storage_options_env",
    ),
    config_case(
        "env-name",
        files_campaign(
            {"source": "zarr", "path": "s3://b/x.zarr", "storage_options_env": {"key": "A-B"}}
        ),
        r"storage_options_env values must be environment variable names",
        r"\['A-B'\]",
    ),
]


def _outside_rule(root: Path) -> None:
    (root.parent / "outside").mkdir(exist_ok=True)
    (root.parent / "outside" / "evil.smk").write_text('shell("touch pwned")\n')


def _linked_rule(root: Path) -> None:
    _outside_rule(root)
    (root / "rules").mkdir()
    (root / "rules" / "link.smk").symlink_to(root.parent / "outside" / "evil.smk")


RULE_CASES = [
    Case(
        "rules-absolute-outside",
        {"rules": ["{outside}/evil.smk"]},
        [r"rule file '.*/outside/evil.smk' \(item 0\) resolves to", "outside the working folder"],
        [_outside_rule],
    ),
    Case(
        "rules-dotdot",
        {"rules": ["../outside/evil.smk"]},
        [r"rule file '../outside/evil.smk'", r"must lie inside the working folder"],
        [_outside_rule],
    ),
    Case(
        "rules-symlink",
        {"rules": ["rules/link.smk"]},
        [r"rule file 'rules/link.smk' \(item 0\) resolves to '.*outside/evil.smk'", "outside"],
        [_linked_rule],
    ),
    Case(
        "rules-missing",
        {"rules": ["rules/nope.smk"]},
        [r"rule file 'rules/nope.smk' \(item 0\) does not exist", "relative to the working"],
    ),
]

WITH_INPUT = files_campaign(nc_target())
WITH_INPUT["data"]["input"] = nc_target("lr.nc")

FILE_CASES = [
    ingest_case(
        "missing-variable",
        files_campaign(nc_target(), variables=[{**PR, "source_name": "precip"}]),
        [netcdf()],
        r"data.target: variable 'precip' is not in 'pr.nc'; variables there: pr",
    ),
    ingest_case(
        "unknown-units",
        files_campaign(nc_target()),
        [netcdf(units="bananas")],
        r"variable 'pr' in .*pr.nc.*: unknown units 'bananas'; known units are CF/UDUNITS",
    ),
    ingest_case(
        "wrong-units",
        files_campaign(nc_target()),
        [netcdf(units="K")],
        r"variable 'pr'.*pr.nc.*cannot convert 'K' \(temperature\) to 'mm h-1'",
    ),
    ingest_case(
        "no-units",
        files_campaign(nc_target()),
        [netcdf(units="")],
        r"variable 'pr' in .*pr.nc.* has no 'units' attribute; expected units convertible",
    ),
    ingest_case(
        "missing-file",
        files_campaign(nc_target("nothere.nc")),
        [],
        r"data.target.path: file 'nothere.nc' does not exist",
    ),
    ingest_case(
        "empty-glob",
        files_campaign(nc_target("in/*.nc")),
        [],
        r"data.target.path: glob 'in/\*.nc' matches no file",
    ),
    ingest_case(
        "zero-byte-file",
        files_campaign(nc_target()),
        [lambda root: (root / "pr.nc").write_bytes(b"")],
        r"data.target: cannot read NetCDF file 'pr.nc' \(truncated or not NetCDF\?\)",
    ),
    ingest_case(
        "times-decreasing",
        files_campaign(nc_target()),
        [netcdf(times=TIMES[::-1])],
        r"data.target: times in 'pr.nc' are not increasing",
    ),
    ingest_case(
        "times-duplicated",
        files_campaign(nc_target()),
        [netcdf(times=TIMES[[0, 1, 1, 2, 3, 4]])],
        r"data.target: time 2020-06-01T01:00:00 appears more than once in 'pr.nc'",
    ),
    ingest_case(
        "time-axis-empty",
        files_campaign(nc_target()),
        [netcdf(times=TIMES[:0])],
        r"data.target: the time axis 'time' of 'pr.nc' is empty \(0 steps\)",
        "expected at least one time step",
    ),
    ingest_case(
        "files-overlap",
        files_campaign(nc_target(["a.nc", "b.nc"])),
        [netcdf("a.nc"), netcdf("b.nc", times=TIMES + pd.Timedelta("3h"))],
        r"data.target: files overlap in time: .*a.nc.* ends 2020-06-01T05:00:00 and .*b.nc.* "
        r"starts 2020-06-01T03:00:00",
    ),
    ingest_case(
        "no-crs",
        files_campaign(nc_target()),
        [netcdf(crs=None)],
        r"data.target: variable 'pr' has no grid_mapping",
        r"set the source's 'crs' \(e.g. crs: EPSG:3067\)",
    ),
    ingest_case(
        "all-nan",
        files_campaign(nc_target()),
        [netcdf(values=np.full((6, 16, 16), np.nan, np.float32))],
        r"data.target: variable\(s\) 'pr' are NaN at every time step inside the domain",
    ),
    ingest_case(
        "target-plus-inf",
        files_campaign(nc_target()),
        [netcdf(poke={(2, 3, 4): np.inf})],
        r"variable 'pr' in data.target 'pr.nc' has 1 infinite value\(s\)",
        r"expected finite values or NaN.*data.target.missing_value",
    ),
    ingest_case(
        "target-negative-precipitation",
        files_campaign(nc_target()),
        [netcdf(poke={(1, 0, 0): -3.0})],
        r"variable 'pr' in data.target 'pr.nc' has negative precipitation \(minimum -3 mm h-1\)",
        r"expected values >= 0.*set data.target.missing_value",
    ),
    ingest_case(
        "input-plus-inf",
        WITH_INPUT,
        [netcdf(), netcdf("lr.nc", poke={(0, 5, 5): np.inf})],
        r"variable 'pr' in data.input 'lr.nc' has \d+ infinite value\(s\)",
        r"data.input.missing_value",
    ),
    ingest_case(
        "input-negative-precipitation",
        WITH_INPUT,
        [netcdf(), netcdf("lr.nc", values=np.full((6, 16, 16), -1.0, np.float32))],
        r"variable 'pr' in data.input 'lr.nc' has negative precipitation",
        r"set data.input.missing_value",
    ),
    ingest_case(
        "domain-outside",
        files_campaign(nc_target(), domain={"x": [1e7, 2e7], "y": [1e7, 2e7]}),
        [netcdf()],
        r"domain is outside the data",
    ),
    ingest_case(
        "credentials-file-missing",
        files_campaign({"source": "zarr", "path": "in.zarr", "credentials_file": "creds.yaml"}),
        [zarr_store],
        r"data.target.credentials_file: cannot read 'creds.yaml'",
    ),
    ingest_case(
        "storage-env-unset",
        files_campaign(
            {"source": "zarr", "path": "in.zarr", "storage_options_env": {"key": "CLIMAI_UNSET"}}
        ),
        [zarr_store],
        r"data.target.storage_options_env.key: environment variable 'CLIMAI_UNSET' is not set",
    ),
]

MODEL_CASES = [
    model_case("model-missing", lambda root: None, r"model file 'model.pt' does not exist"),
    model_case(
        "model-truncated", _truncate, r"model file 'model.pt' is truncated or damaged \(\d+ bytes; "
    ),
    model_case(
        "model-pickle",
        _pickle_payload,
        r"model file 'model.pt' is not a model file climai wrote: torch's weights-only loader "
        r"refuses it \(Unsupported operand \d+\); climai never runs a file's code",
    ),
    model_case(
        "model-not-a-model",
        lambda root: torch.save(torch.zeros(3), root / "model.pt"),
        r"model file 'model.pt' has no 'state_dict' and 'card'",
    ),
    model_case(
        "card-channels-mismatch",
        model_file(lambda obj: obj["card"]["architecture"].update(channels=[16, 32])),
        r"model file 'model.pt': its model card does not match its weights: RuntimeError",
        r"expected a card \(architecture, features\) that rebuilds exactly the saved networks",
    ),
    model_case(
        "card-without-features",
        model_file(lambda obj: obj["card"].pop("features")),
        r"model file 'model.pt': its model card is incomplete or inconsistent:\n  "
        r"features: missing",
    ),
    model_case(
        "card-without-grid",
        model_file(lambda obj: obj["card"].pop("grid")),
        r"model file 'model.pt': its model card is incomplete or inconsistent:\n  "
        r"grid: missing hr_dx, hr_dy",
    ),
    model_case(  # a plugin's model where the plugin is not installed: the file is not damaged
        "card-type-not-installed",
        model_file(lambda obj: obj["card"]["architecture"].update(type="resconv")),
        r"model file 'model.pt' needs the method type 'resconv', which no installed package "
        r"provides: unknown method 'resconv'; valid methods: bicubic, .*; install the plugin",
    ),
    model_case(
        "weights-missing-layer",  # weights edited after saving: the card's checksum says so
        model_file(lambda obj: obj["state_dict"].pop(next(iter(obj["state_dict"])))),
        r"model file 'model.pt': its weights do not match the checksum its card records "
        r"\(weights_sha256 [0-9a-f]{12}…\): the file was changed or damaged after it was written",
    ),
]

CASES = [*CONFIG_CASES, *RULE_CASES, *FILE_CASES, *MODEL_CASES]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _argv(case: Case) -> list[str]:
    if case.command == "downscale":
        return ["downscale", "--model", "model.pt", "--input", "lr.zarr", "--output", "out.zarr"]
    threads = ["--threads", "1"] if case.command != "validate" else []
    return [case.command, "--configfile", "c.yaml", *threads]


def test_the_battery_holds_at_least_40_distinct_bad_inputs():
    assert len({c.id for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_1_naming_it_and_leaves_nothing(case, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("CLIMAI_UNSET", raising=False)
    for make in case.make:
        make(work)
    if case.config is not None:
        text = yaml.safe_dump(case.config).replace("{outside}", str(tmp_path / "outside"))
        (work / "c.yaml").write_text(text)
    before = _files(work)
    code = cli.main(_argv(case))
    err = capsys.readouterr().err
    assert code == 1, err[-2000:]
    message = err[err.find(f"climai {case.command}: error:") :]
    assert message, err[-2000:]
    for pattern in case.expect:
        assert re.search(pattern, message, re.DOTALL), (pattern, message)
    assert _files(work) == before  # no output, no temporary, nothing deleted
    assert not (tmp_path / "pwned").exists() and not (work / "pwned").exists()


#: Bad files that the header checks find before any job: ``climai validate`` names them too.
BEFORE_ANY_JOB = ("missing-variable", "unknown-units", "wrong-units", "no-units", "missing-file",
                  "domain-outside", "patch-beyond-the-files")  # fmt: skip
PATCH_CASE = ingest_case(
    "patch-beyond-the-files",
    files_campaign(nc_target(), methods={"unet": {"patch": 32}, "unet-crps": None}),
    [netcdf()],
    r"methods.unet.patch=32 is larger than the HR domain 16×16 \(data.target's grid cut to "
    r"domain and scale\): set a patch of at most 16 cells",
)


@pytest.mark.parametrize("case_id", BEFORE_ANY_JOB)
def test_validate_finds_what_the_workflow_checks_before_any_job(case_id, tmp_path, monkeypatch,
                                                                capsys):  # fmt: skip
    """``climai validate --configfile F`` checks the source files' headers, the domain and the
    patches as the workflow does when it builds the DAG (it said "config OK" before)."""
    case = next((c for c in CASES if c.id == case_id), PATCH_CASE)
    monkeypatch.chdir(tmp_path)
    for make in case.make:
        make(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(case.config))
    before = _files(tmp_path)
    assert cli.main(["validate", "--configfile", "c.yaml"]) == 1
    message = capsys.readouterr().err
    for pattern in case.expect:
        assert re.search(pattern, message, re.DOTALL), (pattern, message)
    assert _files(tmp_path) == before  # validate writes nothing (no header cache either)


def test_config_that_is_not_a_mapping(tmp_path):
    (tmp_path / "c.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping at the top level"):
        load_config(tmp_path / "c.yaml")


def test_config_with_a_yaml_syntax_error_names_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text("scale: [8\n")
    with pytest.raises(ConfigError, match=r"c.yaml' is not valid YAML"):
        load_config(tmp_path / "c.yaml")


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("seed: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "c.yaml")
    assert not (tmp_path / "pwned").exists()
