"""The docs' worked examples, executed: each page's files are copied into a temporary workspace
and its ``bash run`` block is run there on a small toy campaign, so a page that drifts from climai
fails here.

A page marks its files with fenced blocks whose info string names them (```python
file=plugin/x.py) and its commands with a ```bash run block. Commands run as written, except
that ``pip install -e <dir>`` installs into the workspace's own site folder (``--target``, no
dependencies, no network) and ``snakemake`` runs climai's Snakefile in the workspace.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, snakemake_cmd, snakemake_env

DOCS = REPO / "docs"
PAGES = ("add-a-variable.md", "add-an-emulator.md", "add-a-metric.md", "add-a-rule.md")
FENCE = re.compile(r"^```(\w+) (file=\S+|run)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


@dataclass
class Example:
    files: dict[str, str]
    commands: list[str]


def example(page: str) -> Example:
    """The files and commands of a docs page."""
    files, commands = {}, []
    for _lang, what, body in FENCE.findall((DOCS / page).read_text()):
        if what == "run":
            commands += [line for line in body.splitlines() if line.strip()]
        else:
            files[what.removeprefix("file=")] = body
    return Example(files, commands)


def run_example(page: str, workspace: Path) -> list[subprocess.CompletedProcess[str]]:
    """Write the page's files into ``workspace`` and run its commands there; fail on any error."""
    ex = example(page)
    for rel, text in ex.files.items():
        (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
        (workspace / rel).write_text(text)
    site = workspace / "site"
    env = snakemake_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    results = []
    for line in ex.commands:
        args = shlex.split(line)
        if args[:3] == ["pip", "install", "-e"]:
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                   "--no-build-isolation", "--target", str(site), str(workspace / args[3])]  # fmt: skip
        elif args[0] == "snakemake":
            cmd = snakemake_cmd(workspace, *args[1:])
        elif args[0] == "python":
            cmd = [sys.executable, *args[1:]]
        else:
            raise AssertionError(f"{page}: no rule to run {line!r}")
        result = subprocess.run(
            cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, (
            f"{page}: {line}\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
        )
        results.append(result)
    return results


def metrics(workspace: Path, campaign: str, method: str) -> dict:
    path = workspace / "results" / campaign / "evaluation" / method / "metrics.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_a_worked_example(page):
    ex = example(page)
    assert ex.files and ex.commands, f"docs/{page} has no file blocks or no run block"


@pytest.mark.slow
@pytest.mark.workflow
def test_add_a_variable(tmp_path):
    run_example("add-a-variable.md", tmp_path)
    for method in ("bicubic", "quantile-mapping"):
        m = metrics(tmp_path, "huss", method)
        assert set(m) == {"tas", "huss"}
        assert 0 < m["huss"]["rmse"] < 2e-3  # kg kg-1: the humidity field is ~1e-2
    from climai.io import open_store

    target = open_store(tmp_path / "results/huss/ingest/target.zarr")
    assert target["huss"].attrs["source_variable"] == "d2m"
    assert target["huss"].attrs["converter"] == "dewpoint_to_specific_humidity"


@pytest.mark.slow
@pytest.mark.workflow
def test_add_an_emulator(tmp_path):
    run_example("add-an-emulator.md", tmp_path)
    from climai.inference.predict import load_emulator
    from climai.registry import METHOD_TYPES

    sys.path.insert(0, str(tmp_path / "site"))
    try:
        emulator, _, card = load_emulator(tmp_path / "results/resconv/models/conv/model.pt")
    finally:
        sys.path.remove(str(tmp_path / "site"))
        # the plugin is gone with its site folder: later tests in this process must not find
        # it loaded (tests/reliability's card-type-not-installed case expects it absent)
        METHOD_TYPES.unregister("resconv")
    assert card["architecture"]["type"] == "resconv"
    assert type(emulator.nets["all"]).__name__ == "ResConv"
    conv, bicubic = metrics(tmp_path, "resconv", "conv"), metrics(tmp_path, "resconv", "bicubic")
    for var in ("tas", "pr"):
        assert {"rmse", "corr", "spectral_ratio"} <= set(conv[var])
        assert conv[var]["rmse"] != bicubic[var]["rmse"]  # trained: not the bicubic field
    summary = (tmp_path / "results/resconv/evaluation/summary.md").read_text()
    assert "| conv |" in summary and "| bicubic |" in summary


@pytest.mark.slow
@pytest.mark.workflow
def test_add_a_metric(tmp_path):
    run_example("add-a-metric.md", tmp_path)
    m = metrics(tmp_path, "fss", "bicubic")
    assert set(m["pr"]["fss"]) == {"1", "4", "16"}
    assert 0 <= m["pr"]["fss"]["1"] <= m["pr"]["fss"]["16"] <= 1
    assert "fss" not in m["tas"]


@pytest.mark.slow
@pytest.mark.workflow
def test_add_a_rule(tmp_path):
    run_example("add-a-rule.md", tmp_path)
    root = tmp_path / "results/bc"
    assert (root / "prep-bc/dataset.zarr").is_dir() and (root / "logs/bias_correct.log").exists()
    from climai.io import open_store

    ds = open_store(root / "prep-bc/dataset.zarr")
    assert ds.attrs["created_by_rule"] == "bias_correct"
    assert "bias_corrected_to_train_mean" in ds["lr_tas"].attrs
    for method in ("bicubic", "unet"):
        assert metrics(tmp_path, "bc", method)["tas"]["rmse"] > 0
