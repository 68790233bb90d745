"""The toy campaign through ``profiles/leonardo`` on the real test SLURM cluster.

Every rule becomes a SLURM job submitted by snakemake-executor-plugin-slurm, which picks each
job's partition from ``profiles/leonardo/partitions.yaml`` by the resources its rule asks (per
method: bicubic infers on a CPU partition without GPUs, the U-Net on the Booster with 4);
``sacct`` shows where each one ran and what it got, and the outputs equal those of a local run of
the same campaign.
The cluster's node has 2 real cores: jobs asking for 32 or 112 CPUs run oversubscribed, and the
job's Snakemake caps each rule's threads at the node's real cores (2), as a local
``snakemake --cores 2`` does: that is why the outputs are bit-identical (see test below). With
other thread counts torch's CPU kernels sum in another order and training drifts at rounding
level (measured on the tiny campaign: 1 vs 7 threads, test ``tas`` up to 0.0036 K apart; see
profiles/README.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import yaml

from climai.io import open_store
from climai.testing import write_config
from tests.conftest import REPO
from tests.hpc.conftest import slurm_run_id

if TYPE_CHECKING:
    from .conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1200)]

PROFILE = REPO / "profiles" / "leonardo"
# One baseline and the U-Net: every rule runs, and infer/evaluate/export once per kind of method.
# (Each further method would add jobs that wait for the one node's memory.)
CAMPAIGN = {
    "campaign": "hpc",
    "data": {"target": {"nx": 32, "ny": 32, "steps": 32}},
    "methods": {
        "bicubic": {},
        "nearest": None,
        "quantile-mapping": None,
        "unet": {"epochs": 1, "patch": 16, "batch": 8},
    },
    "infer": {"time_block": 2},  # 6 test steps in 3 time chunks: a split infer gets one each
}
METHOD_KINDS = {"bicubic": "baseline", "unet": "emulator"}
# Job → (rule, method or None): the jobs of one run.
# the SLURM jobs: compare and manifest are localrules (the Snakefile), run beside Snakemake
JOBS = [("ingest", None), ("preprocess", None), ("train", "unet")] + [
    (rule, m) for rule in ("infer", "evaluate", "export") for m in METHOD_KINDS
]
STORES = (
    "ingest/target.zarr",
    "ingest/static.zarr",
    "prep/dataset.zarr",
    "downscaled/unet/test.zarr",
    "downscaled/bicubic/test.zarr",
)


def snakemake(
    workdir: Path, env: dict[str, str], *args: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def job_env(cluster: SlurmCluster) -> dict[str, str]:
    """The cluster's environment with the project account, this checkout and its Python first."""
    env = dict(cluster.env, SLURM_ACCOUNT=cluster.account)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def planned() -> dict[tuple[str, str | None], object]:
    """Each job's plan (climai/sizing.py: the cost model on Leonardo's partitions), as the
    workflow sizes it at DAG-build time."""
    from climai.config import load_config
    from climai.plan import campaign_plans
    from climai.sizing import Sizer, read_partitions

    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp) / "hpc.yaml", **CAMPAIGN)
        cfg = load_config(REPO / "config" / "config.yaml", config)  # as the Snakefile merges
        plans = campaign_plans(cfg, Sizer.load(read_partitions(PROFILE / "partitions.yaml"), True))
    assert plans is not None
    return plans


def expected_job(rule: str, method: str | None) -> dict[str, object]:
    """What a job asks (the cost model's size) and where it should run."""
    plan = planned()[(rule, method)]
    size = plan.size  # type: ignore[attr-defined]
    return {"partition": plan.partition, "cpus": size.cpus, "mem_mb": size.mem_mb,  # type: ignore[attr-defined]
            "gpus": size.gpus}  # fmt: skip


def sacct_jobs(runs: dict) -> dict[tuple[str, str | None], list[list[str]]]:
    """(rule, method) → sacct rows (JobID, JobName, Partition, AllocTRES, Comment, State, QOS)
    of this run's jobs (the plugin's comment is rule_<rule>[_wildcards_<method>])."""
    res = runs["cluster"].run(
        "sacct", "-X", "-n", "-P", "-S", runs["start"],
        "--format=JobID,JobName,Partition,AllocTRES,Comment,State,QOS",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    jobs: dict[tuple[str, str | None], list[list[str]]] = {}
    for line in res.stdout.splitlines():
        row = line.split("|")
        if row[1] == runs["run_id"] and row[4].startswith("rule_"):
            rule, _, method = row[4].removeprefix("rule_").partition("_wildcards_")
            jobs.setdefault((rule, method or None), []).append(row)
    return jobs


@pytest.fixture(scope="module")
def runs(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    env = job_env(slurm_cluster)
    # The local reference run goes alongside the SLURM run, which mostly waits on the scheduler.
    local = tmp_path_factory.mktemp("local")
    write_config(local / "hpc.yaml", **CAMPAIGN)
    t0 = time.monotonic()
    local_run = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--cores", "2", "--configfile", "hpc.yaml"],
        cwd=local, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        slurm = tmp_path_factory.mktemp("slurm")
        write_config(slurm / "hpc.yaml", **CAMPAIGN)
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
        res = snakemake(
            slurm,
            env,
            "--profile",
            str(PROFILE),
            "--configfile",
            "hpc.yaml",
            "--slurm-init-seconds-before-status-checks",
            "1",
        )
        t_slurm = time.monotonic() - t0
        local_out, _ = local_run.communicate(timeout=900)
    finally:
        if local_run.poll() is None:
            local_run.kill()
            local_run.wait()
    t_both = time.monotonic() - t0
    assert local_run.returncode == 0, local_out[-3000:]
    logs = "\n".join(p.read_text() for p in (slurm / ".snakemake/slurm_logs").rglob("*.log"))
    assert res.returncode == 0, res.stderr[-4000:] + logs[-4000:]
    print(f"SLURM run {t_slurm:.0f} s; with the local run alongside {t_both:.0f} s")
    run_id = slurm_run_id(res.stdout + res.stderr)
    return {
        "local": local, "slurm": slurm, "env": env, "start": start, "cluster": slurm_cluster,
        "run_id": run_id,
    }  # fmt: skip


def test_each_job_ran_in_its_partition_with_its_cpus_gpus_and_memory(runs):
    jobs = sacct_jobs(runs)
    assert sorted(jobs, key=str) == sorted(JOBS, key=str), jobs
    for (rule, method), rows in jobs.items():
        want = expected_job(rule, method)
        assert len(rows) == 1, rows  # one job each: nothing was retried
        _id, _name, partition, tres, _comment, state, qos = rows[0]
        alloc = dict(item.split("=", 1) for item in tres.split(","))
        assert (partition, state) == (want["partition"], "COMPLETED"), (rule, method, rows)
        assert alloc["cpu"] == str(want["cpus"]), (rule, method, tres)
        assert alloc["mem"] == f"{want['mem_mb']}M", (rule, method, tres)
        assert alloc.get("gres/gpu", "0") == str(want["gpus"]), (rule, method, tres)
        assert qos == "normal", (rule, method, qos)  # the default QOS: the profile sets none


def test_bicubic_inferred_on_a_cpu_partition_without_gpu_and_unet_with_gpus(runs):
    jobs = sacct_jobs(runs)
    (bicubic,) = jobs[("infer", "bicubic")]
    (unet,) = jobs[("infer", "unet")]
    bicubic_tres = dict(item.split("=", 1) for item in bicubic[3].split(","))
    unet_tres = dict(item.split("=", 1) for item in unet[3].split(","))
    assert bicubic[2] != "boost_usr_prod" and "gres/gpu" not in bicubic_tres, bicubic
    assert unet[2] == "boost_usr_prod" and int(unet_tres["gres/gpu"]) >= 1, unet
    # a toy job never asks for a whole node
    for (rule, method), rows in jobs.items():
        alloc = dict(item.split("=", 1) for item in rows[0][3].split(","))
        assert int(alloc["cpu"]) <= 4 and _mb(alloc["mem"]) < 30_000, (rule, method, alloc)


def _mb(text: str) -> float:
    """sacct's memory (``512K``, ``700M``, ``1.5G``) in MB (MiB)."""
    if not text:
        return 0.0
    scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
    return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text) / 2**20


def test_every_job_asked_at_least_the_memory_it_used(runs):
    """sacct: each job's requested memory (the cost model's estimate × safety, plus the job's
    own Snakemake) is at least the peak RSS of every step of the job (MaxRSS)."""
    deadline = time.monotonic() + 120  # the steps' usage reaches the database after the jobs end
    while True:
        res = runs["cluster"].run(
            "sacct", "-n", "-P", "-S", runs["start"], "--format=JobID,JobName,ReqMem,MaxRSS,Comment",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        asked: dict[str, tuple[str, float]] = {}
        used: dict[str, float] = {}
        for line in res.stdout.splitlines():
            job, name, req, rss, comment = line.split("|")
            base = job.split(".")[0]
            if "." not in job and name == runs["run_id"]:
                asked[base] = (comment, _mb(req))
            used[base] = max(used.get(base, 0.0), _mb(rss))
        if all(used.get(j, 0.0) > 0 for j in asked) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert len(asked) >= len(JOBS)
    table = [(asked[j][0], asked[j][1], used.get(j, 0.0)) for j in sorted(asked)]
    print("\n".join(f"{c}: asked {a:.0f} MB, MaxRSS {u:.0f} MB" for c, a, u in table))
    assert all(u > 0 for _, _, u in table), table  # accounting measured every job
    assert all(a >= u for _, a, u in table), table


def test_outputs_match_a_local_run_exactly(runs):
    """Bit-identical: both ran each stage with 2 threads (see the module docstring)."""
    local, slurm = runs["local"] / "results/hpc", runs["slurm"] / "results/hpc"
    for store in STORES:
        a, b = open_store(local / store), open_store(slurm / store)
        assert set(a.data_vars) == set(b.data_vars), store
        for var in a.data_vars:
            np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=f"{store}:{var}")
    metrics = "evaluation/unet/metrics.json"
    assert json.loads((local / metrics).read_text()) == json.loads((slurm / metrics).read_text())
    assert (slurm / "evaluation/summary.csv").read_text() == (
        local / "evaluation/summary.csv"
    ).read_text()


def test_train_saw_the_jobs_gpus_and_stayed_one_process_without_cuda(runs):
    log = (runs["slurm"] / "results/hpc/logs/train_unet.log").read_text()
    gpus = expected_job("train", "unet")["gpus"]
    assert f"train launch: the job has {gpus} GPU(s) but torch sees no CUDA" in log, log[-2000:]


def test_infer_saw_the_jobs_gpus_and_stayed_one_process_without_cuda(runs):
    log = (runs["slurm"] / "results/hpc/logs/infer_unet.log").read_text()
    gpus = expected_job("infer", "unet")["gpus"]
    assert f"infer launch: the job has {gpus} GPU(s) but torch sees no CUDA" in log, log[-2000:]


def test_a_gpu_rule_mapped_to_a_cpu_partition_is_refused(runs, tmp_path):
    """A user's profile that sends train to a CPU partition (set-resources beats the rule's
    resources and the plugin's choice): SLURM refuses its GPUs there, as Leonardo does."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    profile["set-resources"] = {"train": {"slurm_partition": "dcgp_usr_prod"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    (tmp_path / "partitions.yaml").write_text((PROFILE / "partitions.yaml").read_text())
    res = snakemake(
        runs["slurm"],
        runs["env"],
        "--profile",
        str(tmp_path),
        "--configfile",
        "hpc.yaml",
        "--forcerun",
        "train",
        "--slurm-init-seconds-before-status-checks",
        "1",
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "sbatch" in out and "QOS" in out, out[-3000:]


def test_an_infer_too_long_for_its_partition_runs_as_blocks_gathered_bitwise(runs, tmp_path):
    """Coefficients under which unet's infer would take days (``$CLIMAI_COSTS_DIR``): the DAG
    splits it into infer_block jobs on the Booster and an infer_gather job, whose store equals
    the unsplit infer's of the first run bit for bit."""
    from climai.cost import COSTS_DIR, MACHINES

    costs = tmp_path / "costs"
    shutil.copytree(COSTS_DIR, costs)
    gpu = json.loads((costs / f"{MACHINES['gpu']}.json").read_text())
    gpu["coefficients"]["infer/unet"] = {"t0": 20.0, "t1": 40.0, "m0": 0.0, "m1": 0.0, "n": 0}
    (costs / f"{MACHINES['gpu']}.json").write_text(json.dumps(gpu))
    root = runs["slurm"] / "results/hpc/downscaled/unet"
    shutil.copytree(root / "test.zarr", tmp_path / "unsplit.zarr")
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    res = snakemake(
        runs["slurm"], {**runs["env"], "CLIMAI_COSTS_DIR": str(costs)}, "--profile", str(PROFILE),
        "--configfile", "hpc.yaml", "--forcerun", "infer_gather",
        "--slurm-init-seconds-before-status-checks", "1", "results/hpc/downscaled/unet/test.zarr",
    )  # fmt: skip
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    sacct = runs["cluster"].run("sacct", "-X", "-n", "-P", "-S", start,
                                "--format=JobID,Partition,Comment,State")  # fmt: skip
    blocks = [r.split("|") for r in sacct.stdout.splitlines() if "rule_infer_block" in r]
    gathers = [r.split("|") for r in sacct.stdout.splitlines() if "rule_infer_gather" in r]
    assert len(blocks) == 3 and len(gathers) == 1, sacct.stdout
    assert {b[1] for b in blocks} == {"boost_usr_prod"} and gathers[0][1] != "boost_usr_prod"
    assert {b[3] for b in blocks + gathers} == {"COMPLETED"}, sacct.stdout
    whole, gathered = open_store(tmp_path / "unsplit.zarr"), open_store(root / "test.zarr")
    code = {"climai_version", "climai_commit", "git_commit"}  # the code's, if it changed between
    assert {k: v for k, v in whole.attrs.items() if k not in code} == {
        k: v for k, v in gathered.attrs.items() if k not in code
    }
    assert set(whole.variables) == set(gathered.variables)
    for var in whole.variables:
        a, b = whole[var].values, gathered[var].values
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), var
