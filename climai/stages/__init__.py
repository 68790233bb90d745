"""The stages: one module per Snakemake rule, ``climai/stages/<rule>.py``, run as ``climai <rule>``.

Each stage module opens with what it reads and writes (relevant settings, inputs, outputs) and
defines ``run(ctx, ...)``, the stage itself, and ``main(ctx, args)``, what ``climai <rule>`` calls.
:data:`STAGES` lists them for the command line (climai/cli.py builds its subcommands from it);
:class:`StageContext` is what every stage receives: the validated config, its hash, the rule
name, threads, paths. Importing this package imports no stage (nor torch).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import xarray as xr

from climai.config import CampaignConfig
from climai.io.provenance import provenance_attrs
from climai.paths import CampaignPaths

log = logging.getLogger("climai")


@contextlib.contextmanager
def dask_progress() -> Iterator[None]:
    """A progress bar on stderr for every dask computation over 2 s inside the block, when
    stderr is a terminal (none in Snakemake's job logs)."""
    if not sys.stderr.isatty():
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=2.0, dt=1.0, out=sys.stderr):
        yield


@dataclass(frozen=True)
class StageContext:
    """The run-time context of one stage invocation."""

    cfg: CampaignConfig
    config_sha256: str
    rule: str
    threads: int

    @property
    def paths(self) -> CampaignPaths:
        return CampaignPaths(self.cfg.campaign_dir, self.cfg.prepared_dir)

    def compute(self, method: str, device: str, bf16: bool) -> dict[str, Any]:
        """Apply the campaign's ``compute`` settings for ``method`` (torch threads, determinism:
        the same for any ``--cores``) and record what the numbers depend on, in
        ``runtime/<rule>_<method>.json`` (written by rank 0). Returns the record."""
        import os

        import torch

        from climai.io import write_json
        from climai.runtime import configure_torch, runtime_record

        deterministic = self.cfg.compute.deterministic
        configure_torch(self.cfg.torch_threads(method), deterministic)
        use_gpu = device != "cpu" and torch.cuda.is_available()
        where = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        record = runtime_record(self.rule, method, where, bf16, deterministic)
        if os.environ.get("RANK", "0") == "0":
            write_json(self.paths.runtime(self.rule, method), record)
        return record

    def stamp(self, ds: xr.Dataset) -> xr.Dataset:
        """``ds`` with the provenance attributes of this stage (architecture contract 4)."""
        return ds.assign_attrs(provenance_attrs(self.config_sha256, self.rule))


#: Extra command-line arguments a stage takes: ``--method M`` (one method), ``--methods ...``
#: (a list, default: the campaign's), ``--name N`` (a sweep's name), ``--block I`` and
#: ``--blocks N`` (a time block of a split infer).
Option = Literal["method", "methods", "name", "block", "blocks"]


@dataclass(frozen=True)
class Stage:
    """A rule of the workflow and its ``climai`` subcommand, run by ``climai.stages.<name>``."""

    name: str
    help: str
    options: tuple[Option, ...] = ()
    config_of: str | None = None  # the stage whose config slice it reads (default: its own)

    @property
    def module(self) -> str:
        """The module whose ``main(ctx, args)`` runs the stage."""
        return f"climai.stages.{self.name}"


#: Every stage, in the order the workflow runs them.
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("ingest", "sources → ingest/target.zarr + static.zarr"),
        Stage("preprocess", "coarsen, split, normalise → prep/dataset.zarr"),
        Stage("train", "train an emulator → models/<method>/model.pt", ("method",)),
        Stage("infer", "downscale the test split → downscaled/<method>/test.zarr", ("method",)),
        Stage(
            "infer_block",
            "one time block of a split infer → downscaled/<method>/blocks/test_<i>.zarr",
            ("method", "block", "blocks"),
            "infer",
        ),
        Stage(
            "infer_gather",
            "join a split infer's blocks → downscaled/<method>/test.zarr",
            ("method", "blocks"),
            "infer",
        ),
        Stage("evaluate", "score a method → evaluation/<method>/metrics.json", ("method",)),
        Stage("export", "CF NetCDF per variable → export/<method>_<var>.nc", ("method",)),
        Stage("compare", "compare methods → evaluation/comparison.png", ("methods",)),
        Stage(
            "sweep",
            "rank a sweep's variants on val → evaluation/sweep_<name>.md",
            ("methods", "name"),
        ),
        Stage("lineage", "parents of fine-tuned models → evaluation/lineage.html", ("methods",)),
        Stage("manifest", "record config, inputs, versions, outputs → manifest.json"),
    )
}
