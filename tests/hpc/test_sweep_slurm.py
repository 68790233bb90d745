"""A sweep through ``profiles/leonardo`` on the real test SLURM cluster: every variant's train
is a SLURM job of its own (issue 11, acceptance 3), and the sweep rule ranks them."""

from __future__ import annotations

import csv
import time
from typing import TYPE_CHECKING

import pytest

from climai.testing import write_config
from tests.hpc.conftest import slurm_run_id
from tests.hpc.test_leonardo_profile import PROFILE, job_env, snakemake

if TYPE_CHECKING:
    from .conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1200)]

CAMPAIGN = {
    "campaign": "hpc-sweep",
    "data": {"target": {"nx": 32, "ny": 32, "steps": 32}},
    "methods": {
        "bicubic": None,
        "nearest": None,
        "quantile-mapping": None,
        "unet": {
            "epochs": 1,
            "patch": 16,
            "batch": 8,
            "sweep": {"lr": [7e-4, 2e-3], "loss": ["mse", "mae"]},
        },
    },
}
VARIANTS = {"unet-lr7e-04-mse", "unet-lr7e-04-mae", "unet-lr2e-03-mse", "unet-lr2e-03-mae"}


def test_each_sweep_variant_trains_in_its_own_slurm_job(slurm_cluster: SlurmCluster, tmp_path):
    env = job_env(slurm_cluster)
    write_config(tmp_path / "hpc.yaml", **CAMPAIGN)
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    target = "results/hpc-sweep/evaluation/sweep_unet.md"
    res = snakemake(
        tmp_path,
        env,
        target,  # before --configfile, which takes every value after it
        "--profile",
        str(PROFILE),
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--configfile",
        "hpc.yaml",
    )
    assert res.returncode == 0, res.stderr[-4000:]
    run_id = slurm_run_id(res.stdout + res.stderr)  # this run's jobs only
    acct = slurm_cluster.run(
        "sacct", "-X", "-n", "-P", "-S", start, "--format=JobID,JobName,Partition,Comment,State"
    )
    assert acct.returncode == 0, acct.stderr
    trains = {}
    for line in acct.stdout.splitlines():
        job_id, name, partition, comment, state = line.split("|")
        if name == run_id and comment.startswith("rule_train_wildcards_"):
            trains[comment.removeprefix("rule_train_wildcards_")] = (job_id, partition, state)
    assert set(trains) == VARIANTS, acct.stdout
    assert len({job for job, _, _ in trains.values()}) == 4  # four separate SLURM jobs
    assert all(p == "boost_usr_prod" and s == "COMPLETED" for _, p, s in trains.values())
    with (tmp_path / "results/hpc-sweep/evaluation/sweep_unet.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == VARIANTS
    assert [float(r["score"]) for r in rows] == sorted(float(r["score"]) for r in rows)
