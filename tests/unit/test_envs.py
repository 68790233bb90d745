"""Conda environments of the rules agree with pyproject.toml and requirements/lock.txt."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))


def lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_every_rule_uses_an_existing_environment():
    used = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for m in re.finditer(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            path = (smk.parent / m[1]).resolve()
            assert path.is_file(), f"{smk.name}: conda env {m[1]} does not exist"
            used.add(path.name)
    assert used == {"cpu.yaml", "gpu.yaml"}
    for rule in ("train", "infer"):
        assert '"../../envs/gpu.yaml"' in (REPO / f"workflow/rules/{rule}.smk").read_text()


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_environment_versions_agree_with_the_lock_and_pyproject(env_file: Path):
    env = yaml.safe_load(env_file.read_text())
    pins = lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in conda if d.startswith("python="))
    minimum = re.search(r">=\s*([\d.]+)", project["requires-python"])[1]
    assert python == f"python={minimum}", "the env's Python is the one the lock was made on"
    assert "Python " + minimum in (REPO / "requirements" / "lock.txt").read_text()
    for dep in conda:
        name, _, version = dep.partition("=")
        if name.lower() in pins:
            assert version == pins[name.lower()], f"{env_file.name}: {dep} vs lock"
    assert "-c ../requirements/lock.txt" in pip, "pip must be constrained by the lock"
    assert (env_file.parent / "../requirements/lock.txt").resolve().is_file()
    assert "-e .." in pip and (env_file.parent / ".." / "pyproject.toml").is_file()
    for req in pip:
        if m := re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", req):
            name = re.sub(r"\[.*\]", "", m[1]).lower().replace("_", "-")
            assert pins.get(name) == m[2], (
                f"{env_file.name}: {req} but the lock has {pins.get(name)}"
            )
    assert any(r.startswith("torch==") for r in pip), "torch is pinned explicitly (CPU vs CUDA)"


def test_the_slurm_plugin_is_a_pinned_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("snakemake-executor-plugin-slurm") for d in project["dependencies"])
    assert "snakemake-executor-plugin-slurm" in lock()
    assert "snakemake-executor-plugin-slurm-jobstep" in lock()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_pins_every_package_climai_and_its_extras_install():
    """formulaic, interface-meta and narwhals (statsmodels' dependencies, through xsdba in the
    dev and sdba extras) were installed but not pinned: a rerun a year later would get whatever
    versions were new then. Every distribution reachable from climai's requirements, its
    extras included, is pinned, at the version installed here."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pins = {_canonical(k): v for k, v in lock().items()}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = sorted(project["optional-dependencies"])
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for e in extras for r in project["optional-dependencies"][e]]
    seen = {"pip", "setuptools", "wheel"}  # the venv's own installer tools (pip freeze's too)
    while todo:
        req = todo.pop()
        name = _canonical(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # not for this platform or Python (its marker), so not installed here
        assert name in pins, f"{name} is installed with climai but not pinned in the lock"
        assert dist.version.split("+")[0] == pins[name], f"{name}: {dist.version} vs the lock"
        for text in dist.requires or []:
            sub = Requirement(text)
            wanted = [{"extra": e} for e in ("", *req.extras)]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in wanted):
                todo.append(sub)
