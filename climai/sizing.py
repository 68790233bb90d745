"""Each job's size from the cost model (:mod:`climai.cost`): cores, memory, minutes, GPUs, partition.

At DAG-build time (the rules' ``resources:``) and in ``climai plan``, every job of a campaign is
sized from its workload (:func:`campaign_workload`: the config's grid, steps and splits, or the
ingested store's shape) with a safety factor on the cost model's estimate:
:data:`MEM_SAFETY` on memory, :data:`TIME_SAFETY` on run time. Where the jobs may run is site
policy: a profile's ``partitions.yaml`` (:func:`read_partitions`); a job goes to the partition that
fits it most tightly (a GPU job only where there are GPUs, a CPU job only where there are none).
An ``infer`` (an emulator's or a baseline's, not a whole-series one) whose run time exceeds every
partition's limit is split into time blocks (``infer_block`` jobs gathered by ``infer_gather``);
jobs whose work threads share (evaluate, compare, export, ingest, preprocess) get the cores
that bring their estimate near an hour (:func:`scaled_cores`); any other job that fits no partition stops
the run before submission (:class:`JobTooLarge`), naming the limit, the estimate and the config key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from climai.cost import (
    MACHINES,
    Estimate,
    MachineCosts,
    Workload,
    ceil_to,
    estimate,
    load_coefficients,
    unet_activation_bytes,
    unet_flops_per_cell,
)
from climai.hpc import JobSize

if TYPE_CHECKING:
    from climai.config import EmulatorConfig
    from climai.config.campaign import CampaignConfig

#: Requested memory = estimate × MEM_SAFETY (rounded up to 100 MB).
MEM_SAFETY = 1.3
#: A cluster job also holds its own Snakemake process (the SLURM plugin's job step), which
#: the rule's ``benchmark:`` file does not count: this much is added to its memory (MB).
CLUSTER_JOB_MB = 250
#: A cluster job asks at least this many minutes (its start-up on a loaded node: the job's
#: Snakemake, imports, a shared filesystem), whatever its estimate.
CLUSTER_MIN_MINUTES = 10
#: Requested run time = estimate × TIME_SAFETY (rounded up to whole minutes).
TIME_SAFETY = 1.5
#: A GPU job asks for one GPU when its single-GPU estimate is under this many seconds, else for
#: every GPU of a node (the partition's ``max_gpu``, 4 when no partitions are known).
ONE_GPU_SECONDS = 2 * 3600
#: ingest, preprocess, evaluate, export and compare (:data:`SCALED_RULES`) get enough cores for
#: about this many seconds of their one-thread estimate (ingest and preprocess: 1 to 32; the
#: others up to the largest CPU partition's max_threads, 32 without partitions).
PREPROCESS_TARGET_SECONDS = 3600
#: A block of a split infer is sized to this fraction of the partition's time limit.
BLOCK_FILL = 0.8
#: Rules whose jobs use one core; train/infer use the torch threads, SCALED_RULES' cores come
#: from their estimate (:func:`scaled_cores`).
SERIAL_RULES = ("manifest", "sweep", "lineage")
#: Rules that may run beside Snakemake (on a cluster, the controller's node: a login node kills
#: a process after 10 minutes of CPU time) instead of as a job of their own, when small.
CONTROLLER_RULES = ("compare", "manifest", "sweep", "lineage")
#: ... at most this many seconds of one-core work by the cost model's estimate.
CONTROLLER_SECONDS = 120
#: Rules whose work is shared by threads (cost.PARALLEL_RULES) and whose cores are chosen for a
#: target time: dask (ingest, preprocess), runs of time blocks (evaluate, compare's scoring),
#: chunks compressed in threads (export; a split infer's gather copies chunks in threads).
SCALED_RULES = ("ingest", "preprocess", "evaluate", "export", "compare")
#: The config key that shrinks each rule's run time (memory: the domain, ``domain``).
TIME_KEYS = {
    "ingest": "data.target.steps (or fewer source files)",
    "preprocess": "data.target.steps (or domain)",
    "train": "methods.{method}.epochs (or patches_per_step)",
    "infer": "split.test (or infer.device: cuda)",
    "evaluate": "split.test (or evaluate.metrics)",
    "export": "split.test",
    "compare": "split.test",
    "manifest": "data.target.steps",
}


class JobTooLarge(ValueError):
    """A job that fits no partition of the site profile and cannot be split (``args[1]``: its
    :class:`JobPlan`, without a partition)."""


@dataclass(frozen=True)
class Partition:
    """One partition's limits per job (a profile's ``partitions.yaml``)."""

    name: str
    max_runtime: int  # minutes
    max_threads: int
    max_mem_mb: int
    max_gpu: int = 0

    def fits(self, size: JobSize) -> bool:
        return (
            size.cpus <= self.max_threads
            and size.mem_mb <= self.max_mem_mb
            and size.runtime <= self.max_runtime
            and size.gpus <= self.max_gpu
            and (size.gpus > 0) == (self.max_gpu > 0)
        )

    def tightness(self, size: JobSize) -> float:
        """How much of the partition the job asks (higher: a tighter fit)."""
        return (
            size.cpus / self.max_threads
            + size.mem_mb / self.max_mem_mb
            + size.runtime / self.max_runtime
        )


def read_partitions(path: str | Path) -> list[Partition]:
    """The partitions of a ``partitions.yaml`` (the SLURM plugin's ``slurm-partition-config``)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("partitions"), dict):
        raise ValueError(f"{str(path)!r}: no 'partitions' mapping (name → limits)")
    out = []
    for name, lim in data["partitions"].items():
        out.append(Partition(name, int(lim.get("max_runtime", 10**9)),
                             int(lim.get("max_threads", 10**9)),
                             int(lim.get("max_mem_mb", 10**12)), int(lim.get("max_gpu", 0))))  # fmt: skip
    return out


def request_mb(estimate_mb: float) -> int:
    """The memory asked for an estimate: × MEM_SAFETY, rounded up to 10 MB (100 MB from 10 GB)."""
    mb = estimate_mb * MEM_SAFETY
    return max(50, ceil_to(mb, 10 if mb < 10_000 else 100))


def choose_partition(size: JobSize, partitions: list[Partition]) -> Partition | None:
    """The partition that fits ``size`` most tightly; None when none fits."""
    fitting = [p for p in partitions if p.fits(size)]
    return max(fitting, key=lambda p: p.tightness(size)) if fitting else None


def _split_steps(cfg: CampaignConfig, steps: int) -> tuple[int, int, int]:
    """Steps of train, val and test: the preprocess split's arithmetic for fractions; for time
    ranges of a synthetic target, the hours inside each range; else 70/10/20 % (an estimate)."""
    split = cfg.split
    if isinstance(split.train, list):
        target = cfg.data.target
        if getattr(target, "source", "") == "synthetic":
            from datetime import datetime

            t0 = datetime.fromisoformat(target.start)

            def hours(r: list[str]) -> int:
                lo = (datetime.fromisoformat(r[0]) - t0).total_seconds() / 3600
                hi = (datetime.fromisoformat(r[1]) - t0).total_seconds() / 3600
                return max(0, min(steps - 1, math.floor(hi)) - max(0, math.ceil(lo)) + 1)

            return hours(split.train), hours(split.val), hours(split.test)  # type: ignore[arg-type]
        return round(0.7 * steps), round(0.1 * steps), round(0.2 * steps)
    edges, total = [], 0.0
    for f in (split.train, split.val, split.test):
        total += float(f)  # type: ignore[arg-type]
        edges.append(round(total * steps))  # banker's rounding, as numpy's rint
    edges[-1] = steps
    train, val, test = edges[0], edges[1] - edges[0], edges[2] - edges[1]
    return train, max(0, val - split.gap), max(0, test - split.gap)


def grid_shape(cfg: CampaignConfig) -> tuple[int, int, int] | None:
    """``(steps, ny, nx)`` of the HR target: the synthetic world's, else the ingested store's
    (``ingest/target.zarr``) or, for a campaign that reuses another's prepared data
    (``prepared:``), that prepared store's, else as the source files' headers tell before ingest
    (:func:`climai.io.headers.target_shape`), else None (a URL or a reader plugin)."""
    target = cfg.data.target
    meta = cfg.campaign_dir / "ingest" / "target.zarr" / cfg.variable_names[0] / "zarr.json"
    if cfg.reuses_data:
        from climai.data.prepared import hr_key

        meta = cfg.prepared_dir / "dataset.zarr" / hr_key(cfg.variable_names[0]) / "zarr.json"
    if meta.is_file():
        t, y, x = json.loads(meta.read_text())["shape"][-3:]
        return int(t), int(y), int(x)
    if getattr(target, "source", "") == "synthetic" and cfg.domain is None:
        return target.steps, target.ny, target.nx  # type: ignore[union-attr]
    if cfg.reuses_data:
        return None  # its data keys are the other campaign's: sized once that one is prepared
    from climai.io.headers import target_shape

    return target_shape(cfg)


def campaign_workload(cfg: CampaignConfig, method: str | None = None) -> Workload | None:
    """The workload of a job of ``cfg`` for ``method`` (None for rules without one), or None
    when the grid is unknown before ingest."""
    shape = grid_shape(cfg)
    if shape is None:
        return None
    steps, ny, nx = shape
    train, val, test = _split_steps(cfg, steps)
    nvar = len(cfg.variables)
    w = Workload(
        ny, nx, cfg.scale, nvar, steps, train, val, test, hr_bytes=4 * steps * ny * nx * nvar,
        tile=cfg.infer.tile, overlap=cfg.infer.overlap, time_block=cfg.infer.time_block,
        infer_memory_mb=cfg.infer.memory_mb, infer_batch=cfg.infer.batch,
    )  # fmt: skip
    if method is None:
        return w
    m = cfg.methods.get(method)
    members = int(getattr(m, "members", 1))
    channels = getattr(m, "channels", None)
    w = replace(
        w,
        members=members,
        train_members=int(getattr(m, "train_members", 2 if members > 1 else 1)),
        epochs=int(getattr(m, "epochs", 0)),
        patch=int(getattr(m, "patch", 0)),
        batch=int(getattr(m, "batch", 0)),
        patches_per_step=int(getattr(m, "patches_per_step", 0)),
        pooled_patches=int(getattr(m, "pooled_patches", None) or 0)
        if getattr(m, "train_on", None)
        else 0,
        threads=cfg.torch_threads(method),
        flops_per_cell=unet_flops_per_cell(channels) if channels else w.flops_per_cell,
        act_bytes_per_cell=unet_activation_bytes(channels) if channels else 0.0,
        loader=str(getattr(m, "loader", "auto")),
        memory_limit_gb=float(getattr(m, "memory_limit_gb", 2.0)),
    )
    pooled = pooled_load(cfg, method)
    if pooled is not None:
        w = replace(w, pooled_patches=pooled[0], pooled_bytes=pooled[1])
    return w


def _pooled_method(cfg: CampaignConfig, method: str) -> EmulatorConfig | None:
    """The config of ``method`` when it trains on other campaigns (``train_on``), else None."""
    from climai.config import EmulatorConfig

    m = cfg.methods.get(method)
    return m if isinstance(m, EmulatorConfig) and m.train_on else None


def pooled_stores(cfg: CampaignConfig, method: str) -> dict[str, Path]:
    """The prepared datasets a ``train_on`` method trains and validates on (empty without
    ``train_on``): ``climai.training.resident.source_paths``'s, under this campaign's results."""
    from climai.training.resident import source_paths

    m = _pooled_method(cfg, method)
    return {} if m is None else source_paths(m, Path(cfg.results), cfg.campaign, Path())


def pooled_missing(cfg: CampaignConfig, method: str) -> list[str]:
    """The ``train_on``/``validate_on`` campaigns of ``method`` not prepared yet: until they are,
    its training is sized as before the grid is known (``climai.hpc.JOB_SIZES``)."""
    return [n for n, p in pooled_stores(cfg, method).items() if not (p / "zarr.json").is_file()]


def pooled_load(cfg: CampaignConfig, method: str) -> tuple[int, int] | None:
    """``(patches per epoch, bytes held in RAM)`` of a ``train_on`` method's pooled loaders
    (``climai.training.pooled``: ``pooled_patches`` or every train_on campaign's train steps ×
    ``patches_per_step``; :func:`~climai.training.resident.resident_bytes` of each campaign),
    from the prepared stores; None without ``train_on`` or while one is not prepared."""
    m = _pooled_method(cfg, method)
    if m is None or pooled_missing(cfg, method):
        return None
    from climai.data.prepared import PreparedDataset
    from climai.io import open_store
    from climai.training.resident import resident_bytes

    train_on = list(m.train_on or [])
    validate_on = list(m.validate_on or train_on)
    patches, held = 0, 0
    for name, path in pooled_stores(cfg, method).items():
        prep = PreparedDataset(open_store(path))
        if name in train_on:
            patches += max(1, prep.split_size("train") * m.patches_per_step)
        held += resident_bytes(prep, m, cfg.variable_names, name in train_on, name in validate_on)
    return max(int(m.pooled_patches or patches), m.batch), held


@dataclass(frozen=True)
class Sizer:
    """What sizes jobs: the coefficients of the host and GPU kinds, the site's partitions (None:
    a local run, no limits) and whether emulators compute on GPUs."""

    host: MachineCosts
    gpu: MachineCosts
    partitions: list[Partition] | None = None
    gpus_available: bool = False

    @classmethod
    def load(cls, partitions: list[Partition] | None, gpus_available: bool) -> Sizer:
        return cls(load_coefficients(MACHINES["cpu"]), load_coefficients(MACHINES["gpu"]),
                   partitions, gpus_available)  # fmt: skip


@dataclass(frozen=True)
class JobPlan:
    """One rule and method's jobs: how many, each one's size and partition, and the estimate."""

    rule: str
    method: str | None
    jobs: int
    size: JobSize
    partition: str | None
    estimate: Estimate  # per job, before the safety factors

    share: float = 1.0  # the fraction of a node asked (cores, memory or GPUs, the largest)
    problem: str | None = None  # why no partition fits (a job the run would refuse)
    qos: str | None = None  # the QOS asked (a profile's qos.yaml or set-resources); None: default

    @property
    def node_hours(self) -> float:
        """Node-hours charged if every job ran its whole requested time: jobs × hours × the
        fraction of the node asked (0 for a job that fits no partition)."""
        return 0.0 if self.problem else self.jobs * self.size.runtime / 60 * self.share


def _gpu_job(cfg: CampaignConfig, rule: str, kind: str | None, sizer: Sizer) -> bool:
    return (
        rule in ("train", "infer")
        and kind == "emulator"
        and sizer.gpus_available
        and not (rule == "infer" and cfg.infer.device == "cpu")
    )


def _size(
    rule: str, kind: str | None, w: Workload, sizer: Sizer, gpu: bool, cpus: int,
    mtype: str | None = None,
) -> tuple[JobSize, Estimate]:  # fmt: skip
    """The job size of ``rule`` on ``cpus`` cores (and GPUs when ``gpu``)."""
    max_gpu = max([p.max_gpu for p in sizer.partitions or []] or [4])
    if gpu:
        one = estimate(rule, kind, w, sizer.host, sizer.gpu, 1, mtype)
        gpus = 1 if one.seconds * TIME_SAFETY < ONE_GPU_SECONDS else max_gpu
        est = estimate(rule, kind, w, sizer.host, sizer.gpu, gpus, mtype) if gpus > 1 else one
        cpus = w.threads * gpus
    else:
        gpus = 0
        est = estimate(rule, kind, replace(w, threads=cpus), sizer.host, None, 1, mtype)
    extra = CLUSTER_JOB_MB if sizer.partitions is not None else 0
    size = JobSize(cpus=cpus, mem_mb=request_mb(est.mem_mb) + extra,
                   runtime=max(CLUSTER_MIN_MINUTES if extra else 1,
                               math.ceil(est.seconds * TIME_SAFETY / 60)), gpus=gpus)  # fmt: skip
    return size, est


def size_rule(
    cfg: CampaignConfig, rule: str, method: str | None, kind: str | None, w: Workload, sizer: Sizer
) -> list[JobPlan]:
    """The jobs of ``rule`` (for ``method`` of ``kind``): one, or for an ``infer`` too long for
    any partition (:func:`splittable`), ``infer_block`` jobs and their ``infer_gather``."""
    gpu = _gpu_job(cfg, rule, kind, sizer)
    mtype = cfg.methods.type_of(method) if method else None
    cpus = 1 if rule in SERIAL_RULES or (rule == "infer" and kind == "baseline") else w.threads
    if rule in SCALED_RULES:
        cpus = scaled_cores(rule, kind, w, sizer, mtype)
    size, est = _size(rule, kind, w, sizer, gpu, cpus, mtype)
    if sizer.partitions is None:
        return [JobPlan(rule, method, 1, size, None, est)]
    part = choose_partition(size, sizer.partitions)
    if part is not None:
        return [job_plan(rule, method, 1, size, part, est)]
    kin = [p for p in sizer.partitions if (p.max_gpu > 0) == gpu]
    longest = max(kin, key=lambda p: p.max_runtime) if kin else None
    too_long = longest is not None and size.runtime > longest.max_runtime
    if rule == "infer" and splittable(mtype) and too_long and longest is not None:
        return _split_infer(method, kind, mtype, w, sizer, gpu, cpus, size, longest)
    raise JobTooLarge(
        _why(rule, method, size, est, kin, gpu), JobPlan(rule, method, 1, size, None, est)
    )


def scaled_cores(
    rule: str, kind: str | None, w: Workload, sizer: Sizer, mtype: str | None = None
) -> int:
    """Cores of a job of :data:`SCALED_RULES`: a power of two giving about
    :data:`PREPROCESS_TARGET_SECONDS` of its one-thread estimate, at most 32 for ingest and
    preprocess (at least 2 for preprocess, as local runs thread it), else at most the largest
    CPU partition's ``max_threads`` (32 without partitions)."""
    serial = estimate(rule, kind, replace(w, threads=1), sizer.host, None, 1, mtype).seconds
    wanted = 2 ** math.ceil(math.log2(max(1.0, serial / PREPROCESS_TARGET_SECONDS)))
    if rule in ("ingest", "preprocess"):
        return min(32, max(1 if rule == "ingest" else 2, wanted))
    cpu = [p.max_threads for p in sizer.partitions or [] if p.max_gpu == 0]
    return min(max(cpu) if cpu else 32, wanted)


def splittable(mtype: str | None) -> bool:
    """Whether an infer of method type ``mtype`` may be split into time blocks: every type but
    a whole-series baseline (qdm: per-cell ranks over the whole series)."""
    from climai.registry import method_type

    return mtype is None or not method_type(mtype).whole_series


def job_plan(
    rule: str, method: str | None, jobs: int, size: JobSize, part: Partition, est: Estimate
) -> JobPlan:
    """``jobs`` jobs of ``size`` on ``part``, charged by the largest fraction of its node they ask."""
    share = max(size.cpus / part.max_threads, size.mem_mb / part.max_mem_mb,
                size.gpus / part.max_gpu if part.max_gpu else 0.0)  # fmt: skip
    return JobPlan(rule, method, jobs, size, part.name, est, min(1.0, share))


def _split_infer(
    method: str | None, kind: str, mtype: str | None, w: Workload, sizer: Sizer, gpu: bool,
    cpus: int, size: JobSize, longest: Partition,
) -> list[JobPlan]:  # fmt: skip
    """``infer`` as ``blocks`` jobs over contiguous shares of the test split, and the gather."""
    blocks = math.ceil(size.runtime / (longest.max_runtime * BLOCK_FILL))
    while True:
        bw = replace(w, steps_test=math.ceil(w.steps_test / blocks))
        bsize, best = _size("infer", kind, bw, sizer, gpu, cpus, mtype)
        part = choose_partition(bsize, sizer.partitions or [])
        if part is not None:
            break
        if bsize.runtime <= longest.max_runtime or blocks >= w.steps_test:
            raise JobTooLarge(_why("infer", method, bsize, best, [longest], gpu))
        blocks *= 2
    # the gather copies the store once, chunks in threads: sized as an export (an upper bound)
    gcpus = scaled_cores("export", kind, w, sizer, mtype)
    gsize, gest = _size("export", kind, w, sizer, False, gcpus, mtype)
    gpart = choose_partition(gsize, sizer.partitions or [])
    if gpart is None:
        raise JobTooLarge(_why("infer_gather", method, gsize, gest, sizer.partitions or [], False))
    return [job_plan("infer_block", method, blocks, bsize, part, best),
            job_plan("infer_gather", method, 1, gsize, gpart, gest)]  # fmt: skip


def _why(
    rule: str, method: str | None, size: JobSize, est: Estimate, kin: list[Partition], gpu: bool
) -> str:
    what = f"rule {rule}" + (f" for method {method!r}" if method else "")
    where = "GPU" if gpu else "CPU"
    if not kin:
        return f"{what}: the site profile's partitions.yaml has no {where} partition"
    checks = [
        ("memory", size.mem_mb, "MB", "max_mem_mb", est.mem_mb, "domain (fewer HR cells per step)"),
        ("run time", size.runtime, "min", "max_runtime", est.seconds / 60,
         TIME_KEYS.get(rule.split("_")[0], "").format(method=method)),
        ("cores", size.cpus, "", "max_threads", size.cpus, "compute.threads"),
    ]  # fmt: skip
    for name, asked, unit, limit, raw, key in checks:
        best = max(kin, key=lambda p: getattr(p, limit))
        if asked > getattr(best, limit):
            return (
                f"{what}: estimated {name} {asked} {unit} (cost model {raw:.0f} {unit} × safety "
                f"{MEM_SAFETY if name == 'memory' else TIME_SAFETY}) exceeds {limit} "
                f"{getattr(best, limit)} {unit} of {best.name}, the largest {where} partition; "
                f"change {key}, or give the rule its own slurm_partition in a profile's set-resources"
            )
    return f"{what}: {size} fits no {where} partition of the site profile"


def beside_snakemake(plan: JobPlan | None) -> bool:
    """Whether a job of :data:`CONTROLLER_RULES` runs beside Snakemake (a ``localrule``): only
    when its plan asks one core for at most :data:`CONTROLLER_SECONDS` by the estimate. A large
    campaign's ``compare`` (dozens of cores, hours) or ``manifest`` (hours of checksums), or
    one not yet sized (``plan`` None: the grid is unknown before ingest), is a job of its own."""
    return (
        plan is not None
        and plan.rule in CONTROLLER_RULES
        and plan.size.cpus == 1
        and plan.estimate.seconds <= CONTROLLER_SECONDS
    )


def retry_size(size: JobSize, attempt: int, partition: Partition | None) -> JobSize:
    """The size of a job's ``attempt`` (Snakemake's, 1 first): a retry of a job that hit its
    time or memory limit asks ``attempt`` × the minutes and memory, up to ``partition``'s limits
    (so it stays where it was planned); unchanged without a partition or on the first attempt."""
    if attempt <= 1 or partition is None:
        return size
    return replace(
        size,
        runtime=max(size.runtime, min(size.runtime * attempt, partition.max_runtime)),
        mem_mb=max(size.mem_mb, min(size.mem_mb * attempt, partition.max_mem_mb)),
    )
