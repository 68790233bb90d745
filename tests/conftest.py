"""Shared fixtures: everything runs in a temporary folder on tiny seeded grids."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Under pytest-xdist (README: `pytest -n 2 --dist loadfile`, a module's tests on one worker) the
# cores are shared among the workers: each worker's Snakemake runs and torch get their share, so
# two workers never oversubscribe the machine (OpenMP threads spinning on a busy core collapse
# torch's speed).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
CORES = max(1, (os.cpu_count() or 2) // WORKERS)


# The test files that take longest (seconds of one xdist worker on a 2-core AMD EPYC, from
# `--junitxml`, session 33, in the run before this order (1044 s): faults 372, the SLURM files
# 231 + 94 (one unit, below), docs 228, toy DAG 121, gpu_check 107, inference 87, experiments 85,
# distributed inference 80, then 40-65 each; the suite took 882 s with this order), longest first. `--dist loadfile` hands whole files to the
# workers in collection order; pytest-xdist would otherwise sort the files by their number of
# tests, which puts these few-test, long files last, where one of them alone was the tail of the
# run (faults: 590 s). Longest first, the short files fill the other worker's time
# (longest-processing-time scheduling). Files not listed keep their order after these.
LONGEST_FIRST = (
    "tests/reliability/test_faults_and_reruns.py",
    "tests/hpc/test_leonardo_profile.py",
    "tests/hpc/test_sweep_slurm.py",
    "tests/docs/test_docs.py",
    "tests/workflow/test_toy_dag.py",
    "tests/unit/test_gpu_check.py",
    "tests/unit/test_inference.py",
    "tests/workflow/test_experiments.py",
    "tests/unit/test_inference_distributed.py",
    "tests/workflow/test_toy_wind.py",
    "tests/unit/test_finetune.py",
    "tests/unit/test_resume_ddp.py",
    "tests/workflow/test_profiles.py",
    "tests/reliability/test_dag_checks.py",
    "tests/unit/test_training.py",
)
# Files that one xdist worker runs together, one after the other: the SLURM tests share the
# machine's one test cluster (one node, 4 GPUs). Run side by side, two of them mostly waited on
# each other's GPU jobs and on the executor's status checks at the same time, with the cores idle;
# one after the other, they wait while the other worker computes.
ONE_WORKER = ("tests/hpc/",)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep our file order
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the longest files first (``LONGEST_FIRST``); the rest keep their order."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        path = Path(str(item.path)).resolve()
        if not path.is_relative_to(REPO):
            return len(rank)
        return rank.get(path.relative_to(REPO).as_posix(), len(rank))

    items.sort(key=key)  # stable: a file's tests keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadfile``, except that the files under a ``ONE_WORKER`` folder are one unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return next((folder for folder in ONE_WORKER if scope.startswith(folder)), scope)

    return Scheduling(config, log)


def load_benchmark(name: str) -> types.ModuleType:
    """``benchmarks/<name>.py`` imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside an empty temporary working folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", str(min(2, CORES))))


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """The command that runs this checkout's Snakefile in ``workdir``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(CORES),
        *args,
    ]


def snakemake_env() -> dict[str, str]:
    """The environment for Snakemake: this interpreter's scripts (``climai``) first on PATH."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def run_snakemake(
    workdir: Path, *args: str, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run Snakemake on this checkout's Snakefile in ``workdir`` and return the finished process."""
    return subprocess.run(
        snakemake_cmd(workdir, *args),
        capture_output=True,
        text=True,
        env=snakemake_env(),
        timeout=timeout,
        check=False,
    )


def shared_data() -> Path:
    """The shared real-data folder: ``../shared/data`` beside the repository (CI layout), else
    ``$CLIMAI_SHARED_DATA``; skips the test with a reason when neither exists."""
    candidates = [REPO.parent / "shared" / "data"]
    if os.environ.get("CLIMAI_SHARED_DATA"):
        candidates.append(Path(os.environ["CLIMAI_SHARED_DATA"]))
    for path in candidates:
        if (path / "SOURCES.md").is_file():
            return path
    pytest.skip(
        "shared real data not found (../shared/data beside the repo or $CLIMAI_SHARED_DATA)"
    )
    raise AssertionError("unreachable")
