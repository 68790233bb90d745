"""Campaign configuration: typed models, validation with errors for people, stage slices.

The pydantic models below are the single source of truth for the config: they validate
``config/config.yaml`` (and any ``--configfile``), and they generate
``workflow/schemas/config.schema.json`` (a test keeps the two in step).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    RootModel,
    SerializeAsAny,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from climai.paths import CampaignPaths

VariableKind = Literal["precipitation", "temperature", "generic"]
TOY_VARIABLES = ("tas", "pr")


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key, the value and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ConverterConfig(_Strict):
    """A named converter (climai/converters.py) that derives the variable from the source one."""

    name: str = Field(description="Registry name, e.g. dbz_to_rain_rate.")
    params: dict[str, float] = Field(
        default_factory=dict, description="Keyword parameters, e.g. {a: 223, b: 1.53}."
    )


class VariableConfig(_Strict):
    """One downscaled variable."""

    name: str = Field(description="Name inside climai and in outputs (CMIP short name, e.g. tas).")
    source_name: str | None = Field(None, description="Name in the input files (default: name).")
    units: str = Field(description="Canonical units; inputs are converted to them.")
    kind: VariableKind = Field(
        "generic",
        description="precipitation | temperature | generic: picks transform and constraint.",
    )
    converter: ConverterConfig | None = Field(
        None, description="Derive the variable with a named converter before unit conversion."
    )
    input_name: str | None = Field(
        None, description="Name in data.input's files (default: source_name, then name)."
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


class _FileSource(_Strict):
    """Fields shared by the file sources."""

    variable: str | None = Field(
        None,
        description="Static fields only: the variable to read (target: variables[].source_name).",
    )
    units: str | None = Field(
        None, description="Static fields only: convert to these units (default: keep the file's)."
    )
    crs: str | None = Field(
        None,
        description="CRS of the grid when the files have no CF grid_mapping (e.g. EPSG:3067).",
    )


class NetCDFSource(_FileSource):
    """NetCDF files: one file, a glob or a list; a multi-file series is opened lazily with dask."""

    source: Literal["netcdf"]
    path: str | list[str] = Field(description="File, glob pattern, or list of files/globs.")


class ZarrSource(_FileSource):
    """A zarr store: a local folder or an fsspec URL (s3://, gs://, https://...)."""

    source: Literal["zarr"]
    path: str = Field(description="Store folder or fsspec URL.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options of a remote store (e.g. anon: true)."
    )


class GribSource(_FileSource):
    """GRIB files through cfgrib/ecCodes (optional extra: pip install 'climai[grib]')."""

    source: Literal["grib"]
    path: str | list[str] = Field(description="File, glob pattern, or list of files/globs.")
    filter_by_keys: dict[str, str | int] = Field(
        default_factory=dict, description="cfgrib filter_by_keys, e.g. {typeOfLevel: surface}."
    )


BUILTIN_SOURCES = ("netcdf", "zarr", "grib")


class PluginSource(_FileSource):
    """A reader plugin: a package's entry point in the group ``climai.readers``, by its name."""

    source: str = Field(description="Name of an installed reader plugin.")
    path: str | list[str] | None = Field(
        None, description="File, glob pattern or list passed to the reader (optional)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword options that the reader plugin reads."
    )

    @field_validator("source")
    @classmethod
    def _installed(cls, v: str) -> str:
        from climai.plugins import plugin_names

        plugins = plugin_names("reader")
        if v not in plugins:
            raise ValueError(
                f"unknown source {v!r}; valid sources: synthetic (target only), "
                f"{', '.join(BUILTIN_SOURCES)}, derived (static only), and the installed reader "
                f"plugins: {', '.join(plugins) or 'none'}"
            )
        return v


class DerivedStatic(_Strict):
    """A static field computed on the HR grid itself (for campaigns without a DEM)."""

    source: Literal["derived"]
    field: Literal["x", "y", "valid_fraction"] = Field(
        description="x | y: projected coordinate in km from the domain centre; "
        "valid_fraction: fraction of time steps with data in each cell (first target variable)."
    )


_SOURCE_TAGS = ("synthetic", *BUILTIN_SOURCES, "derived")


def _source_tag(value: Any) -> str:
    """The union member of a source: its ``source`` name, ``plugin`` for any other name."""
    if isinstance(value, dict):
        tag = str(value.get("source", "synthetic"))
    else:
        tag = str(getattr(value, "source", "synthetic"))
    return tag if tag in _SOURCE_TAGS else "plugin"


TargetSource = Annotated[
    Annotated[SyntheticConfig, Tag("synthetic")]
    | Annotated[NetCDFSource, Tag("netcdf")]
    | Annotated[ZarrSource, Tag("zarr")]
    | Annotated[GribSource, Tag("grib")]
    | Annotated[PluginSource, Tag("plugin")],
    Discriminator(_source_tag),
]
StaticSource = Annotated[
    Annotated[NetCDFSource, Tag("netcdf")]
    | Annotated[ZarrSource, Tag("zarr")]
    | Annotated[GribSource, Tag("grib")]
    | Annotated[PluginSource, Tag("plugin")]
    | Annotated[DerivedStatic, Tag("derived")],
    Discriminator(_source_tag),
]
InputSource = Annotated[
    Annotated[NetCDFSource, Tag("netcdf")]
    | Annotated[ZarrSource, Tag("zarr")]
    | Annotated[GribSource, Tag("grib")]
    | Annotated[PluginSource, Tag("plugin")],
    Discriminator(_source_tag),
]
FileSource = NetCDFSource | ZarrSource | GribSource


class DataConfig(_Strict):
    """Where the data come from."""

    target: TargetSource = Field(
        default_factory=SyntheticConfig,
        description="HR truth: synthetic | netcdf | zarr | grib | a reader plugin (key 'source').",
    )
    input: InputSource | None = Field(
        None,
        description="Coarse driving data regridded onto the LR grid (ingest/input.zarr); "
        "absent: LR is the block mean of the target (perfect model).",
    )
    static: dict[str, StaticSource] = Field(
        default_factory=dict,
        description="Static HR predictors by name (e.g. orography); regridded onto the HR grid. "
        "Default: the toy world's orography and lsm for a synthetic target.",
    )

    @model_validator(mode="after")
    def _static_needs_variable(self) -> DataConfig:
        if not isinstance(self.target, SyntheticConfig) and (
            self.target.variable or self.target.units
        ):
            raise ValueError(
                "data.target.variable/units are for static fields; name target variables "
                "with variables[].source_name and their units with variables[].units"
            )
        if self.input is not None and (self.input.variable or self.input.units):
            raise ValueError(
                "data.input.variable/units are for static fields; name input variables with "
                "variables[].input_name and their units with variables[].units"
            )
        for name, spec in self.static.items():
            if not isinstance(spec, DerivedStatic) and not spec.variable:
                raise ValueError(
                    f"data.static.{name}: 'variable' (the name in the file) is required"
                )
        if not isinstance(self.target, SyntheticConfig) and not self.static:
            raise ValueError(
                "data.static must name at least one static field when the target is read from "
                "files (e.g. orography from a DEM, or {source: derived, field: x})"
            )
        return self


class DomainConfig(_Strict):
    """A subset of the target, in the target's own coordinates (cell centres inside are kept)."""

    x: tuple[float, float] = Field(description="[min, max] along x (metres or degrees east).")
    y: tuple[float, float] = Field(description="[min, max] along y (metres or degrees north).")


SplitBound = float | list[str]


class SplitConfig(_Strict):
    """The time splits, in time order: fractions of the time axis, or ISO time ranges.

    Fractions: ``{train: 0.7, val: 0.1, test: 0.2}`` (they must sum to 1). Ranges: each split is
    ``[first, last]`` in ISO 8601 (both inclusive), e.g. ``train: ["2016-09-28T14:45",
    "2016-09-28T17:00"]``; ranges must not overlap and steps outside every range are unused.
    """

    train: SplitBound = Field(0.7, description="Fraction of the time axis, or [first, last] ISO.")
    val: SplitBound = Field(0.1, description="Fraction of the time axis, or [first, last] ISO.")
    test: SplitBound = Field(0.2, description="Fraction of the time axis, or [first, last] ISO.")
    gap: int = Field(
        0,
        ge=0,
        description="Time steps left out (label -1) before each of val and test (fractions only).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SplitConfig:
        import numpy as np

        values = {"train": self.train, "val": self.val, "test": self.test}
        kinds = {type(v) is list for v in values.values()}
        if len(kinds) > 1:
            raise ValueError(
                "split: give all of train, val, test as fractions or all as [first, last] "
                f"ISO time ranges, got {values}"
            )
        if kinds == {False}:
            for name, v in values.items():
                if not 0 < v < 1:
                    raise ValueError(f"split.{name}={v:g} must be a fraction between 0 and 1")
            total = self.train + self.val + self.test
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"train + val + test must be 1, got {total:g}")
            return self
        if self.gap:
            raise ValueError("split.gap applies to fractions only; leave gaps between the ranges")
        bounds = {}
        for name, v in values.items():
            if len(v) != 2:
                raise ValueError(f"split.{name}={v} must be [first, last] (two ISO times)")
            try:
                lo, hi = (np.datetime64(t, "ns") for t in v)
            except ValueError as err:
                raise ValueError(
                    f"split.{name}={v} is not a pair of ISO 8601 times: {err}"
                ) from None
            if hi < lo:
                raise ValueError(f"split.{name}={v}: last time is before first time")
            bounds[name] = (lo, hi)
        names = sorted(bounds, key=lambda n: bounds[n][0])
        for a, b in itertools.pairwise(names):
            if bounds[b][0] <= bounds[a][1]:
                raise ValueError(
                    f"split.{a}={values[a]} and split.{b}={values[b]} overlap; "
                    "time ranges must be disjoint"
                )
        return self

    @property
    def by_time(self) -> bool:
        """Whether the splits are ISO time ranges (else fractions)."""
        return isinstance(self.train, list)


class DistributedConfig(_Strict):
    """A ``dask.distributed`` cluster for ``preprocess`` (``scheduler: local`` or ``slurm``)."""

    workers: int = Field(2, ge=1, description="Worker processes (local) or SLURM jobs (slurm).")
    threads_per_worker: int = Field(1, ge=1, description="Threads in each worker process.")
    memory_limit: str = Field("4GiB", description="Memory limit of each worker, e.g. 4GiB.")
    queue: str | None = Field(None, description="SLURM partition of the worker jobs (slurm).")
    walltime: str = Field("01:00:00", description="SLURM time limit of each worker job.")


class PreprocessConfig(_Strict):
    """How ``preprocess`` coarsens, chunks, compresses and parallelises."""

    min_valid_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Fraction of an LR cell's HR cells that must be valid (else the LR cell is NaN).",
    )
    time_chunk: int = Field(
        8, ge=1, description="Time steps per shard and per dask chunk of the dataset."
    )
    tile: int = Field(
        256, ge=8, description="Spatial tile (cells) of the inner zarr chunks inside a shard."
    )
    codec: Literal["lz4", "zstd"] = Field(
        "lz4", description="Blosc codec of the dataset (lz4: fastest measured; zstd: smaller)."
    )
    clevel: int = Field(5, ge=1, le=9, description="Blosc compression level.")
    quantiles: int = Field(
        101, ge=2, description="Evenly spaced quantiles (0..1) stored per variable in stats.json."
    )
    scheduler: Literal["threads", "local", "slurm"] = Field(
        "threads",
        description="threads: dask's threaded scheduler with the rule's threads; local: a "
        "dask.distributed LocalCluster; slurm: dask-jobqueue SLURMCluster (multi-node).",
    )
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    progress: bool = Field(True, description="Show a progress bar on runs longer than 2 s.")


class BicubicConfig(_Strict):
    """Bicubic interpolation of the LR field: the baseline every emulator must beat."""

    type: Literal["bicubic"] = Field("bicubic", description="Method type (registry name).")


class NearestConfig(_Strict):
    """Nearest-neighbour upsampling of the LR field: a reference that keeps the LR blocks."""

    type: Literal["nearest"] = Field("nearest", description="Method type (registry name).")


class QuantileMappingConfig(_Strict):
    """Statistical baseline: bicubic interpolation, then empirical quantile mapping fitted on the
    train split (bicubic-of-LR quantiles → HR-truth quantiles, per variable)."""

    type: Literal["quantile-mapping"] = Field(
        "quantile-mapping", description="Method type (registry name)."
    )

    quantiles: int = Field(
        1001, ge=11, le=100_001, description="Quantile levels of the fitted mapping table."
    )
    max_samples: int = Field(
        2_000_000,
        ge=1000,
        description="Train cells drawn (seeded) per variable to fit the table; all if fewer.",
    )


FreezeGroup = Literal["encoder", "bottleneck", "decoder"]


class InitFromCampaign(_Strict):
    """A trained model named by campaign and method: ``<results>/<campaign>/models/<method>/
    model.pt`` under the same results root. In the same campaign (``campaign`` left out) it is a
    DAG dependency that Snakemake builds; another campaign must have been run first (its train
    rule made the file)."""

    campaign: str | None = Field(
        None, description="Campaign that trained the parent model (null: this campaign)."
    )
    method: str = Field("unet", description="Method name of the parent in that campaign.")


class EmulatorConfig(_Strict):
    """What every trained method shares: the training loop's keys (patches, optimiser, EMA,
    early stopping, checkpoints). A method plugin's config subclasses it (docs/add-an-emulator.md).
    """

    type: str = Field(description="Method type (registry name).")
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
    loss: Literal["mse", "mae"] = Field(
        "mse",
        description="Training loss in normalised transformed space: mse | mae (masked). "
        "unet-crps always trains with the fair CRPS.",
    )


class UNetConfig(EmulatorConfig):
    """Residual U-Net on bicubic-upsampled LR plus HR static fields and time features."""

    type: Literal["unet"] = Field("unet", description="Method type (registry name).")  # type: ignore[assignment]
    channels: list[int] = Field(
        [16, 32, 64], min_length=2, description="Channels per U-Net level, finest first."
    )
    init_from: str | InitFromCampaign | None = Field(
        None,
        description="Fine-tuning: start from a trained model, a model.pt path or {campaign, "
        "method} ({method: unet}: this campaign's unet); variables, static fields, scale and "
        "channels must match it (a unet-crps may start from a unet: its noise projections are "
        "new). Normalisation statistics are this campaign's own (prep/stats.json).",
    )
    freeze: list[FreezeGroup] = Field(
        [],
        description="Parts kept fixed while fine-tuning (encoder | bottleneck | decoder); "
        "needs init_from. The output head always trains.",
    )

    sweep: dict[str, list[Any]] | None = Field(
        None,
        description="Variants to train, e.g. {lr: [3e-4, 2e-3], loss: [mse, mae]}: every "
        "combination becomes its own method <name>-lr3e-04-mse... (own train/infer/evaluate "
        "jobs, run in parallel) in place of <name>; evaluation/sweep_<name>.md ranks them on the "
        "val split.",
    )

    @model_validator(mode="after")
    def _freeze_needs_parent(self) -> UNetConfig:
        if self.freeze and self.init_from is None:
            raise ValueError(
                f"freeze={self.freeze} needs init_from (a trained model to keep parts of)"
            )
        if len(set(self.freeze)) != len(self.freeze):
            raise ValueError(f"freeze={self.freeze} names a part twice")
        return self


class UNetCRPSConfig(UNetConfig):
    """Stochastic residual U-Net (noise injected at every level) trained with the fair CRPS."""

    type: Literal["unet-crps"] = Field(  # type: ignore[assignment]
        "unet-crps", description="Method type (registry name)."
    )
    train_members: int = Field(
        2, ge=2, description="Ensemble members per sample in the fair-CRPS training loss."
    )
    members: int = Field(8, ge=1, description="Ensemble members drawn at inference.")
    noise_channels: int = Field(
        4, ge=1, description="Gaussian noise channels injected at each U-Net level."
    )
    loss: Literal["crps"] = Field(  # type: ignore[assignment]
        "crps", description="Always the fair ensemble CRPS over train_members draws."
    )


# Method types by registry name → their config model. A method in the config is a named
# instance of a type: ``methods: {<name>: {type: <type>, ...}}``; ``type`` defaults to the name.
METHOD_TYPES: dict[str, type[BaseModel]] = {
    "bicubic": BicubicConfig,
    "nearest": NearestConfig,
    "quantile-mapping": QuantileMappingConfig,
    "unet": UNetConfig,
    "unet-crps": UNetCRPSConfig,
}
DEFAULT_METHODS = ("bicubic", "nearest", "quantile-mapping", "unet")


def _method_tag(value: Any) -> str:
    get = value.get if isinstance(value, dict) else lambda k, d: getattr(value, k, d)
    tag = str(get("type", ""))
    return tag if tag in METHOD_TYPES or not isinstance(value, BaseModel) else "plugin"


def _method_plugins() -> list[str]:
    """Method types of installed plugins (entry-point group ``climai.methods``), not loaded."""
    from climai.plugins import plugin_names

    return [n for n in plugin_names("method") if n not in METHOD_TYPES]


def _plugin_method_config(name: str, kind: str, spec: dict[str, Any]) -> BaseModel:
    """``methods.<name>`` validated by the config model of the plugin type ``kind``."""
    from climai.registry import method_type

    model = method_type(kind).config
    try:
        return model.model_validate({**spec, "type": kind})
    except ValidationError as err:
        problems = "; ".join(
            f"'methods.{name}.{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in err.errors()
        )
        raise ValueError(problems) from None


MethodConfig = Annotated[
    typing.Union[  # noqa: UP007
        tuple(
            [
                *(Annotated[m, Tag(t)] for t, m in METHOD_TYPES.items()),
                # a plugin type, already validated by its own model in MethodsConfig._typed
                Annotated[SerializeAsAny[BaseModel], Tag("plugin")],
            ]
        )
    ],
    Discriminator(_method_tag),
]


class MethodsConfig(RootModel[dict[str, MethodConfig | None]]):
    """Methods to run, by name: ``{<name>: {type: <registry type>, ...}}`` or null (not run).

    ``type`` defaults to the name, so ``unet: {epochs: 4}`` is a U-Net called ``unet`` and
    ``unet-big: {type: unet, channels: [32, 64, 128]}`` a second one with its own branch.
    """

    root: dict[str, MethodConfig | None] = Field(
        default_factory=lambda: {m: METHOD_TYPES[m]() for m in DEFAULT_METHODS}
    )

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for name, spec in value.items():
            if not isinstance(name, str) or not _METHOD_NAME.fullmatch(name):
                raise ValueError(
                    f"method name {name!r} (under 'methods') must be lower-case letters, digits, "
                    "'-' or '_', starting with a letter or digit"
                )
            if spec is None or isinstance(spec, BaseModel):
                out[name] = spec
                continue
            if not isinstance(spec, dict):
                raise ValueError(
                    f"'methods.{name}' must be a mapping of its settings (or null), got {spec!r}"
                )
            kind = spec.get("type", name)
            if kind not in METHOD_TYPES and kind in _method_plugins():
                out[name] = _plugin_method_config(name, kind, spec)
                continue
            if kind not in METHOD_TYPES:
                types = ", ".join([*METHOD_TYPES, *_method_plugins()])
                what = (
                    f"'methods.{name}.type' = {kind!r}"
                    if "type" in spec
                    else (f"'methods.{name}' is not known{_suggest(name, list(METHOD_TYPES))}")
                )
                raise ValueError(
                    f"{what}; a method's type must be one of: {types} "
                    f"(set 'type:' to name another method of a known type)"
                )
            out[name] = {**spec, "type": kind}
        return out

    def _all(self) -> dict[str, BaseModel | None]:
        return self.root

    def get(self, method: str) -> BaseModel | None:
        """The config of ``method`` (by name), None when it is set to null."""
        if method not in self.root:
            raise ConfigError(
                f"unknown method {method!r}; methods: {', '.join(self.root) or 'none'}"
            )
        return self.root[method]

    def enabled(self) -> list[str]:
        """Names of the methods to run, in config order."""
        return [m for m, c in self.root.items() if c is not None]

    def type_of(self, method: str) -> str:
        """The registry type of a configured method."""
        cfg = self.get(method)
        if cfg is None:
            raise ConfigError(f"method {method!r} is set to null (not run)")
        return str(cfg.type)  # type: ignore[attr-defined]

    def of_type(self, *types: str) -> list[str]:
        """Enabled methods whose type is one of ``types``."""
        return [m for m in self.enabled() if self.type_of(m) in types]

    def ensembles(self) -> list[str]:
        """Configured methods that predict an ensemble (a ``members`` setting above 1)."""
        return [m for m in self.enabled() if getattr(self.get(m), "members", 1) > 1]


_METHOD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _sweep_label(key: str, value: Any) -> str:
    """A method-name fragment for one swept setting: lr3e-04, mse, channels16x32, no-bf16."""
    if isinstance(value, bool):
        return key if value else f"no-{key}"
    if isinstance(value, int):
        return f"{key}{value}"
    if isinstance(value, float):
        small = value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4)
        text = f"{value:.1e}".replace(".0e", "e") if small else f"{value:g}"
        return key + text.replace(".", "p")
    if isinstance(value, list | tuple):
        return key + "x".join(str(v) for v in value)
    return str(value).lower()


def _sweep_value(name: str, model: type[BaseModel], key: str, value: Any) -> Any:
    """A swept value as the setting's type (YAML reads ``7e-4`` as text), for stable names."""
    try:
        return TypeAdapter(model.model_fields[key].annotation).validate_python(value)
    except ValidationError as err:
        msg = err.errors()[0]["msg"]
        raise ValueError(f"'methods.{name}.sweep.{key}' value {value!r}: {msg}") from None


def _sweep_variants(name: str, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The methods a ``sweep`` of method ``name`` expands into: one per combination."""
    grid = spec["sweep"]
    kind = spec.get("type", name)
    model = METHOD_TYPES.get(kind)
    if model is None or not issubclass(model, UNetConfig):
        raise ValueError(f"'methods.{name}.sweep': only trained methods (unet, unet-crps) sweep")
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"'methods.{name}.sweep' must map settings to lists of values")
    allowed = [k for k in model.model_fields if k not in ("type", "sweep")]
    base = {k: v for k, v in spec.items() if k != "sweep"}
    for key, values in grid.items():
        if key not in allowed:
            raise ValueError(
                f"'methods.{name}.sweep.{key}' is not a setting of {kind}"
                f"{_suggest(str(key), allowed)}; settings: {', '.join(allowed)}"
            )
        if not isinstance(values, list) or not values:
            raise ValueError(f"'methods.{name}.sweep.{key}' must be a non-empty list of values")
    typed = {k: [_sweep_value(name, model, k, v) for v in values] for k, values in grid.items()}
    out: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*typed.values()):
        settings = dict(zip(grid, combo, strict=True))
        label = "-".join(_sweep_label(k, v) for k, v in settings.items())
        variant = f"{name}-{label}".lower()
        if variant in out:
            raise ValueError(f"'methods.{name}.sweep' gives two variants named {variant!r}")
        out[variant] = {**base, "type": kind, **settings}
    return out


def expand_sweeps(methods: Any) -> tuple[Any, dict[str, list[str]]]:
    """``(methods, sweeps)``: every method with a ``sweep`` replaced by its variants (named
    ``<name>-<setting><value>...``), and the variant names of each swept method."""
    if not isinstance(methods, dict):
        return methods, {}
    out: dict[str, Any] = {}
    sweeps: dict[str, list[str]] = {}
    for name, spec in methods.items():
        if not isinstance(spec, dict) or spec.get("sweep") is None:
            out[name] = spec
            continue
        variants = _sweep_variants(str(name), spec)
        clash = sorted(set(variants) & (set(methods) | set(out)))
        if clash:
            raise ValueError(f"'methods.{name}.sweep' variant names {clash} are already methods")
        out[name] = None  # the swept method itself does not run; its variants do
        out.update(variants)
        sweeps[str(name)] = list(variants)
    return out, sweeps


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
        2, ge=1, description="Test time steps shown in the maps (the wettest ones, else spread)."
    )
    wet_threshold: float = Field(
        0.1,
        ge=0,
        description="Precipitation at or above this (in the variable's units) counts as wet.",
    )
    metrics: list[str] = Field(
        default_factory=lambda: _metric_names(builtin=True),
        min_length=1,
        description="Metrics computed (registry names, plugins included; default: every "
        "built-in one); those that do not apply to a variable or method are skipped.",
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        valid = _metric_names()
        unknown = [m for m in v if m not in valid]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; valid metrics: {', '.join(valid)}")
        missing = [m for m in _contract_metrics() if m not in v]
        if missing:
            raise ValueError(f"metrics must include the contract metrics {missing}")
        return v

    @field_validator("bands")
    @classmethod
    def _bands(cls, v: list[list[float]]) -> list[list[float]]:
        for band in v:
            if len(band) != 2 or not 2 <= band[0] < band[1]:
                raise ValueError(f"band {band} must be [lo, hi] with 2 <= lo < hi (HR cells)")
        return v


def _metric_names(builtin: bool = False) -> list[str]:
    from climai.evaluation.metrics import METRICS

    return list(METRICS.builtins) if builtin else METRICS.names()


def _contract_metrics() -> tuple[str, ...]:
    from climai.evaluation.metrics import CONTRACT_METRICS

    return CONTRACT_METRICS


class PreparedConfig(_Strict):
    """Where train, infer and evaluate read the prepared data (``dataset.zarr``, ``stats.json``).

    By default this campaign's ``prep/``, written by ``preprocess``. ``campaign`` reuses another
    campaign's prepared data, to compare emulators without ingesting and preprocessing again;
    ``folder`` names the output of an extra rule that transforms ``prep/`` (e.g. a bias correction
    between preprocess and train, ``docs/add-a-rule.md``).
    """

    campaign: str | None = Field(
        None,
        description="Reuse this campaign's prepared data (same results folder; it must have been "
        "preprocessed with the same data, variables, scale, split and preprocess keys); null: "
        "this campaign's own. Ingest and preprocess then do not run for this campaign.",
    )
    folder: str = Field(
        "prep",
        description="Folder under that campaign's folder holding dataset.zarr and stats.json "
        "(prep: what preprocess writes; another name: the output of an extra rule).",
    )

    @field_validator("campaign")
    @classmethod
    def _safe_campaign(cls, v: str | None) -> str | None:
        if v is not None and not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"campaign name {v!r} must be letters, digits, '_' or '-'")
        return v

    @field_validator("folder")
    @classmethod
    def _relative_folder(cls, v: str) -> str:
        if not v or Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"prepared.folder {v!r} must be a relative path without '..'")
        return v


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
    domain: DomainConfig | None = Field(
        None, description="Optional subset {x: [min, max], y: [min, max]} in target coordinates."
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    methods: MethodsConfig = Field(default_factory=MethodsConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    prepared: PreparedConfig = Field(default_factory=PreparedConfig)
    rules: list[str] = Field(
        [],
        description="Extra Snakemake rule files (.smk), included after climai's own; paths "
        "relative to the working folder (docs/add-a-rule.md).",
    )

    @field_validator("campaign")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"campaign name {v!r} must be letters, digits, '_' or '-'")
        return v

    _sweeps: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _expand_sweeps(cls, data: Any, handler: Any) -> CampaignConfig:
        sweeps: dict[str, list[str]] = {}
        if isinstance(data, dict) and "methods" in data:
            methods, sweeps = expand_sweeps(data["methods"])
            data = {**data, "methods": methods}
        cfg = handler(data)
        if sweeps:
            cfg._sweeps = sweeps
        return cfg

    @property
    def sweeps(self) -> dict[str, list[str]]:
        """Swept methods (``methods.<name>.sweep``) → the names of their variants."""
        return dict(self._sweeps)

    @field_validator("methods", mode="before")
    @classmethod
    def _with_default_methods(cls, v: Any) -> Any:
        # like Snakemake's merge over config/config.yaml: the default methods run unless set to null
        if isinstance(v, dict):
            return {**{m: {} for m in DEFAULT_METHODS if m not in v}, **v}
        return v

    @field_validator("results")
    @classmethod
    def _relative_results(cls, v: str) -> str:
        if ".." in Path(v).parts:
            raise ValueError(f"results folder {v!r} must not contain '..'")
        return v

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> CampaignConfig:
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError(f"variables: names must be unique, got {names}")
        target = self.data.target
        if isinstance(target, SyntheticConfig):
            self._check_synthetic(target)
        for key in ("tile", "overlap"):
            if getattr(self.infer, key) % self.scale:
                raise ValueError(
                    f"infer.{key}={getattr(self.infer, key)} is not a multiple of "
                    f"scale={self.scale}"
                )
        for name in self.methods.enabled():
            unet = self.methods.get(name)
            if not isinstance(unet, EmulatorConfig):
                continue
            if unet.patch % self.scale:
                raise ValueError(
                    f"methods.{name}.patch={unet.patch} is not a multiple of scale={self.scale}"
                )
            if not isinstance(unet, UNetConfig):
                continue
            levels = 2 ** (len(unet.channels) - 1)
            if unet.patch % levels:
                raise ValueError(
                    f"methods.{name}.patch={unet.patch} must be a multiple of {levels} for "
                    f"{len(unet.channels)} U-Net levels (methods.{name}.channels)"
                )
            self._check_parent(name, whole=not (info.context or {}).get("stage_slice"))
        return self

    def _check_parent(self, name: str, whole: bool) -> None:
        """A parent in this same campaign must be another configured, trained method (checked
        on a ``whole`` config: a stage slice holds only the method itself)."""
        parent = self.parent_method(name)
        if parent is None:
            return
        if parent == name:
            raise ValueError(f"methods.{name}.init_from names the method itself")
        if not whole:
            return
        enabled = self.methods.enabled()
        if parent not in enabled or not isinstance(self.methods.get(parent), UNetConfig):
            trained = [
                m for m in enabled if m != name and isinstance(self.methods.get(m), UNetConfig)
            ]
            raise ValueError(
                f"methods.{name}.init_from.method={parent!r} is not a trained method of "
                f"campaign {self.campaign!r}; trained methods: {', '.join(trained) or 'none'} "
                f"(set methods.{name}: null too, or give it another parent)"
            )

    def parent_method(self, method: str) -> str | None:
        """The method of this campaign that ``method`` is fine-tuned from (None: none here)."""
        parent = getattr(self.methods.get(method), "init_from", None)
        if isinstance(parent, InitFromCampaign) and parent.campaign in (None, self.campaign):
            return parent.method
        return None

    def training_waves(self, methods: list[str]) -> list[list[str]]:
        """``methods`` (trained ones) in waves that can train side by side: a method fine-tuned
        from another of this campaign trains in the wave after its parent's."""
        depth: dict[str, int] = {}

        def of(m: str) -> int:
            if m not in depth:
                parent = self.parent_method(m)
                depth[m] = 0 if parent is None or parent not in methods else of(parent) + 1
            return depth[m]

        waves: list[list[str]] = []
        for m in methods:
            d = of(m)
            waves += [[] for _ in range(d + 1 - len(waves))]
            waves[d].append(m)
        return waves

    def parent_model(self, method: str) -> Path | None:
        """The ``model.pt`` that ``method`` is fine-tuned from (None: trained from scratch).

        ``{campaign, method}`` resolves under this config's ``results`` root; a path is kept as
        written (relative paths are relative to the working folder, like ``results``).
        """
        mcfg = self.methods.get(method)
        parent = getattr(mcfg, "init_from", None)
        if parent is None:
            return None
        if isinstance(parent, InitFromCampaign):
            campaign = parent.campaign or self.campaign
            return CampaignPaths(Path(self.results) / campaign).model(parent.method)
        return Path(parent)

    def _check_synthetic(self, target: SyntheticConfig) -> None:
        for axis, n in (("nx", target.nx), ("ny", target.ny)):
            if n % self.scale and self.domain is None:
                raise ValueError(f"data.target.{axis}={n} is not a multiple of scale={self.scale}")
        unknown = [v.name for v in self.variables if (v.source_name or v.name) not in TOY_VARIABLES]
        if unknown:
            raise ValueError(
                f"variables {unknown} are not in the synthetic toy world; it provides "
                f"{', '.join(TOY_VARIABLES)}"
            )
        for name in self.methods.enabled():
            unet = self.methods.get(name)
            if isinstance(unet, EmulatorConfig) and unet.patch > min(target.nx, target.ny):
                raise ValueError(
                    f"methods.{name}.patch={unet.patch} is larger than the HR domain "
                    f"{target.ny}×{target.nx} (data.target.ny × nx)"
                )

    @property
    def campaign_dir(self) -> Path:
        """``<results>/<campaign>``: every output of this campaign lives below it."""
        return Path(self.results) / self.campaign

    @property
    def prepared_dir(self) -> Path:
        """The folder of the prepared data that train, infer and evaluate read (``prepared``)."""
        return Path(self.results) / (self.prepared.campaign or self.campaign) / self.prepared.folder

    @property
    def reuses_data(self) -> bool:
        """Whether the prepared data come from another campaign (no ingest or preprocess here)."""
        return self.prepared.campaign not in (None, self.campaign)

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


def _models_in(ann: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Annotated, unions, dict values)."""
    if isinstance(ann, type) and issubclass(ann, RootModel):
        return _models_in(ann.model_fields["root"].annotation)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin is dict:
        return _models_in(args[1])
    return [m for a in args for m in _models_in(a)]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model at a validation-error location (discriminator tags and dict keys skipped)."""
    candidates: list[type[BaseModel]] = [CampaignConfig]
    for part in (str(p) for p in loc if not str(p).startswith("function-after")):
        tagged = [m for m in candidates if part in typing.get_args(_source_literal(m))]
        if len(candidates) > 1 and tagged:
            candidates = tagged
            continue
        owners = [
            (m, f) for m in candidates for n, f in m.model_fields.items() if part in (n, f.alias)
        ]
        if not owners:
            continue  # a dict key (e.g. a static field's name)
        nxt = _models_in(owners[0][1].annotation)
        if not nxt:
            break
        candidates = nxt
    return candidates[0]


def _source_literal(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("source") or model.model_fields.get("type")
    return field.annotation if field is not None else None


def _format_error(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        parts = [str(p) for p in e["loc"] if not str(p).startswith("function-after")]
        if parts[:1] == ["methods"] and len(parts) >= 3:
            del parts[2]  # the method's type tag (discriminator), not a config key
        loc = ".".join(parts)
        if e["type"] == "extra_forbidden":
            model = _model_at(e["loc"][:-1])
            allowed = [f.alias or n for n, f in model.model_fields.items()]
            lines.append(
                f"config key {loc!r} is not known{_suggest(str(e['loc'][-1]), allowed)}; "
                f"allowed here: {', '.join(allowed)}"
            )
        else:
            value = e.get("input")
            shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
            lines.append(f"config key {loc or '<top>'!r} = {shown}: {e['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


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
        try:
            with p.open() as fh:
                loaded = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        raw = deep_merge(raw, loaded)
    return validate_config(raw)


# Which top-level keys each stage reads. A stage's outputs depend on exactly these, so Snakemake
# reruns a stage (and what follows) only when its slice changes.
_STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "ingest": ("campaign", "results", "seed", "scale", "variables", "data", "domain"),
    "preprocess": (
        "campaign",
        "results",
        "seed",
        "scale",
        "variables",
        "data",
        "domain",
        "split",
        "preprocess",
    ),
    "train": (
        "campaign",
        "results",
        "seed",
        "scale",
        "variables",
        "data",
        "domain",
        "split",
        "prepared",
    ),
    "infer": (
        "campaign",
        "results",
        "seed",
        "scale",
        "variables",
        "data",
        "domain",
        "split",
        "infer",
        "prepared",
    ),
    # data: the target source decides which variables are valid (validators need it)
    "export": ("campaign", "results", "variables", "data", "export"),
    "evaluate": (
        "campaign",
        "results",
        "seed",
        "scale",
        "variables",
        "data",
        "domain",
        "split",
        "evaluate",
        "prepared",
    ),
    "manifest": tuple(CampaignConfig.model_fields),
    # compare shows the whole campaign config in the report, so it reads every key
    "compare": tuple(CampaignConfig.model_fields),
    "sweep": ("campaign", "results", "variables", "data", "methods"),
    "lineage": ("campaign", "results", "variables", "data", "methods"),
}


def stage_slice(cfg: CampaignConfig, stage: str, method: str | None = None) -> dict[str, Any]:
    """The part of the config that ``stage`` (for ``method``) depends on, as plain JSON data."""
    if stage not in _STAGE_KEYS:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(_STAGE_KEYS)}")
    full = cfg.model_dump(mode="json", by_alias=True)
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


def json_schema() -> dict[str, Any]:
    """The JSON schema of the config, generated from the models."""
    return CampaignConfig.model_json_schema()
