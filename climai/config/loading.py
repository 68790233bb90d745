"""Reading a config: YAML files merged the way Snakemake merges them, validated into a
:class:`~climai.config.campaign.CampaignConfig` with errors for people, and its JSON schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from climai.config.base import ConfigError, format_error
from climai.config.campaign import CampaignConfig
from climai.config.sources import SyntheticConfig


def _drop_inherited_synthetic(raw: dict[str, Any]) -> dict[str, Any]:
    """Drop toy-world keys a file target inherited from config/config.yaml by deep merge.

    Snakemake merges ``--configfile`` over the default config, so a campaign with
    ``data.target.source: netcdf`` still carries ``nx``, ``dx``... from the toy default. Keys equal
    to the toy defaults are dropped; any other value is kept and reported as unknown.
    """
    data = raw.get("data")
    if not isinstance(data, dict):
        return raw
    target = data.get("target")
    if not isinstance(target, dict) or target.get("source", "synthetic") == "synthetic":
        return raw
    defaults = SyntheticConfig().model_dump()
    kept = {k: v for k, v in target.items() if k == "source" or defaults.get(k, object()) != v}
    return {**raw, "data": {**data, "target": kept}}


def validate_config(raw: dict[str, Any], stage_slice: bool = False) -> CampaignConfig:
    """Validate a config mapping; raise :class:`ConfigError` naming every bad key.

    ``stage_slice``: ``raw`` is one stage's slice (a single method), so checks that need the
    other methods (a fine-tuning parent in the same campaign) are left to the whole config.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration must be a mapping, got {type(raw).__name__}")
    raw = _drop_inherited_synthetic(raw)
    try:
        return CampaignConfig.model_validate(raw, context={"stage_slice": stage_slice})
    except ValidationError as err:
        raise ConfigError(format_error(err, CampaignConfig)) from None


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base`` the way Snakemake merges config files."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def restore_empty_mappings(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``config`` (in place, and returned) with every empty mapping of ``overrides`` restored
    where ``config`` holds None at its path.

    Snakemake merges ``--configfile`` files into the workflow's ``config/config.yaml`` with a
    recursion that keeps None when the override is ``{}``: ``methods: {nearest: {}}`` would not
    switch on a method that config.yaml sets to null. The Snakefile repairs its ``config`` with
    the command line's overrides.
    """
    for key, value in overrides.items():
        if not isinstance(value, dict):
            continue
        if not value and config.get(key) is None:
            config[key] = {}
        elif isinstance(config.get(key), dict):
            restore_empty_mappings(config[key], value)
    return config


def order_like(config: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``config`` (in place, and returned) with the keys of every mapping in the order of
    ``reference``'s, keys that ``reference`` lacks after them in their own order.

    Snakemake starts its ``config`` from the ``--configfile`` files and merges the workflow's
    ``config/config.yaml`` into it, so a key a campaign file names comes first: ``methods:
    {unet: {workers: 2}}`` put ``unet`` before ``bicubic``, which reordered the summary's rows
    and changed compare's ``methods`` parameter (a rerun of compare and manifest for a key that
    changes no output). In ``config/config.yaml``'s order, as :func:`deep_merge` gives it.
    """
    keys = [k for k in reference if k in config] + [k for k in config if k not in reference]
    items = [(k, config.pop(k)) for k in keys]
    for key, value in items:
        config[key] = value
        if isinstance(value, dict) and isinstance(reference.get(key), dict):
            order_like(value, reference[key])
    return config


def load_config(*paths: str | Path) -> CampaignConfig:
    """Read YAML config files (later ones override earlier ones) and validate them."""
    raw: dict[str, Any] = {}
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            with p.open() as fh:
                loaded = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        raw = deep_merge(raw, loaded)
    return validate_config(raw)


def json_schema() -> dict[str, Any]:
    """The JSON schema of the config, generated from the models."""
    return CampaignConfig.model_json_schema()
