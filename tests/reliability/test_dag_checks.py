"""Errors where the user looks, and what a config may not do (docs/security.md):

- the source files' headers are checked when the Snakefile loads the config, so Snakemake's own
  output names a wrong variable, unknown units or a missing file before any job runs;
- a failed job's error reaches Snakemake's console (not only its log);
- secrets come from the environment, never on a job's command line, in a hash or the manifest;
- a rule file outside the working folder stops the Snakefile before it is read, even under -n;
- MRMS (issue 18): a wrong filter_by_keys or a missing units override stops before any job,
  a sentinel left unset stops ingest naming the key, writing nothing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from climai.config import config_sha256, stage_slice, validate_config
from climai.io.headers import check_headers
from climai.io.readers import SourceError
from climai.manifest import REDACTED, redact
from tests.conftest import run_snakemake, shared_data
from tests.reliability.test_bad_config import files_campaign, nc_target, netcdf

pytestmark = [pytest.mark.workflow]

SECRET = "AKIA-climai-test-secret-0123456789"


def _write(workdir: Path, raw: dict[str, Any]) -> str:
    (workdir / "c.yaml").write_text(yaml.safe_dump(raw))
    return str(workdir / "c.yaml")


def _outputs(workdir: Path) -> list[Path]:
    return sorted((workdir / "results").rglob("*")) if (workdir / "results").exists() else []


HEADER_CASES = [
    (
        "variable",
        files_campaign(nc_target(), variables=[{"name": "pr", "units": "mm h-1", "source_name": "x"}]),
        r"data.target: variable 'x' is not in 'pr.nc'; variables there: pr",
    ),
    (
        "units",
        files_campaign(nc_target(), variables=[{"name": "pr", "units": "K"}]),
        r"variable 'pr' in 'pr.nc' \(data.target\): cannot convert 'mm h-1' .* to 'K'",
    ),
    ("file", files_campaign(nc_target("gone.nc")), r"data.target.path: file 'gone.nc' does not exist"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("raw", "message"), [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES]
)
def test_snakemake_names_a_bad_source_before_any_job(tmp_path, raw, message):  # fmt: skip
    netcdf()(tmp_path)
    result = run_snakemake(tmp_path, "--configfile", _write(tmp_path, raw), "-n")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and re.search(message, out), out[-3000:]
    assert "checked in the source files' headers before any job" in out
    assert "rule ingest" not in out and _outputs(tmp_path) == []


def test_passed_header_checks_are_remembered_by_file_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    netcdf()(tmp_path)
    cfg = validate_config(files_campaign(nc_target()))
    cache = tmp_path / ".snakemake" / "checks.json"
    assert check_headers(cfg, cache) == 1 and check_headers(cfg, cache) == 0
    netcdf(units="K")(tmp_path)  # rewritten: a new size/mtime, checked again, and wrong now
    with pytest.raises(SourceError, match=r"cannot convert 'K' \(temperature\) to 'mm h-1'"):
        check_headers(cfg, cache)


@pytest.mark.slow
def test_a_failed_jobs_error_reaches_the_console(tmp_path):
    netcdf(poke={(1, 0, 0): -3.0})(tmp_path)  # headers fine, values not: the job fails
    result = run_snakemake(tmp_path, "--configfile", _write(tmp_path, files_campaign(nc_target())))
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(r"logs/ingest.log:\n\s+climai ingest: error: variable 'pr' .* negative", out)
    assert "set data.target.missing_value" in out and not list(tmp_path.rglob("*.zarr"))


def _s3_campaign(**extra: Any) -> dict[str, Any]:
    target = {
        "source": "zarr",
        "path": "s3://bucket/pr.zarr",
        "storage_options": {"anon": False},
        "storage_options_env": {"key": "CLIMAI_TEST_KEY", "secret": "CLIMAI_TEST_SECRET"},
        **extra,
    }
    return files_campaign(target)


@pytest.mark.slow
def test_secrets_stay_off_command_lines_and_rotating_them_reruns_nothing(tmp_path, monkeypatch):
    config = _write(tmp_path, _s3_campaign())
    printed = []
    for key in (SECRET, SECRET[::-1]):
        monkeypatch.setenv("CLIMAI_TEST_KEY", key)
        monkeypatch.setenv("CLIMAI_TEST_SECRET", key + "-secret")
        result = run_snakemake(tmp_path, "--configfile", config, "-n", "-p")
        assert result.returncode == 0, result.stderr[-3000:]
        out = result.stdout + result.stderr
        assert "climai ingest --config-json" in out and "CLIMAI_TEST_KEY" in out
        assert key not in out and key[:12] not in out
        printed.append(re.sub(r"\d+(\.\d+)? ?(s|seconds|sec)\b", "", result.stdout))
    assert printed[0].count("--config-json") == printed[1].count("--config-json") > 5


def test_the_hash_and_the_manifest_hold_no_secret(monkeypatch):
    cfg = validate_config(_s3_campaign(credentials_file="~/.climai/s3.yaml"))
    hashes = []
    for key in (SECRET, "rotated"):
        monkeypatch.setenv("CLIMAI_TEST_KEY", key)
        hashes.append([config_sha256(stage_slice(cfg, s)) for s in ("ingest", "manifest")])
        assert key not in json.dumps(stage_slice(cfg, "manifest"))
    assert hashes[0] == hashes[1]
    plugin = {"data": {"target": {"source": "x", "options": {"api_key": SECRET, "n": 1}}}}
    assert redact(plugin)["data"]["target"]["options"] == {"api_key": REDACTED, "n": 1}


def test_storage_options_come_from_the_environment_and_a_credentials_file(tmp_path, monkeypatch):
    from climai.io.readers import storage_options

    creds = tmp_path / "creds.yaml"
    creds.write_text(yaml.safe_dump({"secret": "from-file", "token": "t"}))
    spec = validate_config(_s3_campaign(credentials_file=str(creds))).data.target
    monkeypatch.setenv("CLIMAI_TEST_KEY", SECRET)
    monkeypatch.setenv("CLIMAI_TEST_SECRET", "from-env")
    assert storage_options(spec, "data.target") == {
        "anon": False, "secret": "from-env", "token": "t", "key": SECRET,
    }  # fmt: skip


@pytest.mark.slow
def test_a_rule_file_outside_the_working_folder_never_runs(tmp_path):
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    marker = tmp_path / "pwned"
    (outside / "evil.smk").write_text(f"open({str(marker)!r}, 'w').close()\n")
    for name in (str(outside / "evil.smk"), "../outside/evil.smk"):
        (work / "c.yaml").write_text(yaml.safe_dump({"rules": [name]}))
        result = run_snakemake(work, "--configfile", str(work / "c.yaml"), "-n")
        out = result.stdout + result.stderr
        assert result.returncode != 0 and "outside the working folder" in out, out[-2000:]
        assert not marker.exists()


# --- MRMS as published (issue 18) ----------------------------------------------------------


def _mrms(**target: Any) -> dict[str, Any]:
    files = sorted((shared_data() / "mrms_conus_preciprate_1km_20190610").glob("*.grib2"))
    spec = {
        "source": "grib",
        "path": str(files[0]),
        "filter_by_keys": {"discipline": 209, "parameterCategory": 6, "parameterNumber": 1},
        "units_override": "mm h-1",
        "missing_value": -3,
        **target,
    }
    return {
        "campaign": "mrms",
        "variables": [{"name": "pr", "source_name": "PrecipRate", "units": "mm h-1",
                       "kind": "precipitation"}],
        "data": {"target": {k: v for k, v in spec.items() if v is not None},
                 "static": {"lon": {"source": "derived", "field": "x"}}},
        "domain": {"x": [-129.0, -128.0], "y": [35.0, 36.0]},  # Pacific: no radar, -3
        "methods": {"unet": None, "unet-crps": None},
    }  # fmt: skip


MRMS_HEADER_CASES = [
    (
        "filter_by_keys",
        {"filter_by_keys": {"discipline": 0, "parameterCategory": 1, "parameterNumber": 7}},
        r"data.target.filter_by_keys: .* selects no field in .*; its fields: .*discipline.*209",
    ),
    (
        "units_override",
        {"units_override": None},
        r"data.target.units_override: field 'PrecipRate' .* has units 'unknown'; set "
        r"data.target.units_override to its units",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [c[1:] for c in MRMS_HEADER_CASES], ids=[c[0] for c in MRMS_HEADER_CASES]
)
def test_mrms_grib_mistakes_stop_before_any_job(tmp_path, change, message):  # fmt: skip
    cfg = validate_config(_mrms(**change))
    with pytest.raises(SourceError, match=message):
        check_headers(cfg, cache=None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_mrms_sentinel_left_unset_stops_ingest_naming_the_key(tmp_path, monkeypatch, capsys):
    from climai import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_mrms(missing_value=None)))
    assert cli.main(["ingest", "--configfile", "c.yaml", "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert re.search(
        r"negative precipitation \(minimum -3 mm h-1\).*set data.target.missing_value", err
    )
    assert os.listdir(tmp_path) == ["c.yaml"]  # nothing written, not even a temporary


def test_naming_a_method_in_a_configfile_keeps_the_methods_in_config_yaml_order(tmp_path):
    """Snakemake puts a --configfile's keys before config.yaml's: `methods: {unet: {workers:
    1}}` (a key that reruns nothing, README "Using it") made compare's `--methods` start with
    unet, a changed parameter that reran compare and manifest and reordered the summary."""
    config = _write(tmp_path, {"methods": {"unet": {"workers": 1}}})
    result = run_snakemake(tmp_path, "--configfile", config, "-n", "-p")
    assert result.returncode == 0, result.stderr[-3000:]
    methods = re.search(r"climai compare .*?--methods ((?:'?\w[\w-]*'? )+)", result.stdout)
    assert methods is not None, result.stdout[-3000:]
    assert methods[1].replace("'", "").split() == [
        "bicubic",
        "quantile-mapping",
        "unet",
        "unet-crps",
    ]
