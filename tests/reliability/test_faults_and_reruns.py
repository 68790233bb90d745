"""Faults and reruns: killed jobs leave nothing that looks complete, reruns reproduce bit for bit."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from climai.manifest import compare_artifact, compare_campaigns
from climai.testing import write_config
from tests.conftest import CORES, run_snakemake, snakemake_cmd, snakemake_env

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# A little larger than the tiny default so that jobs last long enough to be killed mid-way (the
# preprocess store is written for ~1 s, each epoch lasts ~2 s; the tests poll every 10 ms).
# Only the U-Net, as in tests/hpc: every stage still runs once per campaign (ingest, preprocess,
# train, infer, evaluate, export, compare, manifest), and the faults hit preprocess and train,
# upstream of everything compared. The baselines' infer/evaluate/export jobs (six of the
# fourteen) were compared too, but cost time in each of the module's six campaign runs (four
# complete, two killed and rerun).
FAULT_CAMPAIGN = {
    "data": {"target": {"nx": 64, "ny": 64, "steps": 120}},
    "methods": {
        "bicubic": None,
        "quantile-mapping": None,
        "unet": {"epochs": 3, "patch": 32, "batch": 8},
    },
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the fault campaign; ``job_seconds.json`` beside it holds each
    job's log name and how long it ran, in the order the jobs started."""
    wd = tmp_path_factory.mktemp("reference")
    write_config(wd / "c.yaml", **FAULT_CAMPAIGN)
    logs = wd / "results/tiny/logs"
    proc = subprocess.Popen(
        snakemake_cmd(wd, "--configfile", str(wd / "c.yaml")),
        env=snakemake_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started: dict[str, float] = {}
    while proc.poll() is None:
        for log in sorted(logs.glob("*.log")) if logs.is_dir() else []:
            started.setdefault(log.name, time.time())
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
    # a job ends at its log's last write, or (a job that logs nothing) when the next one starts
    ends = [*list(started.values())[1:], time.time()]
    seconds = {
        name: max(0.0, (logs / name).stat().st_mtime - t, end - t)
        for (name, t), end in zip(started.items(), ends, strict=True)
    }
    (wd / "job_seconds.json").write_text(json.dumps(seconds))
    return wd


def _mtime(path: Path) -> float:
    """``path``'s modification time, or -inf where it does not exist (Snakemake removes a job's
    log when it starts the job again: it may go between an ``exists()`` and a ``stat()``)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return -math.inf


def _kill_when(wd: Path, ready, timeout: float = 300.0, delay: float = 0.0) -> bool:
    """Start the campaign in ``wd`` and SIGKILL the whole job tree ``delay`` seconds after
    ``ready()``; False when the campaign finished first: during the ``delay``, or before
    ``ready()`` when the jobs still to come had all finished before an earlier kill."""
    proc = subprocess.Popen(
        snakemake_cmd(wd, "--configfile", str(wd / "c.yaml"), "--rerun-incomplete"),
        env=snakemake_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                assert proc.returncode == 0, "the rerun after a kill failed"
                return False
            assert time.monotonic() < deadline, "the fault point was never reached"
            time.sleep(0.01)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=delay)
        return proc.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _unlock(wd: Path) -> None:
    """What ``snakemake --unlock`` does after a kill (it deletes the files under
    .snakemake/locks), without its ~3 s start: for the kill loop, which unlocks once per job;
    :func:`_rerun_and_compare` runs the real command."""
    for lock in (wd / ".snakemake" / "locks").glob("*"):
        lock.unlink()


def _rerun_and_compare(wd: Path, reference: Path) -> None:
    assert run_snakemake(wd, "--unlock").returncode == 0
    result = run_snakemake(wd, "--configfile", str(wd / "c.yaml"), "--rerun-incomplete")
    assert result.returncode == 0, result.stderr[-3000:]
    comparisons = compare_campaigns(reference / "results/tiny", wd / "results/tiny")
    assert comparisons and all(c.ok for c in comparisons), [c for c in comparisons if not c.ok]


def test_sigkill_during_preprocess_then_during_training_then_rerun_gives_identical_outputs(
    tmp_path, reference
):
    """One campaign killed twice (a rerun of the whole campaign costs as much as the reference):
    mid-preprocess, leaving no complete-looking store; rerun and killed again mid-training,
    leaving no model file; rerun to the end: every output equals the uninterrupted run's."""
    write_config(tmp_path / "c.yaml", **FAULT_CAMPAIGN)
    prep = tmp_path / "results/tiny/prep"
    assert _kill_when(tmp_path, lambda: any(prep.glob(".dataset.zarr.tmp-*")))
    assert not (prep / "dataset.zarr").exists(), "a killed preprocess left a complete-looking store"
    assert run_snakemake(tmp_path, "--unlock").returncode == 0
    log = tmp_path / "results/tiny/logs/train_unet.log"
    assert _kill_when(tmp_path, lambda: log.exists() and "epoch 1/3" in log.read_text())
    assert (prep / "dataset.zarr").is_dir(), "the rerun did not redo the killed preprocess"
    assert not (tmp_path / "results/tiny/models/unet/model.pt").exists()
    _rerun_and_compare(tmp_path, reference)


def test_sigkill_at_a_random_point_of_every_job_then_rerun_gives_identical_outputs(
    tmp_path, reference
):
    """Every job in turn is killed (with the whole Snakemake run) at a seeded random moment of
    its run time in the reference; the campaign is rerun after each kill, then to the end."""
    write_config(tmp_path / "c.yaml", **FAULT_CAMPAIGN)
    seconds = json.loads((reference / "job_seconds.json").read_text())
    assert {"ingest.log", "preprocess.log", "train_unet.log", "manifest.log"} <= set(seconds)
    jobs = list(seconds)
    logs = tmp_path / "results/tiny/logs"
    rng = random.Random(20)
    for i, job in enumerate(jobs):
        launched = time.time()

        def started(later: list[str] = jobs[i:], since: float = launched) -> bool:
            # this job or a later one (this one was done by then) has started in this run
            return any(_mtime(logs / name) >= since for name in later)

        if not _kill_when(tmp_path, started, delay=rng.uniform(0.0, seconds[job])):
            break  # the campaign finished before the fault
        _unlock(tmp_path)
    _rerun_and_compare(tmp_path, reference)
    left = [*tmp_path.rglob("*.tmp-*"), *(tmp_path / "results").rglob(".*.lock")]
    assert not left, "a killed writer's temporary or lock outlived the rerun"


def test_two_writers_of_one_output_at_once(tmp_path, reference):
    """A second ``climai preprocess`` (e.g. a requeued job) starts while the first is writing the
    store: it fails naming the first, which finishes; the store equals the clean run's."""
    write_config(tmp_path / "c.yaml", **FAULT_CAMPAIGN)
    shutil.copytree(reference / "results/tiny/ingest", tmp_path / "results/tiny/ingest")
    prep = tmp_path / "results/tiny/prep"
    cmd = [sys.executable, "-m", "climai.cli", "preprocess", "--configfile", "c.yaml"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [*cmd, "--threads", "1"], cwd=tmp_path, env=snakemake_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    first = start()
    deadline = time.monotonic() + 120
    while not any(prep.glob(".dataset.zarr.tmp-*")):
        assert first.poll() is None and time.monotonic() < deadline, "the first never wrote"
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-write while the second one runs
    try:
        second = start()
        _, second_err = second.communicate(timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 1, second_err[-3000:]
    assert "prep/dataset.zarr' is being written by host" in second_err
    assert f"pid {first.pid}, writing since" in second_err
    for name in ("prep/dataset.zarr", "prep/stats.json"):
        same = compare_artifact(
            name, reference / "results/tiny" / name, tmp_path / "results/tiny" / name, 0.0, []
        )
        assert same.ok, same
    assert sorted(p.name for p in prep.iterdir()) == ["dataset.zarr", "stats.json"]


def test_manifest_records_what_made_the_campaign(reference):
    manifest = json.loads((reference / "results/tiny/manifest.json").read_text())
    assert manifest["config"]["campaign"] == "tiny" and len(manifest["config_sha256"]) == 64
    assert manifest["seed"] == 0 and manifest["git_commit"]
    assert {"torch", "xarray", "zarr", "snakemake", "climai"} <= set(manifest["packages"])
    assert {"python", "machine"} <= set(manifest["platform"])
    assert manifest["code"]["workflow"]["commit"] == manifest["git_commit"].removesuffix("-dirty")
    assert {"version", "commit"} <= set(manifest["code"]["package"])
    train = manifest["runtime"]["train_unet"]  # what training ran with, not the manifest rule
    assert {"threads", "torch", "onednn", "cpu_flags", "bf16_autocast", "deterministic"} <= set(
        train
    )
    assert {"prep/dataset.zarr", "models/unet/model.pt", "evaluation/unet/metrics.json"} <= set(
        manifest["artifacts"]
    )


def test_verify_reruns_the_campaign_bitwise(reference):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "climai.cli",
            "verify",
            "--configfile",
            "c.yaml",
            "--reference",
            "results/tiny",
            "--threads",
            # the reference ran with CORES; the numbers depend on compute.threads, not on --cores
            "1" if CORES > 1 else "2",
        ],
        cwd=reference,
        capture_output=True,
        text=True,
        env=snakemake_env(),
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "verify OK" in result.stdout
    assert (
        "FAIL" not in result.stdout
        and "OK   models/unet/model.pt: bitwise identical" in result.stdout
    )


def test_config_values_never_reach_a_shell_unquoted(tmp_path):
    """A results folder with spaces (which an unquoted shell word would split) works; one with
    shell metacharacters is refused by validation before any job runs."""
    write_config(tmp_path / "c.yaml", results="out dir, two+three")
    result = run_snakemake(tmp_path, "--configfile", str(tmp_path / "c.yaml"), "--until", "ingest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out dir, two+three/tiny/ingest/target.zarr").is_dir()
    write_config(tmp_path / "bad.yaml", results="out; touch pwned")
    refused = run_snakemake(tmp_path, "--configfile", str(tmp_path / "bad.yaml"), "-n")
    assert refused.returncode != 0
    assert (
        "results folder 'out; touch pwned' must be a plain path" in refused.stdout + refused.stderr
    )
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out; touch pwned").exists()


def test_changing_one_input_file_reruns_exactly_its_dependents(tmp_path):
    """A netCDF campaign: rewriting one input file reruns ingest and everything after it, while a
    config change to evaluation alone reruns only the evaluation jobs."""
    from climai.testing import write_toy_series
    from tests.workflow.test_toy_dag import planned_jobs

    files = write_toy_series(tmp_path / "data", n_files=2, steps_per_file=24)
    config = yaml.safe_load(write_config(tmp_path / "c.yaml").read_text())
    config["data"] = {
        "target": {"source": "netcdf", "path": str(tmp_path / "data" / "toy_*.nc")},
        "static": {"x_km": {"source": "derived", "field": "x"}},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = run_snakemake(
        tmp_path, "--configfile", str(tmp_path / "c.yaml"), "--until", "preprocess"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    again = run_snakemake(
        tmp_path, "--configfile", str(tmp_path / "c.yaml"), "--until", "preprocess", "-n"
    )
    assert not planned_jobs(again), again.stdout[-2000:]
    time.sleep(1.1)  # mtime resolution
    write_toy_series(tmp_path / "data", n_files=2, steps_per_file=24, seed=1)  # new content
    assert files[0].exists()
    plan = run_snakemake(tmp_path, "--configfile", str(tmp_path / "c.yaml"), "-n")
    jobs = planned_jobs(plan)
    assert jobs.get("ingest") == 1 and jobs.get("preprocess") == 1 and jobs.get("train") == 1
