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

from climai.config import (
    STAGE_KEYS,
    CampaignConfig,
    ConfigError,
    config_sha256,
    stage_slice,
)


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
    want = config_sha256(stage_slice(cfg.model_copy(update={"campaign": other}), "preprocess"))
    if attrs.get("config_sha256") != want:
        keys = ", ".join(k for k in STAGE_KEYS["preprocess"] if k not in ("campaign", "results"))
        raise ConfigError(
            f"prepared.campaign={other!r}: {str(dataset)!r} was preprocessed with another "
            f"configuration; this campaign must have the same {keys} as campaign {other!r} "
            f"(e.g. pass that campaign's config file first, then this one's with --configfile)"
        )
