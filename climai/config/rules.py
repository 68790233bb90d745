"""The campaign's own rule files (config key ``rules``): Snakemake code that the Snakefile
includes, so only files inside the working folder are accepted (docs/security.md)."""

from __future__ import annotations

import os
from pathlib import Path

from climai.config.base import ConfigError
from climai.config.campaign import CampaignConfig


def rule_files(cfg: CampaignConfig, workdir: str | Path | None = None) -> list[Path]:
    """The resolved paths of ``cfg.rules``; a file outside ``workdir`` (default: the working
    folder), also through a symbolic link or ``..``, or a missing one, is a :class:`ConfigError`.

    Called before the Snakefile includes them (and by ``climai validate``), so a config that
    names code outside the working folder stops before that code runs, even under ``-n``.
    """
    root = Path(workdir if workdir is not None else os.getcwd()).resolve()
    out: list[Path] = []
    for i, name in enumerate(cfg.rules):
        path = (root / Path(name).expanduser()).resolve()
        if not path.is_relative_to(root):
            raise ConfigError(
                f"config key 'rules': rule file {name!r} (item {i}) resolves to {str(path)!r}, "
                f"outside the working folder {str(root)!r}; a campaign's rule files are code "
                "that Snakemake runs, so they must lie inside the working folder (copy the file "
                "there; docs/security.md)"
            )
        if not path.is_file():
            raise ConfigError(
                f"config key 'rules': rule file {name!r} (item {i}) does not exist as {str(path)!r} "
                f"(paths are relative to the working folder {str(root)!r})"
            )
        out.append(path)
    return out
