"""What every stage receives: the validated config, its hash, the rule name, threads, paths."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import xarray as xr

from climai.config import CampaignConfig
from climai.io.provenance import provenance_attrs
from climai.paths import CampaignPaths

log = logging.getLogger("climai")


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

    def stamp(self, ds: xr.Dataset) -> xr.Dataset:
        """``ds`` with the provenance attributes of this stage (architecture contract 4)."""
        return ds.assign_attrs(provenance_attrs(self.config_sha256, self.rule))


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after writing a checkpoint; rerunning ``train`` resumes.

    Defined here, not in climai.training: the CLI catches it for every subcommand, and importing
    climai.training would import torch (~1.5 s of CPU) in every Snakemake job, also those that
    never train."""
