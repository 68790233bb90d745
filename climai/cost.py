"""The cost model: peak memory and run time of each job, from the workload and measured coefficients.

A job's cost depends on its rule, its method's class (``baseline`` or ``emulator``), the device
it computes on and its :class:`Workload` (HR cells per step, time steps per split, variables,
ensemble members, patch and batch size, epochs, threads). Each rule has one *time driver* and one
*memory driver* (:func:`drivers`): the quantity its run time and its peak RSS grow with, e.g.
train's patch cells seen (``epochs × steps_train × patches_per_step × patch²``, times the network's
cost per cell relative to the default U-Net). The model is linear in each driver::

    seconds = t0 + t1 × time driver / threads ** THREAD_EXPONENT   (parallel rules on CPU cores)
    peak MB = m0 + m1 × memory driver (+ THREAD_MB × (threads − 1) for rules with per-thread state)
              (+ an emulator's forward working set, Workload.forward_mb, for its infer on CPU)

with ``(t0, t1, m0, m1)`` per rule and class, stored per machine kind in ``climai/costs/<kind>.json``
and regenerated from measurement records by ``benchmarks/fit_costs.py`` (:func:`fit`). Host memory
always comes from the CPU kind's file (the same code runs on the host of a GPU job, once per GPU
rank); run time of GPU jobs from the GPU kind's file. Pure functions, no I/O except
:func:`load_coefficients`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

COSTS_DIR = Path(__file__).with_name("costs")
#: Machine kind of each device class: what ``climai/costs/<kind>.json`` sizes it.
MACHINES = {"cpu": "cpu-2core-epyc", "gpu": "a100"}
#: Forward FLOPs per HR cell of the default U-Net (channels 16-32-64), the unit of the
#: ``width`` factor (measured in issue 17: 67 kFLOP per HR cell).
DEFAULT_FLOPS_PER_CELL = 67_000.0
#: The inference engine's work per HR cell outside the network (input building, blending,
#: denormalising, writing), in units of the default U-Net's forward: a stated constant, not
#: fitted. With that network the engine ran at 0.83–1.0 of its bare forward's speed at 2048²
#: (BENCHMARKS.md, "infer"), i.e. up to ~0.2 more work; without the term a narrow network's
#: inference (the scale benchmark's 4-8-16 U-Net) would be estimated at its few FLOPs alone.
ENGINE_CELL_COST = 0.2
#: Parallel rules' compute time on CPU cores scales with ``1 / threads ** THREAD_EXPONENT``:
#: 0.75 rather than 1 (speed-ups of torch and dask on many cores are below linear; a stated
#: assumption, the records here ran with 1 and 2 threads).
THREAD_EXPONENT = 0.75
#: Rules whose compute uses the job's threads (torch, dask; evaluate and compare's streamed
#: scoring: runs of time blocks in threads, climai/evaluation/stream.py; export: chunks
#: compressed in threads, climai/io/netcdf.py).
PARALLEL_RULES = frozenset({"ingest", "preprocess", "train", "infer", "evaluate", "compare",
                            "export"})  # fmt: skip
#: Host MB each thread beyond the first adds (its own block of input, float64 working copies and
#: accumulators: 16 MiB of quantile histograms per prediction), the largest a second thread
#: added in BENCHMARKS.md ("Threads", issue 24), rounded up: evaluate +161 MB (benchmarks/
#: threads.py) and +237 MB (the toy campaign's 8-member unet-crps), compare +206 MB (4
#: predictions) and +288 MB (the toy campaign's 4 methods); export's threads hold at most 2
#: tasks of 16 MiB each (+3 MB measured).
THREAD_MB = {"evaluate": 250.0, "compare": 300.0, "export": 50.0}
#: Host MB each GPU rank adds when it first uses its GPU (the CUDA context, its kernels and
#: libraries mapped into the process): ~1.1-1.2 GB reported for PyTorch since CUDA's lazy module
#: loading (pytorch/pytorch issues 106511 and 12873). Stated, not measured here: no GPU job's host
#: RSS has been recorded; replace it with a first GPU run's records.
GPU_HOST_MB = 1200.0
#: Rules whose cost depends on the method's class.
METHOD_RULES = frozenset({"train", "infer", "evaluate", "export"})


@dataclass(frozen=True)
class Workload:
    """What a job processes. The keys of a measurement record's ``workload``."""

    ny: int
    nx: int
    scale: int
    variables: int
    steps_total: int
    steps_train: int
    steps_val: int
    steps_test: int
    members: int = 1  # ensemble members drawn at inference (1: deterministic)
    epochs: int = 0
    patch: int = 0
    batch: int = 0
    patches_per_step: int = 0
    threads: int = 1
    hr_bytes: int = 0  # HR float32 bytes of the whole series, every variable
    train_members: int = 1  # members per sample in the training loss (fair CRPS: 2)
    flops_per_cell: float = DEFAULT_FLOPS_PER_CELL  # network forward FLOPs per HR cell
    act_bytes_per_cell: float = 0.0  # training's activation bytes per patch cell (0: default)
    loader: str = "auto"  # the emulator's loader: memory, stream, or auto (memory_limit_gb)
    memory_limit_gb: float = 2.0  # loader auto: the store's largest size loaded into RAM
    tile: int = 512  # infer.tile: HR rows of the engine's bands
    overlap: int = 128  # infer.overlap (the store's chunks: tile - overlap)
    time_block: int = 0  # infer.time_block (0: as many steps as infer_memory_mb allows)
    infer_memory_mb: int = 512  # infer.memory_mb: the budget of the band buffers
    infer_batch: int = 4  # infer.batch: tile samples per forward pass
    pooled_patches: int = 0  # train_on: patches per epoch from the pooled campaigns (0: own split)
    pooled_bytes: int = 0  # train_on: bytes the pooled loaders hold in RAM (0: own split's)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Workload:
        """From a record's ``workload`` (missing optional keys take their defaults; a missing
        ``train_members`` is 2 for ensembles, the fair CRPS's default)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known and v is not None}
        values.setdefault("train_members", 2 if int(values.get("members", 1)) > 1 else 1)
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def cells(self) -> int:
        """HR cells of one step of one variable."""
        return self.ny * self.nx

    @property
    def loads_into_memory(self) -> bool:
        """Whether training holds the prepared store in RAM (``climai.stages.train.use_memory``:
        loader memory, or auto with the store's HR + LR bytes under ``memory_limit_gb``)."""
        if self.loader != "auto":
            return self.loader == "memory"
        return self.hr_bytes * (1 + 1 / self.scale**2) < self.memory_limit_gb * 1e9

    @property
    def band_mb(self) -> float:
        """MB of the inference engine's band buffers for one time block: the steps of a block
        (``infer.time_block``, or as many as ``infer.memory_mb`` and the store's chunk cap allow,
        ``climai.inference.engine.block_steps``; at most the test split) ×
        3 float32 copies × members × variables × one band of ``tile`` rows × the domain width,
        the quantity ``climai.inference.downscale.time_block`` budgets."""
        from climai.inference.blocks import steps_per_block

        per_step = self.step_mb * 1e6
        stride = max(self.scale, self.tile - self.overlap)
        chunk = min(self.ny, stride) * min(self.nx, stride)  # the store's chunk
        block = steps_per_block(self.time_block, self.infer_memory_mb, per_step, chunk)
        return min(max(1, self.steps_test), block) * per_step / 1e6

    @property
    def step_mb(self) -> float:
        """MB of one step's band buffers (3 float32 copies × members × variables × ``tile`` rows
        × the domain width): the unit of :attr:`band_mb`. An emulator's engine also holds
        one-step bands beyond its block's (the shifted sums, the finished band, up to two in the
        writer): counted as 3 of these units, what the 16-member MRMS run needed (its RSS above
        the band buffers and forward: 3.5 units), not measured piece by piece."""
        return 3 * self.members * self.variables * min(self.tile, self.ny) * self.nx * 4 / 1e6

    @property
    def forward_mb(self) -> float:
        """MB an emulator's forward pass holds on the CPU: ``infer.batch`` tiles × its
        activations per cell (:func:`unet_activation_bytes` without the gradients' half: no
        backward at inference), which the process's heap keeps between batches
        (:func:`climai.malloc.keep_freed_buffers`). Stated, not fitted (records of one tile
        size cannot separate it from the intercept)."""
        act = (self.act_bytes_per_cell or DEFAULT_ACT_BYTES) / 2
        return self.infer_batch * min(self.tile, self.ny) * min(self.tile, self.nx) * act / 1e6

    @property
    def width(self) -> float:
        """The network's cost per cell relative to the default U-Net."""
        return self.flops_per_cell / DEFAULT_FLOPS_PER_CELL


def unet_flops_per_cell(
    channels: Iterable[int], in_channels: int = 8, out_channels: int = 2
) -> float:
    """Forward FLOPs per HR cell of a U-Net with ``channels`` per level (two 3×3 convolutions per
    level in the encoder and two in the decoder, each level at a quarter of the cells of the one
    above): 67 kFLOP for the default 16-32-64, as measured."""
    chans = list(channels)
    body = sum(4 * 2 * 9 * c * c / 4**i for i, c in enumerate(chans))
    return body + 2 * 9 * chans[0] * (in_channels + out_channels)


def unet_activation_bytes(channels: Iterable[int]) -> float:
    """Bytes a U-Net's training step holds per patch cell: float32 activations kept for the
    backward pass and their gradients (× 2), about 8 tensors of ``c`` channels per level (two
    convolutions, their activations, in encoder and decoder), each level at a quarter of the
    cells of the one above: 1,792 bytes for the default 16-32-64."""
    return 4 * 2 * sum(8 * c / 4**i for i, c in enumerate(channels))


DEFAULT_ACT_BYTES = unet_activation_bytes([16, 32, 64])


def method_class(rule: str, kind: str | None) -> str:
    """The coefficient key of a job's class: ``rule/baseline``, ``rule/emulator`` or ``rule``."""
    if rule in METHOD_RULES and kind in ("baseline", "emulator"):
        return f"{rule}/{kind}"
    return rule


def coefficient_keys(rule: str, kind: str | None, mtype: str | None = None) -> list[str]:
    """Where a job's coefficients are looked up, most specific first: its method type's
    (``infer/bicubic``), its class's (``infer/baseline``), the rule's."""
    keys = [f"{rule}/{mtype}"] if rule in METHOD_RULES and mtype else []
    return [*keys, method_class(rule, kind), rule]


def drivers(rule: str, kind: str | None, w: Workload) -> tuple[float, float]:
    """``(time driver, memory driver)`` of a job of ``rule`` for a method of ``kind``."""
    field = w.cells * w.variables  # one step of every variable
    test = w.steps_test * field
    if rule in ("ingest", "preprocess", "manifest"):
        return w.steps_total * field, field
    if rule == "train":
        patches = w.pooled_patches or w.steps_train * w.patches_per_step  # per epoch
        seen = w.epochs * patches * w.patch**2 * w.train_members
        # memory (MB): the splits loaded into RAM (memory loader; a pooled training: the
        # train_on campaigns' splits and coarsened copies, pooled_bytes) + one batch's activations
        loaded = 0.0
        if w.pooled_patches:
            loaded = w.pooled_bytes
        elif w.loads_into_memory:
            loaded = (w.steps_train + w.steps_val) * field * 4 * (1 + 1 / w.scale**2)
        held = loaded / 1e6 + train_batch_mb(w)
        return seen * w.width + w.steps_val * field * w.width, held
    if rule == "infer" and kind == "emulator":  # memory: the engine's band buffers (MB)
        return test * w.members * (w.width + ENGINE_CELL_COST), w.band_mb + 3 * w.step_mb
    if rule == "infer":  # baselines: through the engine, by time blocks and bands of rows
        return test, w.band_mb
    if rule in ("evaluate", "export"):
        return test * w.members, field * w.members
    if rule == "compare":
        return test, field
    return 0.0, 0.0  # sweep, lineage: a few small files


def train_batch_mb(w: Workload) -> float:
    """MB of one training batch's activations (and their gradients): part of train's memory
    driver, in the host's memory on the CPU, in the GPU's on a GPU."""
    act = w.act_bytes_per_cell or DEFAULT_ACT_BYTES
    return w.batch * w.patch**2 * w.train_members * act / 1e6


def cpu_time_driver(rule: str, x_time: float, threads: int) -> float:
    """The time driver on CPU cores: a parallel rule's work shared by ``threads`` threads with
    a speed-up of ``threads ** THREAD_EXPONENT`` (the slope ``t1`` is one thread's)."""
    return x_time / max(1, threads) ** THREAD_EXPONENT if rule in PARALLEL_RULES else x_time


@dataclass(frozen=True)
class Coefficients:
    """``seconds = t0 + t1·x_time``, ``MB = m0 + m1·x_mem`` for one rule and class; beyond the
    knot ``xk`` (when > 0: the largest synthetic size's driver) memory follows the real
    campaigns' records: ``c2 + m2·x_mem``, never below the synthetic line's value at the knot,
    or (``c2`` None: records at one driver value) that value plus ``m2·(x_mem − xk)``."""

    t0: float
    t1: float
    m0: float
    m1: float
    n: int = 0  # records fitted
    xk: float = 0.0
    m2: float = 0.0
    c2: float | None = None

    def seconds(self, x_time: float) -> float:
        return self.t0 + self.t1 * x_time

    def mem_mb(self, x_mem: float) -> float:
        if self.xk <= 0 or x_mem <= self.xk:
            return self.m0 + self.m1 * x_mem
        knot = self.m0 + self.m1 * self.xk
        if self.c2 is None:
            return knot + self.m2 * (x_mem - self.xk)
        return max(knot, self.c2 + self.m2 * x_mem)


@dataclass(frozen=True)
class MachineCosts:
    """The coefficients of one machine kind (one ``climai/costs/<kind>.json``)."""

    machine: str
    threads: int  # threads of the runs the coefficients were fitted on
    estimate: bool  # True: stated estimates, not fitted to measurements on this kind
    coefficients: dict[str, Coefficients]
    source: str = ""

    def of(self, rule: str, kind: str | None, mtype: str | None = None) -> Coefficients:
        """The coefficients of ``rule`` for a method of ``kind`` and type ``mtype``
        (:func:`coefficient_keys`); a rule never measured on this kind (a sweep's ranking: a few
        small files) gets the largest measured intercepts and no slope."""
        keys = coefficient_keys(rule, kind, mtype)
        found = next((self.coefficients[k] for k in keys if k in self.coefficients), None)
        if found is None:
            if not self.coefficients:
                raise KeyError(f"climai/costs/{self.machine}.json has no coefficients")
            every = self.coefficients.values()
            return Coefficients(max(c.t0 for c in every), 0.0, max(c.m0 for c in every), 0.0)
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "threads": self.threads,
            "estimate": self.estimate,
            "source": self.source,
            "coefficients": {k: asdict(c) for k, c in sorted(self.coefficients.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MachineCosts:
        coefs = {k: Coefficients(**v) for k, v in data["coefficients"].items()}
        return cls(data["machine"], int(data["threads"]), bool(data["estimate"]), coefs,
                   str(data.get("source", "")))  # fmt: skip


def load_coefficients(machine: str, folder: Path | None = None) -> MachineCosts:
    """``<folder>/<machine>.json``: by default ``$CLIMAI_COSTS_DIR`` (a site's own coefficients,
    every machine kind's file) or else ``climai/costs/``."""
    import os

    folder = Path(folder or os.environ.get("CLIMAI_COSTS_DIR") or COSTS_DIR)
    path = folder / f"{machine}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.json"))) or "none"
        raise FileNotFoundError(f"no cost coefficients {str(path)!r} (machine kinds: {known})")
    return MachineCosts.from_json(json.loads(path.read_text()))


@dataclass(frozen=True)
class Estimate:
    """A job's predicted peak host memory (MB, per job) and run time (seconds), before safety."""

    mem_mb: float
    seconds: float


def estimate(
    rule: str,
    kind: str | None,
    w: Workload,
    host: MachineCosts,
    device: MachineCosts | None = None,
    ranks: int = 1,
    mtype: str | None = None,
) -> Estimate:
    """The cost of one job: host memory from ``host`` (times ``ranks``, one process per GPU),
    run time from ``device`` (a GPU kind) when given, else from ``host``. With ``ranks`` > 1 the
    compute part is shared by the ranks (time driver / ranks). On a GPU the network's
    activations are in its memory, not the host's (a training batch's, an inference's forward
    passes), and each rank's CUDA context is (:data:`GPU_HOST_MB`)."""
    x_time, x_mem = drivers(rule, kind, w)
    timing = device if device is not None else host
    if device is None:
        x_time = cpu_time_driver(rule, x_time, w.threads)
    elif rule == "train":
        x_mem -= train_batch_mb(w)
    seconds = timing.of(rule, kind, mtype).seconds(x_time / ranks)
    mem = host.of(rule, kind, mtype).mem_mb(x_mem) * ranks + thread_mb(rule, w.threads)
    mem += forward_mb(rule, kind, w) if device is None else GPU_HOST_MB * ranks
    return Estimate(mem, seconds)


def forward_mb(rule: str, kind: str | None, w: Workload) -> float:
    """Host memory an emulator's CPU ``infer`` holds for its forward passes
    (:attr:`Workload.forward_mb`); 0 for every other job."""
    return w.forward_mb if rule == "infer" and kind == "emulator" else 0.0


def thread_mb(rule: str, threads: int) -> float:
    """Host memory the threads beyond the first add to a job of ``rule`` (:data:`THREAD_MB`)."""
    return THREAD_MB.get(rule, 0.0) * max(0, threads - 1)


def fit(records: Iterable[Mapping[str, Any]], machine: str, source: str = "") -> MachineCosts:
    """Coefficients of one machine kind from measurement records (``benchmarks/results/*.json``).

    Per rule and method type, and per rule and class (:func:`coefficient_keys`): the time line by
    least squares of the relative error (:func:`_line`; slope and intercept clipped at zero; one
    driver value: the mean time, no slope); the memory line with the slope of the same fit and
    the intercept of the upper envelope, so that it lies on or above every measurement. A record
    with ``"fit": "memory"`` (a real campaign's run: its per-cell times depend on its source
    format and on the load of the machine it shared) enters the memory lines only, and there,
    when the other records span two driver values, not the slope's fit. Beyond the largest
    synthetic driver (the knot) the real records set the slope: the smallest one from the
    line's value at the knot that lies on or above every one of them; where they span two driver
    values or more, their own least-squares slope with the intercept that puts every one of them
    on or under the line (real campaigns hold more than synthetic ones at the same driver: a
    slope from the knot through the nearest real record carried that offset ~2× too steeply
    to the largest, session 48). Memory at the synthetic sizes is not linear (fixed buffers and
    the steps' small arrays weigh most there), so their slope, carried 47× further, asked 22 GB
    of an evaluate that used 1.3 GB; a real record above the line raises the line beyond the
    knot instead of every small job's intercept.
    """
    groups: dict[str, list[tuple[float, float, float, float, bool]]] = {}
    threads: set[int] = set()
    for r in records:
        w = Workload.from_record(r["workload"])
        threads.add(w.threads)
        x_time, x_mem = drivers(r["rule"], r.get("kind"), w)
        if r.get("device", "cpu") == "cpu":
            x_time = cpu_time_driver(r["rule"], x_time, w.threads)
        for key in coefficient_keys(r["rule"], r.get("kind"), r.get("type"))[:-1] or [r["rule"]]:
            rss = float(r["max_rss_mb"]) - thread_mb(r["rule"], w.threads)
            if r.get("device", "cpu") == "cpu":
                rss -= forward_mb(r["rule"], r.get("kind"), w)
            timed = r.get("fit", "all") != "memory"
            groups.setdefault(key, []).append((x_time, float(r["seconds"]), x_mem, rss, timed))
    coefs = {}
    for key, rows in groups.items():
        timed = [(x, y) for x, y, _, _, t in rows if t]
        t0, t1 = _line(timed or [(x, y) for x, y, _, _, _ in rows])
        # the memory slope from the synthetic sizes when they span two driver values; the real
        # campaigns' records (measured once per source) then set the slope beyond the knot
        fitted = [(x, y) for _, _, x, y, t in rows if t]
        if len({x for x, _ in fitted}) < 2:
            fitted = [(x, y) for _, _, x, y, _ in rows]
        m1 = _line(fitted)[1]
        xk = max(x for x, _ in fitted)
        m0 = max(y - m1 * x for _, _, x, y, _ in rows if x <= xk)
        beyond = [(x, y) for _, _, x, y, _ in rows if x > xk]
        m2 = max([0.0] + [(y - m0 - m1 * xk) / (x - xk) for x, y in beyond])
        c2 = None
        if len({x for x, _ in beyond}) > 1:  # their own slope, raised over every one of them
            m2 = _line(beyond)[1]
            c2 = max(y - m2 * x for x, y in beyond)
        if not beyond:
            xk = 0.0  # no knot: one line
        coefs[key] = Coefficients(t0, t1, m0, m1, len(rows), xk, m2, c2)
    return MachineCosts(machine, max(threads) if threads else 1, False, coefs, source)


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """``(intercept, slope)``, both ≥ 0, minimising the squared *relative* error
    ``Σ ((a + b·x − y) / y)²`` (least squares weighted by ``1 / y²``): a job of 5 s and one of
    5,000 s count alike, as the ratio predicted / measured is what sizing needs."""
    pts = [(x, y) for x, y in points if y > 0] or [(x, max(y, 1e-9)) for x, y in points]
    w = [1.0 / (y * y) for _, y in pts]
    sw = sum(w)
    swx = sum(wi * x for wi, (x, _) in zip(w, pts, strict=True))
    swy = sum(wi * y for wi, (_, y) in zip(w, pts, strict=True))
    swxx = sum(wi * x * x for wi, (x, _) in zip(w, pts, strict=True))
    swxy = sum(wi * x * y for wi, (x, y) in zip(w, pts, strict=True))
    det = sw * swxx - swx * swx
    if det <= 1e-12 * max(sw * swxx, 1e-300):  # one driver value: the weighted mean
        return swy / sw, 0.0
    slope = max(0.0, (sw * swxy - swx * swy) / det)
    intercept = (swy - slope * swx) / sw
    if intercept < 0:  # through the origin instead
        slope, intercept = swxy / swxx, 0.0
    return intercept, slope


def ceil_to(value: float, step: int) -> int:
    """``value`` rounded up to a multiple of ``step``."""
    return int(math.ceil(value / step) * step)
