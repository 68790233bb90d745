"""Campaign configuration: typed models, validation with errors for people, stage slices.

The pydantic models below are the single source of truth for the config: they validate
``config/config.yaml`` (and any ``--configfile``), and they generate
``workflow/schemas/config.schema.json`` (a test keeps the two in step).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

VariableKind = Literal["precipitation", "temperature", "generic"]


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key, the value and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class VariableConfig(_Strict):
    """One downscaled variable."""

    name: str = Field(description="Name inside climai and in outputs (CMIP short name, e.g. tas).")
    source_name: str | None = Field(None, description="Name in the input files (default: name).")
    units: str = Field(description="Canonical units; inputs are converted to them.")
    kind: VariableKind = Field(
        "generic",
        description="precipitation | temperature | generic: picks transform and constraint.",
    )

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"variable name {v!r} must be letters, digits, '_' or '-'")
        return v


class SyntheticConfig(_Strict):
    """The built-in toy world: a seeded, deterministic km-scale dataset (no files needed)."""

    source: Literal["synthetic"] = "synthetic"
    nx: int = Field(128, ge=16, description="HR cells along x.")
    ny: int = Field(128, ge=16, description="HR cells along y.")
    dx: float = Field(500.0, gt=0, description="HR grid spacing in metres.")
    steps: int = Field(480, ge=8, description="Hourly time steps.")
    start: str = Field("2020-06-01T00:00", description="First time step (UTC, ISO 8601).")


class DataConfig(_Strict):
    """Where the data come from."""

    target: SyntheticConfig = Field(default_factory=SyntheticConfig)


class SplitConfig(_Strict):
    """Fractions of the time axis, in time order: train, then val, then test."""

    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class BicubicConfig(_Strict):
    """Bicubic interpolation of the LR field: the baseline every emulator must beat."""


class UNetConfig(_Strict):
    """Residual U-Net on bicubic-upsampled LR plus HR static fields and time features."""

    epochs: int = Field(6, ge=1, description="Passes over the training patches (an upper bound).")
    patch: int = Field(64, ge=8, description="HR patch size (a multiple of scale).")
    batch: int = Field(16, ge=1, description="Patches per optimiser step and process.")
    patches_per_step: int = Field(
        2, ge=1, description="Random patches drawn from each training time step per epoch."
    )
    min_valid: float = Field(
        0.5, ge=0, le=1, description="Fraction of valid HR cells below which a patch is redrawn."
    )
    lr: float = Field(2e-3, gt=0, lt=1, description="Peak AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up steps before cosine decay.")
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clipping threshold.")
    ema_decay: float = Field(
        0.99, ge=0, lt=1, description="EMA decay of the weights (0: no EMA); EMA is validated."
    )
    patience: int = Field(
        3, ge=1, description="Early stopping: epochs without a better val loss before stopping."
    )
    channels: list[int] = Field(
        [16, 32, 64], min_length=2, description="Channels per U-Net level, finest first."
    )
    constraint: Literal["none", "conserve"] = Field(
        "none",
        description="conserve: the block mean of the output equals the LR input exactly "
        "(additive for unbounded variables, multiplicative for non-negative ones).",
    )
    joint: bool = Field(
        True,
        description="Train all variables as channels of one model (false: one model per variable).",
    )
    bf16: bool = Field(True, description="bf16 autocast where the CPU/GPU supports it.")
    compile: bool = Field(False, description="torch.compile the model.")
    loader: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="memory: load the splits into RAM; stream: read patches from the zarr store "
        "in DataLoader workers; auto: memory when the store is under memory_limit_gb.",
    )
    memory_limit_gb: float = Field(
        2.0, gt=0, description="Largest store (uncompressed GB) that loader=auto loads into RAM."
    )
    workers: int = Field(0, ge=0, description="DataLoader worker processes (0: main process).")
    checkpoint_every: int = Field(
        200, ge=1, description="Optimiser steps between checkpoints (also on SIGTERM/SIGUSR1)."
    )
    threads: int = Field(0, ge=0, description="Torch CPU threads (0: the rule's threads).")


class UNetCRPSConfig(UNetConfig):
    """Stochastic residual U-Net (noise injected at every level) trained with the fair CRPS."""

    train_members: int = Field(
        2, ge=2, description="Ensemble members per sample in the fair-CRPS training loss."
    )
    members: int = Field(8, ge=1, description="Ensemble members drawn at inference.")
    noise_channels: int = Field(
        4, ge=1, description="Gaussian noise channels injected at each U-Net level."
    )


# Registry names that are not Python identifiers: config key → attribute name.
_METHOD_ALIASES = {"unet-crps": "unet_crps"}


class MethodsConfig(_Strict):
    """Methods to run (registry names); an absent method is not run."""

    model_config = ConfigDict(
        extra="forbid", validate_default=True, validate_by_name=True, serialize_by_alias=True
    )

    bicubic: BicubicConfig | None = Field(default_factory=BicubicConfig)
    unet: UNetConfig | None = Field(default_factory=UNetConfig)
    unet_crps: UNetCRPSConfig | None = Field(
        None, alias="unet-crps", description="CRPS-trained stochastic U-Net (an ensemble)."
    )

    @classmethod
    def registry_names(cls) -> list[str]:
        """Every method's registry name (the config key), in registry order."""
        return [f.alias or name for name, f in cls.model_fields.items()]

    def enabled(self) -> list[str]:
        """Registry names of the configured methods, in registry order."""
        return [
            f.alias or name
            for name, f in type(self).model_fields.items()
            if getattr(self, name) is not None
        ]

    def get(self, method: str) -> Any:
        """The config of ``method`` (a registry name), or None when it is not configured."""
        return getattr(self, _METHOD_ALIASES.get(method, method), None)


class EvaluateConfig(_Strict):
    """Evaluation options."""

    bands: list[list[float]] = Field(
        [[2, 4], [4, 8], [8, 16], [16, 32]],
        description="Wavelength bands, in HR cells, for the spectral ratio.",
    )
    figure_steps: int = Field(
        2, ge=1, description="Test time steps shown in the comparison figure."
    )


class CampaignConfig(_Strict):
    """A campaign: one validated config gives one folder ``<results>/<campaign>/``."""

    campaign: str = Field("toy", description="Name; outputs go under <results>/<campaign>/.")
    results: str = Field("results", description="Root folder of all outputs.")
    seed: int = Field(0, ge=0, description="Seed of every random draw (toy world, patches, init).")
    scale: int = Field(8, ge=2, le=64, description="Integer HR cells per LR cell, per axis.")
    variables: list[VariableConfig] = Field(
        default_factory=lambda: [
            VariableConfig(name="tas", units="K", kind="temperature"),
            VariableConfig(name="pr", units="mm h-1", kind="precipitation"),
        ],
        min_length=1,
        description="What is downscaled.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    methods: MethodsConfig = Field(default_factory=MethodsConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @field_validator("campaign")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"campaign name {v!r} must be letters, digits, '_' or '-'")
        return v

    @field_validator("results")
    @classmethod
    def _relative_results(cls, v: str) -> str:
        if ".." in Path(v).parts:
            raise ValueError(f"results folder {v!r} must not contain '..'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CampaignConfig:
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError(f"variables: names must be unique, got {names}")
        target = self.data.target
        for axis, n in (("nx", target.nx), ("ny", target.ny)):
            if n % self.scale:
                raise ValueError(f"data.target.{axis}={n} is not a multiple of scale={self.scale}")
        for name in self.methods.enabled():
            mcfg = self.methods.get(name)
            if isinstance(mcfg, UNetConfig) and mcfg.patch % self.scale:
                raise ValueError(
                    f"methods.{name}.patch={mcfg.patch} is not a multiple of scale={self.scale}"
                )
        return self

    @property
    def campaign_dir(self) -> Path:
        """``<results>/<campaign>``: every output of this campaign lives below it."""
        return Path(self.results) / self.campaign

    def variable(self, name: str) -> VariableConfig:
        """The variable called ``name``."""
        for var in self.variables:
            if var.name == name:
                return var
        raise ConfigError(f"variable {name!r} is not configured; configured: {self.variable_names}")

    @property
    def variable_names(self) -> list[str]:
        return [v.name for v in self.variables]


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _format_error(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        if e["type"] == "extra_forbidden":
            parent_loc = e["loc"][:-1]
            model: type[BaseModel] = CampaignConfig
            for part in parent_loc:
                field = model.model_fields.get(str(part))
                ann = getattr(field, "annotation", None)
                args = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
                sub = next((a for a in args if issubclass(a, BaseModel)), None)
                if sub is None:
                    break
                model = sub
            allowed = list(model.model_fields)
            lines.append(
                f"config key {loc!r} is not known{_suggest(str(e['loc'][-1]), allowed)}; "
                f"allowed here: {', '.join(allowed)}"
            )
        else:
            value = e.get("input")
            shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
            lines.append(f"config key {loc or '<top>'!r} = {shown}: {e['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def validate_config(raw: dict[str, Any]) -> CampaignConfig:
    """Validate a config mapping; raise :class:`ConfigError` naming every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration must be a mapping, got {type(raw).__name__}")
    try:
        return CampaignConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, raw)) from None


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base`` the way Snakemake merges config files."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(*paths: str | Path) -> CampaignConfig:
    """Read YAML config files (later ones override earlier ones) and validate them."""
    raw: dict[str, Any] = {}
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        with p.open() as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        raw = deep_merge(raw, loaded)
    return validate_config(raw)


# Which top-level keys each stage reads. A stage's outputs depend on exactly these, so Snakemake
# reruns a stage (and what follows) only when its slice changes.
_STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "ingest": ("campaign", "results", "seed", "scale", "variables", "data"),
    "preprocess": ("campaign", "results", "seed", "scale", "variables", "data", "split"),
    "train": ("campaign", "results", "seed", "scale", "variables", "data", "split"),
    "infer": ("campaign", "results", "seed", "scale", "variables", "data", "split"),
    "evaluate": ("campaign", "results", "seed", "scale", "variables", "data", "split", "evaluate"),
}


def stage_slice(cfg: CampaignConfig, stage: str, method: str | None = None) -> dict[str, Any]:
    """The part of the config that ``stage`` (for ``method``) depends on, as plain JSON data."""
    if stage not in _STAGE_KEYS:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(_STAGE_KEYS)}")
    full = cfg.model_dump(mode="json")
    out = {key: full[key] for key in _STAGE_KEYS[stage]}
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
    """sha256 of the canonical JSON of a config (or a stage slice of it)."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


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
    methods = dict(raw.get("methods", {}))
    merged["methods"] = {name: methods.get(name) for name in MethodsConfig.registry_names()}
    return validate_config(merged), raw


def json_schema() -> dict[str, Any]:
    """The JSON schema of the config, generated from the models."""
    return CampaignConfig.model_json_schema()
