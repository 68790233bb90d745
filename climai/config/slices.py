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
    # data: the target source decides which variables are valid (validators need it); seed
    # and data: the toy world's parameters in the files' source attribute
    "export": ("campaign", "results", "seed", "variables", "data", "export"),
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


RUN_KEYS: tuple[tuple[str, ...], ...] = (
    ("preprocess", "progress"),
    ("infer", "progress"),
    ("methods", "*", "checkpoint_every"),
    # where a training's patches are read from and by how many DataLoader workers: the same
    # batches, so bitwise the same model (climai/data/dataset.py)
    ("methods", "*", "workers"),
    ("methods", "*", "loader"),
    ("methods", "*", "memory_limit_gb"),
)
"""Keys that change how a stage runs, never what it writes (a progress bar; how often a training
saves a checkpoint, which a resumed training reproduces bitwise; its data loading): left out of
the config hash and
of the slice Snakemake compares, so that changing one reruns nothing; the workflow hands them to
its jobs apart (:data:`RUN_KEYS_ENV`). ``*``: any method."""
RUN_KEYS_ENV = "CLIMAI_RUN_KEYS"
"""The environment variable that carries the :data:`RUN_KEYS` values from the workflow to a job
(JSON, the config's own nesting); a cluster job's Snakemake sets it again from the same config."""


def _run_key_paths(data: dict[str, Any]) -> list[tuple[str, ...]]:
    """The :data:`RUN_KEYS` present in ``data``, ``*`` expanded."""
    found: list[tuple[str, ...]] = []

    def walk(node: Any, at: tuple[str, ...], rest: tuple[str, ...]) -> None:
        if not rest:
            found.append(at)
        elif isinstance(node, dict):
            for key in node if rest[0] == "*" else [rest[0]] if rest[0] in node else []:
                walk(node[key], (*at, key), rest[1:])

    for path in RUN_KEYS:
        walk(data, (), path)
    return found


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def split_run_keys(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data without its RUN_KEYS, those keys' values in the same nesting)``."""
    out = json.loads(json.dumps(data))  # a deep copy of plain JSON data
    run: dict[str, Any] = {}
    for path in _run_key_paths(data):
        parent, node = _get(out, path[:-1]), run
        value = parent.pop(path[-1])
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out, run


def with_run_keys(data: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the :data:`RUN_KEYS` values of ``run`` set where ``data`` has their
    section (a stage slice holds only its own)."""
    out = json.loads(json.dumps(data))
    for path in _run_key_paths(run):
        parent = _get(out, path[:-1])
        if isinstance(parent, dict):
            parent[path[-1]] = _get(run, path)
    return out


def canonical_json(data: Any) -> str:
    """Key-sorted, compact JSON: the form that is hashed and passed between stages."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def config_sha256(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a config (or a stage slice of it).

    The output location (``results``) is left out: the same campaign written elsewhere (e.g. by
    ``climai verify``) is the same computation and must carry the same hash; so are the
    :data:`RUN_KEYS`, which change no output.
    """
    content, _ = split_run_keys({k: v for k, v in data.items() if k != "results"})
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def from_stage_json(
    text: str, run: dict[str, Any] | None = None
) -> tuple[CampaignConfig, dict[str, Any]]:
    """Rebuild a config from a stage slice (absent sections take their defaults), with the
    :data:`RUN_KEYS` values of ``run`` (the workflow passes them apart from the slice).

    Methods absent from the slice are disabled, so a stage never acts on a method it was not given.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--config-json is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError("--config-json must hold a JSON object")
    raw = with_run_keys(raw, run or {})
    merged = dict(raw)
    merged["methods"] = {**dict.fromkeys(DEFAULT_METHODS), **raw.get("methods", {})}
    return validate_config(merged, stage_slice=True), raw
