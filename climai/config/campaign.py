"""The campaign: every section together (:class:`CampaignConfig`), the named methods it runs
(:class:`MethodsConfig`, typed by the method registry, plugins included) and the checks that
need more than one section."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    PrivateAttr,
    RootModel,
    SerializeAsAny,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from climai.config.base import ConfigError, StrictModel, error_lines, suggest
from climai.config.compute import ComputeConfig
from climai.config.grid import DomainConfig, PreparedConfig, PreprocessConfig, SplitConfig
from climai.config.methods import EmulatorConfig, UNetConfig, parent_in
from climai.config.sources import TOY_VARIABLES, DataConfig, SyntheticConfig, VariableConfig
from climai.config.stages import EvaluateConfig, ExportConfig, InferConfig
from climai.config.sweeps import expand_sweeps
from climai.registry import BUILTIN_METHOD_TYPES, METHOD_TYPES, method_type

# A method in the config is a named instance of a type: ``methods: {<name>: {type: <type>, ...}}``;
# ``type`` defaults to the name. climai's own types are validated by their model in the union
# below, a plugin's by its own model (MethodsConfig._typed).
METHOD_CONFIGS: dict[str, type[BaseModel]] = {
    name: t.config for name, t in BUILTIN_METHOD_TYPES.items()
}
"""climai's own method types by name → their config model."""
DEFAULT_METHODS = tuple(name for name, t in BUILTIN_METHOD_TYPES.items() if t.default)
"""The methods of every campaign unless set to null: ``methods.<name>: null``."""


def _method_tag(value: Any) -> str:
    get = value.get if isinstance(value, dict) else lambda k, d: getattr(value, k, d)
    tag = str(get("type", ""))
    return tag if tag in METHOD_CONFIGS or not isinstance(value, BaseModel) else "plugin"


def _method_plugins() -> list[str]:
    """Method types of installed plugins (entry-point group ``climai.methods``), not loaded."""
    return sorted(METHOD_TYPES.plugin_entry_points())  # warns of one named like a built-in


def _plugin_method_config(name: str, kind: str, spec: dict[str, Any]) -> BaseModel:
    """``methods.<name>`` validated by the config model of the plugin type ``kind``."""
    model = method_type(kind).config
    try:
        return model.model_validate({**spec, "type": kind})
    except ValidationError as err:
        raise ValueError("\n".join(error_lines(err, model, ("methods", name)))) from None


MethodConfig = Annotated[
    typing.Union[  # noqa: UP007
        tuple(
            [
                *(Annotated[m, Tag(t)] for t, m in METHOD_CONFIGS.items()),
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
        default_factory=lambda: {m: METHOD_CONFIGS[m]() for m in DEFAULT_METHODS}
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
            if kind != name and (name in METHOD_CONFIGS or name in _method_plugins()):
                # the reports find a type's method by its name (bicubic: the reference of every
                # ratio), so that name cannot hold another type
                raise ValueError(
                    f"'methods.{name}.type' = {kind!r}: {name!r} is the name of a method type, "
                    f"so a method called {name!r} must be of that type; give this {kind} "
                    f"method another name (e.g. '{name}-{kind}')"
                )
            if kind not in METHOD_CONFIGS and kind in _method_plugins():
                out[name] = _plugin_method_config(name, kind, spec)
                continue
            if kind not in METHOD_CONFIGS:
                types = ", ".join([*METHOD_CONFIGS, *_method_plugins()])
                what = (
                    f"'methods.{name}.type' = {kind!r}"
                    if "type" in spec
                    else (f"'methods.{name}' is not known{suggest(name, list(METHOD_CONFIGS))}")
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

    def of_kind(self, kind: str) -> list[str]:
        """Configured methods whose type is of ``kind`` (``emulator`` or ``baseline``; the
        registry's, plugins included)."""
        return [m for m in self.enabled() if method_type(self.type_of(m)).kind == kind]

    def ensembles(self) -> list[str]:
        """Configured methods that predict an ensemble (a ``members`` setting above 1)."""
        return [m for m in self.enabled() if getattr(self.get(m), "members", 1) > 1]


_METHOD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_PATH_BREAKING = re.compile(r"[^\w/.+@:~,\- ]|\s(?<! )")
"""A character of a ``results`` path that breaks Snakemake (wildcards, globs) or a shell line."""


class CampaignConfig(StrictModel):
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
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
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
        if not v.strip():
            raise ValueError("results folder must not be empty (default: results)")
        bad = sorted(set(_PATH_BREAKING.findall(v)))
        if bad:
            raise ValueError(
                f"results folder {v!r} must be a plain path without {bad} (Snakemake reads "
                "{ } as wildcards, * ? [ ] as globs); allowed: letters, digits, spaces and "
                "/ . _ - + @ : ~ ,"
            )
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
            other = [v.name for v in self.variables if v.kind != "precipitation"]
            if unet.calibrate_by in ("intensity", "roughness") and other:
                raise ValueError(
                    f"methods.{name}.calibrate_by={unet.calibrate_by} spreads members by the "
                    "rain rate: every variable must be of kind precipitation, not "
                    f"{other} (use inflation)"
                )
            if unet.calibrate_by == "roughness" and unet.patch < 3 * self.scale:
                raise ValueError(
                    f"methods.{name}.patch={unet.patch}: calibrate_by=roughness needs patches of "
                    f"at least 3 LR cells a side, i.e. patch >= {3 * self.scale} at scale "
                    f"{self.scale}"
                )
            if unet.calibrate and not method_type(unet.type).stochastic:
                raise ValueError(
                    f"methods.{name}.calibrate=true: only an ensemble's spread is calibrated; "
                    f"method type {unet.type!r} draws one field and injects no noise (set it "
                    "to false, or use type unet-crps)"
                )
            if unet.calibrate and getattr(unet, "members", 1) < 2:
                raise ValueError(
                    f"methods.{name}.calibrate=true needs members >= 2 (methods.{name}.members="
                    f"{getattr(unet, 'members', 1)}): one member has no spread to calibrate "
                    "(its spread/skill ratio is NaN)"
                )
            if unet.departure_blur and not method_type(unet.type).stochastic:
                raise ValueError(
                    f"methods.{name}.departure_blur={unet.departure_blur}: only an ensemble's "
                    f"members have departures to smooth; method type {unet.type!r} draws one "
                    "field (set it to 0)"
                )
            if unet.init_from is not None and method_type(unet.type).layout is None:
                raise ValueError(
                    f"methods.{name}.init_from: method type {unet.type!r} cannot be fine-tuned: "
                    "it declares no weight layout (MethodType.layout, docs/add-an-emulator.md)"
                )
            if not isinstance(unet, UNetConfig):
                continue
            levels = unet.size_multiple
            if unet.patch % levels:
                raise ValueError(
                    f"methods.{name}.patch={unet.patch} must be a multiple of {levels} for "
                    f"{len(unet.channels)} U-Net levels (methods.{name}.channels)"
                )
            if self.infer.tile % levels:
                raise ValueError(
                    f"infer.tile={self.infer.tile} must be a multiple of {levels} for the "
                    f"{len(unet.channels)} U-Net levels of methods.{name} (its channels), "
                    "which infer tiles the domain for"
                )
            self._check_parent(name, whole=not (info.context or {}).get("stage_slice"))
        return self

    def _check_parent(self, name: str, whole: bool) -> None:
        """A parent in this same campaign must be another configured, trained method whose
        type has a weight layout (registry ``layout``: its weights can start another), checked
        on a ``whole`` config (a stage slice holds only the method itself)."""
        parent = parent_in(self.methods.get(name), self.campaign)
        if parent is None:
            return
        if parent == name:
            raise ValueError(f"methods.{name}.init_from names the method itself")
        if not whole:
            return
        enabled = self.methods.enabled()
        tunable = [m for m in enabled if method_type(self.methods.type_of(m)).layout is not None]
        if parent not in tunable:
            trained = [m for m in tunable if m != name]
            raise ValueError(
                f"methods.{name}.init_from.method={parent!r} is not a trained method of "
                f"campaign {self.campaign!r}; trained methods: {', '.join(trained) or 'none'} "
                f"(set methods.{name}: null too, or give it another parent)"
            )
        self._check_parent_layout(name, parent)

    def _check_parent_layout(self, name: str, parent: str) -> None:
        """The parent's weight layout (channels, noise, variable groups) is the method's, as train
        checks it on the parent's model card: known here, before the parent trains."""
        variables = [v.name for v in self.variables]

        def layout(method: str) -> dict[str, Any]:
            cfg = self.methods.get(method)
            joint = getattr(cfg, "joint", True)
            groups = {"all": variables} if joint else {v: [v] for v in variables}
            return method_type(self.methods.type_of(method)).layout_of(cfg, groups) or {}

        ours, theirs = layout(name), layout(parent)
        keys = {"groups": "joint"}  # the config key that decides the layout's groups
        found = [
            f"methods.{parent}.{keys.get(k, k)}={_shown(parent, self, keys.get(k, k))} but "
            f"methods.{name}.{keys.get(k, k)}={_shown(name, self, keys.get(k, k))}"
            for k, v in ours.items()
            if theirs.get(k) != v and not (k == "noise_channels" and not theirs.get(k))
        ]
        if found:
            raise ValueError(
                f"methods.{name}.init_from.method={parent!r}: the parent's weights do not fit "
                f"this method's network: {'; '.join(found)} (give both the same, or no init_from)"
            )

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
        self.check_patches(target.ny, target.nx, "data.target.ny × nx")
        if self.domain is None:  # else the headers' check cuts the grid first
            self.check_multiples(target.ny, target.nx, "data.target.ny × nx")

    def check_multiples(self, ny: int, nx: int, where: str) -> None:
        """Infer tiles an HR domain of ``ny`` × ``nx`` cells (``where`` says where that size
        comes from) for every U-Net only when both are multiples of its 2^(levels - 1); a
        ``ValueError`` names the method's channels."""
        for name in self.methods.enabled():
            unet = self.methods.get(name)
            if not isinstance(unet, UNetConfig):
                continue
            levels = unet.size_multiple
            if ny % levels or nx % levels:
                raise ValueError(
                    f"the HR domain {ny}×{nx} ({where}) is not a multiple of {levels} along "
                    f"both axes, as the {len(unet.channels)} U-Net levels of methods.{name} "
                    "(its channels) need at inference: cut it with domain, or use fewer levels"
                )

    def check_patches(self, ny: int, nx: int, where: str) -> None:
        """Every emulator's training patch fits the HR domain of ``ny`` × ``nx`` cells (``where``
        says where that size comes from); a ``ValueError`` names the method's key."""
        for name in self.methods.enabled():
            unet = self.methods.get(name)
            if isinstance(unet, EmulatorConfig) and unet.patch > min(nx, ny):
                raise ValueError(
                    f"methods.{name}.patch={unet.patch} is larger than the HR domain "
                    f"{ny}×{nx} ({where}): set a patch of at most {min(nx, ny)} cells"
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

    def torch_threads(self, method: str) -> int:
        """Torch CPU threads of ``method``'s train and infer: its own ``threads``, else
        ``compute.threads`` (never the scheduler's cores)."""
        return int(getattr(self.methods.get(method), "threads", 0) or self.compute.threads)

    @property
    def variable_names(self) -> list[str]:
        return [v.name for v in self.variables]


def _shown(method: str, cfg: CampaignConfig, key: str) -> Any:
    """``methods.<method>.<key>`` as the config holds it (for messages)."""
    value = getattr(cfg.methods.get(method), key, None)
    return list(value) if isinstance(value, tuple) else value
