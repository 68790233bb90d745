"""Where dask runs: the threaded scheduler (default) or a ``dask.distributed`` cluster.

``threads``: dask's threaded scheduler with the rule's threads (the fastest on one node: no
serialisation between processes). ``local``: a ``LocalCluster`` of worker processes. ``slurm``: a
``dask_jobqueue.SLURMCluster`` whose worker jobs are charged to ``$SLURM_ACCOUNT``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import dask

from climai.config import PreprocessConfig

log = logging.getLogger("climai")


@contextlib.contextmanager
def dask_scheduler(cfg: PreprocessConfig, threads: int) -> Iterator[None]:
    """Run the dask computations inside this block on the scheduler ``cfg`` asks for."""
    dist = cfg.distributed
    if cfg.scheduler == "threads":
        with dask.config.set(scheduler="threads", num_workers=max(1, threads)), _progress(cfg):
            yield
        return
    from distributed import Client, LocalCluster

    if cfg.scheduler == "local":
        cluster = LocalCluster(
            n_workers=dist.workers,
            threads_per_worker=dist.threads_per_worker,
            memory_limit=dist.memory_limit,
            processes=True,
            dashboard_address=None,
        )
    else:
        cluster = slurm_cluster(cfg)
        cluster.scale(jobs=dist.workers)
    with cluster, Client(cluster) as client:
        log.info("dask.distributed: %s (%s)", cfg.scheduler, client)
        yield


def slurm_cluster(cfg: PreprocessConfig) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` (no jobs submitted yet) for ``preprocess.distributed``."""
    from dask_jobqueue import SLURMCluster

    dist = cfg.distributed
    account = os.environ.get("SLURM_ACCOUNT")
    if not account:
        raise ValueError(
            "preprocess.scheduler=slurm: the environment variable SLURM_ACCOUNT is not set"
        )
    return SLURMCluster(
        cores=dist.threads_per_worker,
        processes=1,
        memory=dist.memory_limit,
        queue=dist.queue,
        account=account,
        walltime=dist.walltime,
        scheduler_options={"dashboard_address": None},
    )


@contextlib.contextmanager
def _progress(cfg: PreprocessConfig) -> Iterator[None]:
    if not cfg.progress:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=2.0, dt=1.0, out=sys.stderr):
        yield
