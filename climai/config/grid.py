"""The grid and the time axis: the domain subset, the train/val/test split, how ``preprocess``
coarsens and parallelises, and where the prepared data are read (``domain``, ``split``,
``preprocess``, ``prepared``)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from climai.config.base import StrictModel


def iso_time_range(first: str, last: str) -> tuple[object, object]:
    """The inclusive ``[first, last]`` of a split as ``datetime64[ns]``, ``last`` to the end of
    the period it names, as in xarray's ``sel(time=slice(first, last))``: a date is the whole
    day (``"2021-01-31"`` → 2021-01-31T23:59:59.999999999), an hour the whole hour; a time to
    the second or finer is itself. ``ValueError`` for a string that is not an ISO time."""
    import numpy as np

    lo = np.datetime64(first, "ns")
    end = np.datetime64(last)
    unit = np.datetime_data(end.dtype)[0]
    if unit in ("Y", "M", "W", "D", "h", "m"):
        hi = (end + np.timedelta64(1, unit)).astype("datetime64[ns]") - np.timedelta64(1, "ns")
    else:
        hi = end.astype("datetime64[ns]")
    return lo, hi


class DomainConfig(StrictModel):
    """A subset of the target, in the target's own coordinates (cell centres inside are kept)."""

    x: tuple[float, float] = Field(description="[min, max] along x (metres or degrees east).")
    y: tuple[float, float] = Field(description="[min, max] along y (metres or degrees north).")


SplitBound = float | list[str]


_SPLIT_BOUND = (
    "Fraction of the time axis, or [first, last] ISO (inclusive; a date as last is the whole day)."
)


class SplitConfig(StrictModel):
    """The time splits, in time order: fractions of the time axis, or ISO time ranges.

    Fractions: ``{train: 0.7, val: 0.1, test: 0.2}`` (they must sum to 1). Ranges: each split is
    ``[first, last]`` in ISO 8601 (both inclusive), e.g. ``train: ["2016-09-28T14:45",
    "2016-09-28T17:00"]``; ranges must not overlap and steps outside every range are unused.
    """

    train: SplitBound = Field(0.7, description=_SPLIT_BOUND)
    val: SplitBound = Field(0.1, description=_SPLIT_BOUND)
    test: SplitBound = Field(0.2, description=_SPLIT_BOUND)
    gap: int = Field(
        0,
        ge=0,
        description="Time steps left out (label -1) before each of val and test (fractions only).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SplitConfig:

        values = {"train": self.train, "val": self.val, "test": self.test}
        kinds = {type(v) is list for v in values.values()}
        if len(kinds) > 1:
            raise ValueError(
                "split: give all of train, val, test as fractions or all as [first, last] "
                f"ISO time ranges, got {values}"
            )
        if kinds == {False}:
            for name, v in values.items():
                if not 0 < v < 1:
                    raise ValueError(f"split.{name}={v:g} must be a fraction between 0 and 1")
            total = self.train + self.val + self.test
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"train + val + test must be 1, got {total:g}")
            return self
        if self.gap:
            raise ValueError("split.gap applies to fractions only; leave gaps between the ranges")
        bounds = {}
        for name, v in values.items():
            if len(v) != 2:
                raise ValueError(f"split.{name}={v} must be [first, last] (two ISO times)")
            try:
                lo, hi = iso_time_range(*v)
            except ValueError as err:
                raise ValueError(
                    f"split.{name}={v} is not a pair of ISO 8601 times: {err}"
                ) from None
            if hi < lo:
                raise ValueError(f"split.{name}={v}: last time is before first time")
            bounds[name] = (lo, hi)
        names = sorted(bounds, key=lambda n: bounds[n][0])
        for a, b in itertools.pairwise(names):
            if bounds[b][0] <= bounds[a][1]:
                raise ValueError(
                    f"split.{a}={values[a]} and split.{b}={values[b]} overlap; "
                    "time ranges must be disjoint"
                )
        return self

    @property
    def by_time(self) -> bool:
        """Whether the splits are ISO time ranges (else fractions)."""
        return isinstance(self.train, list)


_BYTES = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?([A-Za-z]*)")
_UNIT_NAMES = ("B", "kB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB", "PiB")
_BYTE_UNITS = {
    "",
    *(u.lower() for u in _UNIT_NAMES),
    *(u[0].lower() for u in _UNIT_NAMES[1:]),
    *(u[:2].lower() for u in _UNIT_NAMES[6:]),
}
_PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
_SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}")


class DistributedConfig(StrictModel):
    """A ``dask.distributed`` cluster for ``preprocess`` (``scheduler: local`` or ``slurm``)."""

    workers: int = Field(2, ge=1, description="Worker processes (local) or SLURM jobs (slurm).")
    threads_per_worker: int = Field(1, ge=1, description="Threads in each worker process.")
    memory_limit: str = Field(
        "4GiB",
        description="Memory limit of each worker: a number of bytes with an optional unit, "
        "e.g. 4GiB, 500MB, 4e9; auto: dask's share of the node (local only).",
    )
    queue: str | None = Field(None, description="SLURM partition of the worker jobs (slurm).")
    walltime: str = Field("01:00:00", description="SLURM time limit of each worker job.")

    # dask-jobqueue pastes these into its worker job script as ``#SBATCH -p <queue>`` and
    # ``#SBATCH -t <walltime>`` lines, unquoted: a newline or ';' there would run as a command.
    @field_validator("queue")
    @classmethod
    def _partition_name(cls, v: str | None) -> str | None:
        if v is not None and not _PARTITION.fullmatch(v):
            raise ValueError(
                f"SLURM partition {v!r} must be a partition name (letters, digits, '_', '-', "
                "'.'; several separated by ','), e.g. dcgp_usr_prod"
            )
        return v

    @field_validator("memory_limit")
    @classmethod
    def _bytes(cls, v: str) -> str:
        # what dask.utils.parse_bytes reads (kB, KiB, k, ... any case; spaces ignored)
        found = _BYTES.fullmatch(v.replace(" ", ""))
        if v != "auto" and (found is None or found[1].lower() not in _BYTE_UNITS):
            raise ValueError(
                f"memory limit {v!r} must be a number of bytes with an optional unit "
                f"({', '.join(_UNIT_NAMES)}; any case), e.g. 4GiB, or auto"
            )
        return v

    @field_validator("walltime")
    @classmethod
    def _slurm_time(cls, v: str) -> str:
        if not _SLURM_TIME.fullmatch(v):
            raise ValueError(
                f"SLURM time limit {v!r} must be MM, HH:MM:SS or D-HH[:MM[:SS]], e.g. 01:00:00"
            )
        return v


class PreprocessConfig(StrictModel):
    """How ``preprocess`` coarsens, chunks, compresses and parallelises."""

    min_valid_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Fraction of an LR cell's HR cells that must be valid (else the LR cell is "
        "NaN), where the LR is the HR's block mean; with data.input the LR is the input's "
        "field as ingest regridded it.",
    )
    time_chunk: int = Field(
        8, ge=1, description="Time steps per shard and per dask chunk of the dataset."
    )
    tile: int = Field(
        256, ge=8, description="Spatial tile (cells) of the inner zarr chunks inside a shard."
    )
    codec: Literal["lz4", "zstd"] = Field(
        "lz4", description="Blosc codec of the dataset (lz4: fastest measured; zstd: smaller)."
    )
    clevel: int = Field(5, ge=1, le=9, description="Blosc compression level.")
    quantiles: int = Field(
        101, ge=2, description="Evenly spaced quantiles (0..1) stored per variable in stats.json."
    )
    scheduler: Literal["threads", "local", "slurm"] = Field(
        "threads",
        description="threads: dask's threaded scheduler with the rule's threads; local: a "
        "dask.distributed LocalCluster; slurm: dask-jobqueue SLURMCluster (multi-node).",
    )
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    progress: bool = Field(
        True,
        description="Show a progress bar on runs longer than 2 s (scheduler: threads only; the "
        "dask.distributed schedulers, local and slurm, show none).",
    )

    @model_validator(mode="after")
    def _slurm_memory(self) -> PreprocessConfig:
        if self.scheduler == "slurm" and self.distributed.memory_limit == "auto":
            raise ValueError(
                "preprocess.distributed.memory_limit=auto is for scheduler: local; a SLURM "
                "worker job needs a size, e.g. 4GiB"
            )
        return self


class PreparedConfig(StrictModel):
    """Where train, infer and evaluate read the prepared data (``dataset.zarr``, ``stats.json``).

    By default this campaign's ``prep/``, written by ``preprocess``. ``campaign`` reuses another
    campaign's prepared data, to compare emulators without ingesting and preprocessing again;
    ``folder`` names the output of an extra rule that transforms ``prep/`` (e.g. a bias correction
    between preprocess and train, ``docs/add-a-rule.md``).
    """

    campaign: str | None = Field(
        None,
        description="Reuse this campaign's prepared data (same results folder; it must have been "
        "preprocessed with the same data, variables, scale, split and preprocess keys); null: "
        "this campaign's own. Ingest and preprocess then do not run for this campaign.",
    )
    folder: str = Field(
        "prep",
        description="Folder under that campaign's folder holding dataset.zarr and stats.json "
        "(prep: what preprocess writes; another name: the output of an extra rule).",
    )

    @field_validator("campaign")
    @classmethod
    def _safe_campaign(cls, v: str | None) -> str | None:
        if v is not None and not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"campaign name {v!r} must be letters, digits, '_' or '-'")
        return v

    @field_validator("folder")
    @classmethod
    def _relative_folder(cls, v: str) -> str:
        if not v or Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"prepared.folder {v!r} must be a relative path without '..'")
        return v
