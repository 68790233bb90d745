"""Fine-tuning lineage: which method starts from which trained model, and in what order the
emulators of a campaign train (the Snakefile plans its train jobs with these).

A method's ``init_from`` names its parent (validated by the config: a parent in the same
campaign must be another of its trained methods); these functions plan with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from climai.config.methods import InitFromCampaign, parent_in
from climai.paths import CampaignPaths

if TYPE_CHECKING:
    from climai.config.campaign import CampaignConfig


def parent_method(cfg: CampaignConfig, method: str) -> str | None:
    """The method of ``cfg``'s campaign that ``method`` is fine-tuned from (None: none there)."""
    return parent_in(cfg.methods.get(method), cfg.campaign)


def training_waves(cfg: CampaignConfig, methods: list[str]) -> list[list[str]]:
    """``methods`` (trained ones) in waves that can train side by side: a method fine-tuned
    from another of this campaign trains in the wave after its parent's."""
    depth: dict[str, int] = {}

    def of(m: str) -> int:
        if m not in depth:
            parent = parent_method(cfg, m)
            depth[m] = 0 if parent is None or parent not in methods else of(parent) + 1
        return depth[m]

    waves: list[list[str]] = []
    for m in methods:
        d = of(m)
        waves += [[] for _ in range(d + 1 - len(waves))]
        waves[d].append(m)
    return waves


def parent_model(cfg: CampaignConfig, method: str) -> Path | None:
    """The ``model.pt`` that ``method`` is fine-tuned from (None: trained from scratch).

    ``{campaign, method}`` resolves under the config's ``results`` root; a path is kept as
    written (relative paths are relative to the working folder, like ``results``).
    """
    parent = getattr(cfg.methods.get(method), "init_from", None)
    if parent is None:
        return None
    if isinstance(parent, InitFromCampaign):
        campaign = parent.campaign or cfg.campaign
        return CampaignPaths(Path(cfg.results) / campaign).model(parent.method)
    return Path(parent)


def pooled_datasets(cfg: CampaignConfig, method: str) -> dict[str, Path]:
    """The prepared datasets of the campaigns ``method`` trains or validates on (``train_on``,
    ``validate_on``), by campaign: DAG inputs of its train job (made by those campaigns' runs)."""
    mcfg = cfg.methods.get(method)
    names = [*(getattr(mcfg, "train_on", None) or []), *(getattr(mcfg, "validate_on", None) or [])]
    return {n: CampaignPaths(Path(cfg.results) / n).dataset for n in dict.fromkeys(names)}
