"""What a pooled training (``methods.<m>.train_on``) holds in RAM, without torch: the cost model
sizes it at DAG-build time (``climai.sizing``), where importing torch would cost every Snakemake
job ~1.5 s; :mod:`climai.training.pooled` loads by the same rule (:func:`in_memory`)."""

from __future__ import annotations

from pathlib import Path

from climai.config import EmulatorConfig
from climai.data.prepared import PreparedDataset
from climai.paths import CampaignPaths


def source_paths(
    mcfg: EmulatorConfig, results: Path, campaign: str, dataset: Path
) -> dict[str, Path]:
    """The prepared datasets a method trains and validates on: ``train_on`` and ``validate_on``
    campaigns under ``results``, or this ``campaign``'s own ``dataset``."""
    names = list(dict.fromkeys([*(mcfg.train_on or []), *(mcfg.validate_on or [])]))
    if not names:
        return {campaign: dataset}
    return {n: CampaignPaths(results / n).dataset for n in names}


def in_memory(prep: PreparedDataset, mcfg: EmulatorConfig, variables: list[str]) -> bool:
    """Whether the pooled loaders hold a campaign's splits in RAM: ``loader: memory``, or
    ``auto`` with the store's HR + LR bytes under ``memory_limit_gb``; else they stream them."""
    nbytes = sum(prep.hr(v).nbytes + prep.lr(v).nbytes for v in variables)
    return mcfg.loader == "memory" or (
        mcfg.loader == "auto" and nbytes < mcfg.memory_limit_gb * 1e9
    )


def resident_bytes(
    prep: PreparedDataset, mcfg: EmulatorConfig, variables: list[str], train: bool, val: bool
) -> int:
    """Bytes the pooled loaders hold in RAM for one campaign (float32, HR + LR): its ``train``
    and ``val`` splits where :func:`in_memory`, and its train split's ``coarsen_sources`` copies
    (``climai.training.pooled.coarsened_source``: always in RAM). What a pooled training's
    memory grows with, for the cost model (``climai.sizing``)."""
    scale, ny, nx = prep.scale, prep.ds.sizes["y"], prep.ds.sizes["x"]
    per_step = len(variables) * 4 * ny * nx * (1 + 1 / scale**2)
    steps = (prep.split_size("train") if train else 0) + (prep.split_size("val") if val else 0)
    total = steps * per_step if in_memory(prep, mcfg, variables) else 0.0
    for f in mcfg.coarsen_sources if train else ():
        cy, cx = ny // (f * scale) * scale, nx // (f * scale) * scale
        total += prep.split_size("train") * len(variables) * 4 * cy * cx * (1 + 1 / scale**2)
    return int(total)
