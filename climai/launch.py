"""How ``climai train`` and ``climai infer`` run inside a job: one process, ``torchrun`` per node,
or ``srun`` + ``torchrun``.

A SLURM job of the ``train`` or ``infer`` rule (profiles/leonardo: ``gres: gpu:4``) sees its GPUs
through ``CUDA_VISIBLE_DEVICES`` (set by SLURM for the job's GPUs) or ``SLURM_GPUS_ON_NODE``. With
more than one usable GPU, or more than one node, the command starts itself again under
``torch.distributed.run`` (torchrun): one process per GPU, each training one DDP rank or
downscaling its share of the time chunks (:mod:`climai.inference.distributed`). Across nodes,
``srun`` starts one torchrun per node, which meet at the first node of the job (c10d rendezvous)
on a port of the job's own (:func:`rendezvous_port`); on one node torchrun's ``--standalone``
picks a free port itself.
Where torch sees no CUDA device (a CPU-only allocation, a CPU build of torch), it stays one process.

Commands are argument lists, never shell strings: config values are passed through unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("climai")

RDZV_PORTS = (20000, 29999)
"""The c10d rendezvous port on the job's first node is taken from this range by the job's id
(:func:`rendezvous_port`), below Linux's ephemeral ports: two jobs sharing a node do not meet
at one fixed port (a fixed 29500 would let one job's ranks join another's rendezvous)."""


class LaunchError(RuntimeError):
    """The distributed launch failed (torchrun or srun exited with an error)."""


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity (a SLURM job's or a cgroup's allocation),
    not every core of the node."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: The line every ``climai`` stage logs as it ends: the kernel's high-water mark of resident
#: memory (:func:`peak_rss_mb`, exact), not a sample. Snakemake's ``benchmark:`` files sample RSS every
#: 0.5 s for 15 s, then every 30 s, and miss short peaks; the benchmarks read this line instead.
PEAK_RSS_LINE = "peak RSS {mb:.0f} MB"

#: The line every ``climai`` stage logs as it starts (not again in torchrun's children): where
#: each attempt begins in ``logs/attempts/<job>.log``, which keeps every attempt of a job
#: (``--job-log``), while Snakemake's ``logs/<job>.log`` holds the last one only.
START_LINE = "climai {command} started on {host}, pid {pid}{job}"
_PEAK_RSS_RE = re.compile(r"peak RSS (\d+) MB")


def peak_rss_mb() -> float:
    """Peak resident memory in MB: this process's (``VmHWM`` of ``/proc/self/status``, which
    starts afresh at ``exec``; ``getrusage`` elsewhere, which also keeps the forking parent's
    pages), or its largest finished child's when larger (a ``torchrun`` relaunch computes in its
    children: then one rank's peak). Not the sum: a forked ``git`` reports the parent's pages."""
    import resource

    try:
        with open("/proc/self/status") as f:
            own = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError, IndexError):  # not Linux
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, child) / 1024


def logged_peak_rss_mb(text: str) -> float | None:
    """The last :data:`PEAK_RSS_LINE` in a job's log, or ``None`` when there is none."""
    found = _PEAK_RSS_RE.findall(text)
    return float(found[-1]) if found else None


def _count_devices(value: str) -> int:
    """Number of devices in a ``CUDA_VISIBLE_DEVICES``-style list (``"0,1,2,3"``)."""
    items = [v for v in value.replace(" ", "").split(",") if v]
    if not items or items == ["NoDevFiles"] or any(v.startswith("-") for v in items):
        return 0  # "-1" or SLURM's "NoDevFiles" hide every device
    return len(items)


def job_gpus(env: Mapping[str, str]) -> int:
    """GPUs the job was given on this node according to SLURM (0 when none or unknown)."""
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        return _count_devices(env["CUDA_VISIBLE_DEVICES"])
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        value = env.get(key, "").split(":")[-1]  # "gpu:4" or "4"
        if value.isdigit():
            return int(value)
    if env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS"):
        return _count_devices(env.get("SLURM_STEP_GPUS") or env["SLURM_JOB_GPUS"])
    return 0


def expand_hostlist(hostlist: str) -> list[str]:
    """Hosts of a SLURM host list: ``"lrdn[0001-0003,0010],login01"`` → 5 names, in order."""
    hosts: list[str] = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", hostlist.replace(" ", "")):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", item)
        if m is None:
            hosts.append(item)
            continue
        if "[" in m[3]:
            raise LaunchError(f"host list {hostlist!r}: several bracket groups are not supported")
        for part in m[2].split(","):
            lo, _, hi = part.partition("-")
            for n in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{m[1]}{n:0{len(lo)}d}{m[3]}")
    return hosts


def job_nodes(env: Mapping[str, str]) -> int:
    """Nodes of the SLURM job (1 outside SLURM).

    Inside a Snakemake job step only the job's identity and what ``srun`` sets for the step are
    left (the jobstep plugin strips the rest): ``SLURM_NNODES`` is then the step's node count, so
    the job's own ``SLURM_JOB_NODELIST`` is counted first.
    """
    if env.get("SLURM_JOB_NUM_NODES", "").isdigit():
        return max(1, int(env["SLURM_JOB_NUM_NODES"]))
    if env.get("SLURM_JOB_NODELIST"):
        return max(1, len(expand_hostlist(env["SLURM_JOB_NODELIST"])))
    if env.get("SLURM_NNODES", "").isdigit():
        return max(1, int(env["SLURM_NNODES"]))
    return 1


def rendezvous_port(job_id: str) -> int:
    """The rendezvous port of the SLURM job ``job_id``: one per job, the same on its every node
    (they all compute it), in :data:`RDZV_PORTS`."""
    if not job_id.isdigit():
        raise LaunchError(
            f"SLURM_JOB_ID={job_id!r} is not a job number: cannot choose the job's rendezvous port"
        )
    lo, hi = RDZV_PORTS
    return lo + int(job_id) % (hi - lo + 1)


def with_threads(cli_args: Sequence[str], threads: int) -> list[str]:
    """``cli_args`` with ``--threads`` set to ``threads`` (each rank gets its share of the cores)."""
    out, skip = [], False
    for arg in cli_args:
        if skip:
            skip = False
        elif arg == "--threads":
            skip = True
        elif not arg.startswith("--threads="):
            out.append(arg)
    return [*out, "--threads", str(threads)]


@dataclass(frozen=True)
class LaunchPlan:
    """What to run: ``argv`` empty means "run the stage in this process"."""

    nproc_per_node: int
    nodes: int
    reason: str
    argv: list[str] = field(default_factory=list)

    @property
    def distributed(self) -> bool:
        return bool(self.argv)


def plan_launch(
    cli_args: Sequence[str],
    env: Mapping[str, str],
    cuda_devices: int,
    threads: int,
    master_addr: str | None = None,
    python: str | None = None,
) -> LaunchPlan:
    """The launch of ``climai <cli_args>`` (e.g. ``["train", "--method", "unet", ...]`` or ``infer``).

    ``cuda_devices`` is what torch sees (``torch.cuda.device_count()``); ``env`` the process
    environment; ``threads`` the cores of the job, shared among the ranks of a node. Already
    inside torchrun (``LOCAL_RANK`` set) it never launches again.
    """
    nodes = job_nodes(env)
    gpus = job_gpus(env)
    if "LOCAL_RANK" in env:
        return LaunchPlan(1, nodes, "already a torchrun worker")
    usable = min(gpus, cuda_devices) if gpus else cuda_devices
    if usable == 0:
        why = (
            f"the job has {gpus} GPU(s) but torch sees no CUDA device"
            if gpus
            else "no GPU in this job"
        )
        return LaunchPlan(1, nodes, f"{why}: one process on the CPU")
    if usable == 1 and nodes == 1:
        return LaunchPlan(1, 1, "one GPU: one process")
    module = [python or sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={usable}"]
    target = ["-m", "climai.cli", *with_threads(cli_args, max(1, threads // usable))]
    if nodes == 1:
        argv = [*module, "--standalone", "--nnodes=1", *target]
        return LaunchPlan(usable, 1, f"{usable} GPUs: torchrun", argv)
    if master_addr is None:
        if not env.get("SLURM_JOB_NODELIST"):
            raise LaunchError(
                f"the job has {nodes} nodes but SLURM_JOB_NODELIST is not set: "
                "cannot find the rendezvous node"
            )
        master_addr = expand_hostlist(env["SLURM_JOB_NODELIST"])[0]
    if not env.get("SLURM_JOB_ID"):
        raise LaunchError(
            f"the job has {nodes} nodes but SLURM_JOB_ID is not set: cannot choose the job's "
            "rendezvous port and id"
        )
    job_id = env["SLURM_JOB_ID"]
    argv = [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        "--overlap",  # the job step running this command already holds the first node
        "--kill-on-bad-exit=1",
        *module,
        f"--nnodes={nodes}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={master_addr}:{rendezvous_port(job_id)}",
        f"--rdzv_id={job_id}",
        *target,
    ]
    return LaunchPlan(usable, nodes, f"{nodes} nodes × {usable} GPUs: srun + torchrun", argv)


def run_plan(plan: LaunchPlan) -> None:
    """Run a distributed plan; a non-zero exit becomes a :class:`LaunchError` naming it."""
    result = subprocess.run(plan.argv, check=False)
    if result.returncode:
        raise LaunchError(
            f"{plan.reason}: {' '.join(plan.argv[:4])} ... exited with status {result.returncode}"
        )


def relaunched_on_every_gpu(args: argparse.Namespace, threads: int) -> bool:
    """Run this ``climai`` command again under torchrun when the job has several GPUs or nodes.

    True when the distributed launch ran (and succeeded): the caller has nothing left to do.
    ``args.argv`` holds the command's own arguments (set by :func:`climai.cli.main`).
    """
    import torch

    plan = plan_launch(args.argv, os.environ, torch.cuda.device_count(), threads)
    log.info(
        "%s launch: %s (CUDA_VISIBLE_DEVICES=%s, SLURM_GPUS_ON_NODE=%s, SLURM_JOB_NUM_NODES=%s)",
        args.command,
        plan.reason,
        *(
            os.environ.get(k)
            for k in ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE", "SLURM_JOB_NUM_NODES")
        ),
    )
    if not plan.distributed:
        return False
    log.info("%s launch: %s", args.command, " ".join(plan.argv))
    run_plan(plan)
    return True
