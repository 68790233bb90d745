"""A real single-node SLURM cluster for tests marked ``slurm``.

The session fixture ``slurm_cluster`` reuses a cluster that already answers (the one of
``tests/hpc/slurm_cluster.sh`` or a site's own); otherwise it installs the Debian packages and
starts one with that script, and stops it at the end of the session. Where the packages cannot
be installed (no root, no apt-get, no package registry) the tests are skipped with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("slurm_cluster.sh")
ACCOUNT = os.environ.get("CLIMAI_SLURM_TEST_ACCOUNT", "climai_test")
TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(
    args: list[str], env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class SlurmCluster:
    """Handle on the running cluster: its environment and small helpers around the CLI."""

    env: dict[str, str]
    account: str = ACCOUNT
    started_here: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return _run(list(args), self.env, timeout)

    def sbatch(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``sbatch --parsable ARGS``; the caller checks the return code."""
        return self.run("sbatch", "--parsable", *args)

    def submit(self, *args: str) -> str:
        """Submit and return the job id; fail the test with sbatch's message if refused."""
        res = self.sbatch(*args)
        assert res.returncode == 0, f"sbatch {' '.join(args)} refused: {res.stderr.strip()}"
        return res.stdout.strip().split(";")[0]

    def sacct(self, job_id: str, fmt: str) -> list[list[str]]:
        """Rows of ``sacct -j JOB --format=FMT -P -n`` (allocation first, then steps)."""
        res = self.run("sacct", "-j", job_id, f"--format={fmt}", "-P", "-n")
        assert res.returncode == 0, res.stderr
        return [line.split("|") for line in res.stdout.splitlines() if line.strip()]

    def wait(self, job_id: str, timeout: float = 120) -> str:
        """Wait until the job's accounting record is final; return its state.

        slurmdbd may get a job's end before its start record: sacct then briefly shows a
        placeholder row (JobName ``allocation``, no Partition) already COMPLETED. So wait for
        a terminal state *and* a partition.
        """
        deadline = time.monotonic() + timeout
        state = "UNKNOWN"
        while time.monotonic() < deadline:
            rows = self.sacct(job_id, "State,Partition")
            if rows:
                state = rows[0][0].split()[0]  # "CANCELLED by 0" -> "CANCELLED"
                if state in TERMINAL_STATES and rows[0][1]:
                    return state
            time.sleep(0.3)
        pytest.fail(f"job {job_id} still {state} after {timeout:.0f} s")


def _env_from_script(base: dict[str, str]) -> dict[str, str]:
    """Environment after ``eval "$(slurm_cluster.sh env)"``."""
    out = subprocess.run(
        ["bash", str(SCRIPT), "env"], env=base, capture_output=True, text=True, check=True
    ).stdout
    env = dict(base)
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


def _answers(env: dict[str, str]) -> bool:
    """True when sbatch's controller and the accounting (with our account) both answer."""
    if shutil.which("sbatch", path=env.get("PATH")) is None:
        return False
    try:
        if _run(["scontrol", "ping"], env, timeout=15).returncode != 0:
            return False
        acct = _run(["sacctmgr", "-n", "-P", "show", "account", ACCOUNT, "format=account"], env, 15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return acct.returncode == 0 and ACCOUNT in acct.stdout.split()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    # pytest-xdist workers share the machine's one cluster: starting it is serialised by a file
    # lock (the second worker then finds it answering), and no worker stops it while another may
    # still be using it (under xdist it is left running; `slurm_cluster.sh stop` stops it).
    import fcntl

    with open("/tmp/climai-slurm-fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cluster = _running_cluster()
    try:
        yield cluster
    finally:
        if cluster.started_here and "PYTEST_XDIST_WORKER" not in os.environ:
            stop = _run(["bash", str(SCRIPT), "stop"], cluster.env, timeout=180)
            if stop.returncode != 0:
                print(f"slurm_cluster.sh stop failed:\n{_tail(stop.stderr + stop.stdout)}")


def _running_cluster() -> SlurmCluster:
    """A cluster that answers: the one already running, else installed and started here."""
    base = dict(os.environ)
    script_env = _env_from_script(base)
    for env in (base, script_env):
        if _answers(env):
            return SlurmCluster(env=env)

    if os.geteuid() != 0:
        pytest.skip("no SLURM cluster answers and starting one needs root")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no SLURM cluster answers and apt-get is missing to install one")

    t0 = time.monotonic()
    try:
        inst = _run(["bash", str(SCRIPT), "install"], script_env, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("installing the SLURM packages took over 15 minutes")
    if inst.returncode != 0:
        pytest.skip(
            "cannot install SLURM packages (munge slurmctld slurmd slurm-client slurmdbd "
            f"mariadb-server):\n{_tail(inst.stderr + inst.stdout)}"
        )
    t1 = time.monotonic()
    start = _run(["bash", str(SCRIPT), "start"], script_env, timeout=300)
    if start.returncode != 0:
        # The packages are there, so a cluster that does not come up is a real failure.
        _run(["bash", str(SCRIPT), "stop"], script_env, timeout=120)
        pytest.fail(f"slurm_cluster.sh start failed:\n{_tail(start.stderr + start.stdout, 80)}")
    return SlurmCluster(
        env=script_env,
        started_here=True,
        timings={"install_s": t1 - t0, "start_s": time.monotonic() - t1},
    )


def slurm_run_id(snakemake_output: str) -> str:
    """The SLURM run ID a Snakemake run logged: the job name of every job it submitted, so a
    test's ``sacct`` query sees its own jobs only (other tests may share the cluster)."""
    found = re.findall(r"SLURM run ID: (\S+)", snakemake_output)
    assert found, "Snakemake's log has no 'SLURM run ID' line"
    return found[-1]
