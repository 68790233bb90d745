"""Reusing another campaign's prepared data (config key ``prepared.campaign``).

A campaign that compares new emulators on data that another campaign already ingested and
preprocessed reads that campaign's ``prep/`` instead of making its own. The reuse is only sound
when both campaigns describe the same data: :func:`check_reused_dataset` compares the preprocess
config hash stored in the dataset with this campaign's preprocess slice under the other name.
Imports nothing heavy: the Snakefile calls it at parse time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from climai.config import (
    STAGE_KEYS,
    CampaignConfig,
    ConfigError,
    config_sha256,
    stage_slice,
)
from climai.config.methods import InitFromCampaign
from climai.parents import parent_model, pooled_datasets
from climai.paths import CampaignPaths


def store_attrs(store: Path) -> dict[str, object]:
    """The attributes of a zarr v3 store's root group, read from its ``zarr.json``."""
    meta = store / "zarr.json"
    if not meta.is_file():
        return {}
    return dict(json.loads(meta.read_text()).get("attributes", {}))


def check_reused_dataset(cfg: CampaignConfig) -> None:
    """Raise :class:`ConfigError` unless the reused campaign's data exist and match this config.

    Does nothing when the campaign reads its own prepared data. The dataset written by
    ``preprocess`` carries the sha256 of its config slice; this campaign's preprocess slice, with
    the other campaign's name, must hash the same (same data, variables, scale, domain, split
    and preprocess keys), so that the emulators of both are trained and scored on the same data.
    """
    if not cfg.reuses_data:
        return
    other = str(cfg.prepared.campaign)
    dataset = cfg.prepared_dir / "dataset.zarr"
    if not (dataset / "zarr.json").is_file():
        raise ConfigError(
            f"prepared.campaign={other!r}: {str(dataset)!r} does not exist; run that campaign "
            f"up to its prepared data first (e.g. snakemake --until preprocess --configfile <its "
            f"config>)"
        )
    attrs = store_attrs(dataset)
    if attrs.get("created_by_rule") != "preprocess":
        return  # an extra rule's output: its author vouches for it
    ours = stage_slice(cfg.model_copy(update={"campaign": other}), "preprocess")
    if attrs.get("config_sha256") != config_sha256(ours):
        keys = ", ".join(k for k in STAGE_KEYS["preprocess"] if k not in ("campaign", "results"))
        differ = _differing_keys(cfg, ours, str(attrs.get("config_sha256")))
        raise ConfigError(
            f"prepared.campaign={other!r}: {str(dataset)!r} was preprocessed with another "
            f"configuration; this campaign must have the same {keys} as campaign {other!r}"
            + (f"; they differ in {differ}" if differ else "")
            + " (e.g. pass that campaign's config file first, then this one's with --configfile)"
        )


def _differing_keys(cfg: CampaignConfig, ours: dict[str, Any], made_by: str) -> str:
    """The keys (dotted) where the settings that made the reused dataset, the other campaign's
    ``settings/preprocess.json`` when its hash is the dataset's, differ from ``ours``, with both
    values; empty where that record is missing or newer than the dataset."""
    from climai.io.settings import settings_text  # only on this error: xarray's import cost

    path = cfg.prepared_dir.parent / "settings" / "preprocess.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(record, dict) or record.get("config_sha256") != made_by:
        return ""
    theirs, mine = record.get("config"), json.loads(settings_text(ours))["config"]
    found = _differences(theirs, mine, "")
    shown = "; ".join(f"{k} ({cfg.prepared.campaign}: {a!r}, this campaign: {b!r})"
                      for k, a, b in found[:5])  # fmt: skip
    return shown + (f"; and {len(found) - 5} more" if len(found) > 5 else "")


def _differences(theirs: Any, mine: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    """``(dotted key, their value, my value)`` wherever two JSON trees differ."""
    if isinstance(theirs, dict) and isinstance(mine, dict):
        return [
            d
            for k in sorted(set(theirs) | set(mine))
            for d in _differences(theirs.get(k), mine.get(k), f"{prefix}{k}.")
        ]
    return [] if theirs == mine else [(prefix.rstrip("."), theirs, mine)]


def other_campaigns_inputs(cfg: CampaignConfig) -> list[Path]:
    """What ``cfg``'s campaign reads from other campaigns' folders under ``results``, relative to
    ``results``: the reused prepared data (``prepared.campaign``), the prepared data of
    ``train_on``/``validate_on`` campaigns and the parent models of ``init_from: {campaign: ...}``.

    A rerun of the campaign under another ``results`` (``climai verify``) makes none of them: it
    must read the ones the campaign was made from."""
    root = Path(cfg.results)
    found: list[Path] = []
    if cfg.reuses_data:
        found.append(cfg.prepared_dir)
    for method in cfg.methods.enabled():
        for name, dataset in pooled_datasets(cfg, method).items():
            if name != cfg.campaign:
                found.append(dataset.parent)  # dataset.zarr and stats.json
        parent = getattr(cfg.methods.get(method), "init_from", None)
        if isinstance(parent, InitFromCampaign) and parent.campaign not in (None, cfg.campaign):
            found.append(parent_model(cfg, method))  # type: ignore[arg-type]
    return [p.relative_to(root) for p in dict.fromkeys(found)]


def check_other_inputs(cfg: CampaignConfig) -> None:
    """Raise :class:`ConfigError` naming the key unless every input this campaign reads but its
    workflow does not make exists: the prepared data of ``train_on``/``validate_on`` campaigns
    and the parent models of ``init_from`` (a file, or another campaign's method). Checked by
    ``climai validate`` and before any job, instead of Snakemake's "Missing input files"."""
    for method in cfg.methods.enabled():
        mcfg = cfg.methods.get(method)
        for key in ("train_on", "validate_on"):
            for name in getattr(mcfg, key, None) or []:
                dataset = CampaignPaths(Path(cfg.results) / name).dataset
                if name != cfg.campaign and not (dataset / "zarr.json").is_file():
                    raise ConfigError(
                        f"methods.{method}.{key}: campaign {name!r} has no prepared data at "
                        f"{str(dataset)!r}; run it up to preprocess first (snakemake "
                        f"{dataset} --configfile <its config>)"
                    )
        parent = getattr(mcfg, "init_from", None)
        if parent is None or (
            isinstance(parent, InitFromCampaign) and parent.campaign in (None, cfg.campaign)
        ):
            continue  # trained by this workflow first
        model = parent_model(cfg, method)
        if model is not None and not model.is_file():
            how = (
                f"train it first (snakemake {model} --configfile <its config>)"
                if isinstance(parent, InitFromCampaign)
                else "expected a model file written by climai (models/<method>/model.pt)"
            )
            raise ConfigError(
                f"methods.{method}.init_from: the parent model {str(model)!r} does not exist; {how}"
            )
