"""The test SLURM cluster behaves like Leonardo where the workflow depends on it.

Runs real jobs through sbatch, slurmctld, slurmd and slurmdbd (see ``slurm_cluster.sh``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(300)]


def test_serial_job_completes_and_is_accounted(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "hostname.out"
    t0 = time.monotonic()
    job = slurm_cluster.submit(
        "-A", slurm_cluster.account, "-p", "lrd_all_serial", "-J", "climai_hostname",
        "-o", str(out), "--wrap", "hostname",
    )  # fmt: skip
    assert slurm_cluster.wait(job) == "COMPLETED"
    elapsed = time.monotonic() - t0
    print(f"trivial job {job}: submit to COMPLETED in accounting {elapsed:.1f} s")
    print(f"cluster timings: {slurm_cluster.timings}")

    rows = slurm_cluster.sacct(job, "JobName,Partition,State,AllocTRES")
    name, partition, state, tres = rows[0]
    assert (name, partition, state) == ("climai_hostname", "lrd_all_serial", "COMPLETED")
    assert "cpu=1" in tres.split(",")
    assert out.read_text().strip(), "the job wrote no hostname"


def test_gpu_job_gets_four_gpus_and_32_cpus(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "gpu.out"
    job = slurm_cluster.submit(
        "-A", slurm_cluster.account, "-p", "boost_usr_prod", "--gres=gpu:4", "-c", "32",
        "--mem=64G", "-t", "10", "-o", str(out),
        "--wrap", 'echo "CVD=$CUDA_VISIBLE_DEVICES CPT=$SLURM_CPUS_PER_TASK"',
    )  # fmt: skip
    assert slurm_cluster.wait(job) == "COMPLETED"

    assert out.read_text().split() == ["CVD=0,1,2,3", "CPT=32"]
    _name, partition, state, tres = slurm_cluster.sacct(job, "JobName,Partition,State,AllocTRES")[0]
    assert (partition, state) == ("boost_usr_prod", "COMPLETED")
    alloc = dict(item.split("=", 1) for item in tres.split(","))
    assert alloc["gres/gpu"] == "4"
    assert alloc["cpu"] == "32"


@pytest.mark.parametrize("partition", ["dcgp_usr_prod", "lrd_all_serial"])
def test_gpu_request_on_cpu_partition_is_rejected(
    slurm_cluster: SlurmCluster, partition: str
) -> None:
    res = slurm_cluster.sbatch(
        "-A", slurm_cluster.account, "-p", partition, "--gres=gpu:1", "-o", "/dev/null",
        "--wrap", "true",
    )  # fmt: skip
    assert res.returncode != 0, f"GPU job accepted on {partition}: {res.stdout}"
    assert "QOS" in res.stderr, res.stderr


def test_unknown_account_is_rejected(slurm_cluster: SlurmCluster) -> None:
    res = slurm_cluster.sbatch(
        "-A", "no_such_project", "-p", "lrd_all_serial", "-o", "/dev/null", "--wrap", "true"
    )
    assert res.returncode != 0, f"job with unknown account accepted: {res.stdout}"
    assert "account" in res.stderr.lower(), res.stderr
