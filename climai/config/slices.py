"""Stage slices: the part of the config each stage reads, as canonical JSON and its hash.

A stage's outputs depend on exactly its slice, so Snakemake reruns a stage (and what follows) only
when its slice changes; the slice is also what a rule passes to ``climai <stage>``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from climai.config.base import ConfigError
from climai.config.campaign import DEFAULT_METHODS, CampaignConfig
from climai.config.loading import validate_config

_DATA_KEYS = ("campaign", "results", "seed", "scale", "variables", "data", "domain")
"""What the ingested data depend on; every stage that reads them depends on these too."""
_WHOLE = tuple(CampaignConfig.model_fields)

STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "ingest": _DATA_KEYS,
    "preprocess": (*_DATA_KEYS, "split", "preprocess"),
    "train": (*_DATA_KEYS, "split", "prepared", "compute"),
    "infer": (*_DATA_KEYS, "split", "infer", "prepared", "compute"),
    # data: the target source decides which variables are valid (validators need it)
    "export": ("campaign", "results", "variables", "data", "export"),
    "evaluate": (*_DATA_KEYS, "split", "evaluate", "prepared"),
    "manifest": _WHOLE,
    # compare shows the whole campaign config in the report, so it reads every key
    "compare": _WHOLE,
    "sweep": ("campaign", "results", "variables", "data", "methods"),
    "lineage": ("campaign", "results", "variables", "data", "methods"),
}
"""Which top-level config keys each stage reads."""


def stage_slice(cfg: CampaignConfig, stage: str, method: str | None = None) -> dict[str, Any]:
    """The part of the config that ``stage`` (for ``method``) depends on, as plain JSON data."""
    if stage not in STAGE_KEYS:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_KEYS)}")
    full = cfg.model_dump(mode="json", by_alias=True)
    out = {key: full[key] for key in STAGE_KEYS[stage]}
    if method is not None:
        if method not in cfg.methods.enabled():
            raise ConfigError(
                f"method {method!r} is not configured under 'methods'; "
                f"configured: {', '.join(cfg.methods.enabled())}"
            )
        out["methods"] = {method: full["methods"][method]}
    return out


def canonical_json(data: Any) -> str:
    """Key-sorted, compact JSON: the form that is hashed and passed between stages."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def config_sha256(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a config (or a stage slice of it).

    The output location (``results``) is left out: the same campaign written elsewhere (e.g. by
    ``climai verify``) is the same computation and must carry the same hash.
    """
    content = {k: v for k, v in data.items() if k != "results"}
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def from_stage_json(text: str) -> tuple[CampaignConfig, dict[str, Any]]:
    """Rebuild a config from a stage slice (absent sections take their defaults).

    Methods absent from the slice are disabled, so a stage never acts on a method it was not given.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--config-json is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError("--config-json must hold a JSON object")
    merged = dict(raw)
    merged["methods"] = {**dict.fromkeys(DEFAULT_METHODS), **raw.get("methods", {})}
    return validate_config(merged, stage_slice=True), raw
