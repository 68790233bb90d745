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

    epochs: int = Field(6, ge=1, description="Passes over the training patches.")
    patch: int = Field(64, ge=8, description="HR patch size (a multiple of scale).")
    batch: int = Field(16, ge=1, description="Patches per optimiser step.")
    patches_per_step: int = Field(
        2, ge=1, description="Random patches drawn from each training time step per epoch."
    )
    lr: float = Field(2e-3, gt=0, lt=1, description="Peak AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up steps before cosine decay.")
    channels: list[int] = Field(
        [16, 32, 64], min_length=2, description="Channels per U-Net level, finest first."
    )
    bf16: bool = Field(True, description="bf16 autocast where the CPU/GPU supports it.")
    threads: int = Field(0, ge=0, description="Torch CPU threads (0: the rule's threads).")


class MethodsConfig(_Strict):
    """Methods to run (registry names); an absent method is not run."""

    bicubic: BicubicConfig | None = Field(default_factory=BicubicConfig)
    unet: UNetConfig | None = Field(default_factory=UNetConfig)

    def enabled(self) -> list[str]:
        """Names of the configured methods, in registry order."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]


class InferConfig(_Strict):
    """Tiled inference: any domain size in bounded memory (``infer`` and ``climai downscale``)."""

    tile: int = Field(
        512, ge=8, description="HR tile edge in cells (a multiple of scale and of the model's)."
    )
    overlap: int = Field(
        128,
        ge=0,
        description="HR cells shared by neighbouring tiles (a multiple of scale); tiles are exact "
        "when the model's receptive radius is at most overlap / 4.",
    )
    batch: int = Field(4, ge=1, description="Tile × time samples per forward pass.")
    time_block: int = Field(
        0,
        ge=0,
        description="Time steps processed together (tiles of several steps share batches); "
        "0: as many as memory_mb allows.",
    )
    memory_mb: int = Field(
        512, ge=16, description="Budget of the band buffers when time_block is 0 (MiB)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; auto: cuda when available, else cpu."
    )
    bf16: bool = Field(True, description="bf16 autocast where the device supports it.")
    members: int = Field(
        8, ge=1, description="Ensemble members drawn from a stochastic model (dim 'member')."
    )
    ensemble_mean: bool = Field(
        False, description="Also write <var>_mean, the mean over members (stochastic models)."
    )
    quantiles: list[float] = Field(
        [], description="Also write <var>_quantile over members at these levels, in (0, 1)."
    )
    progress: bool = Field(True, description="Show a progress bar with ETA on stderr.")

    @field_validator("quantiles")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        bad = [q for q in v if not 0 < q < 1]
        if bad:
            raise ValueError(f"quantile levels must be in (0, 1), got {bad}")
        return v

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> InferConfig:
        if self.overlap >= self.tile:
            raise ValueError(f"overlap={self.overlap} must be smaller than tile={self.tile}")
        return self


class ExportConfig(_Strict):
    """CF-1.10 NetCDF export of the downscaled fields, one file per method and variable."""

    compression_level: int = Field(4, ge=0, le=9, description="zlib level (0: uncompressed).")
    chunk_xy: int = Field(256, ge=16, description="NetCDF chunk edge along y and x, in cells.")


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
    infer: InferConfig = Field(default_factory=InferConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
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
        for key in ("tile", "overlap"):
            if getattr(self.infer, key) % self.scale:
                raise ValueError(
                    f"infer.{key}={getattr(self.infer, key)} is not a multiple of "
                    f"scale={self.scale}"
                )
        if self.methods.unet is not None and self.methods.unet.patch % self.scale:
            raise ValueError(
                f"methods.unet.patch={self.methods.unet.patch} is not a multiple of "
                f"scale={self.scale}"
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
    "infer": ("campaign", "results", "seed", "scale", "variables", "data", "split", "infer"),
    "export": ("campaign", "results", "variables", "export"),
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
    merged["methods"] = {name: methods.get(name) for name in MethodsConfig.model_fields}
    return validate_config(merged), raw


def json_schema() -> dict[str, Any]:
    """The JSON schema of the config, generated from the models."""
    return CampaignConfig.model_json_schema()
