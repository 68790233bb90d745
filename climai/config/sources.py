"""Where the data come from: the variables, their sources (synthetic, files, reader plugins) and
the static fields (config keys ``variables`` and ``data``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from climai.config.base import StrictModel
from climai.plugins import plugin_names

VariableKind = Literal["precipitation", "temperature", "generic", "non-negative"]
TOY_VARIABLES = ("tas", "pr", "sfcWind")
"""The variables of the synthetic toy world (``sfcWind`` drawn only for campaigns that ask)."""


class ConverterConfig(StrictModel):
    """A named converter (climai/converters.py) that derives the variable from the source one."""

    name: str = Field(description="Registry name, e.g. dbz_to_rain_rate.")
    params: dict[str, float] = Field(
        default_factory=dict, description="Keyword parameters, e.g. {a: 223, b: 1.53}."
    )


class VariableConfig(StrictModel):
    """One downscaled variable."""

    name: str = Field(description="Name inside climai and in outputs (CMIP short name, e.g. tas).")
    source_name: str | None = Field(None, description="Name in the input files (default: name).")
    units: str = Field(description="Canonical units; inputs are converted to them.")
    kind: VariableKind = Field(
        "generic",
        description="precipitation | temperature | generic | non-negative: picks transform and "
        "constraint (non-negative: standardised like generic, never below 0, e.g. sfcWind, huss).",
    )
    converter: ConverterConfig | None = Field(
        None,
        description="Derive the variable from data.target's (HR) source variable with a named "
        "converter before unit conversion. data.input's (LR) variable is read as the variable "
        "itself, in units convertible to its units, never through the converter (a model's "
        "rain rate beside a radar's reflectivity).",
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


class SyntheticConfig(StrictModel):
    """The built-in toy world: a seeded, deterministic km-scale dataset (no files needed)."""

    source: Literal["synthetic"] = Field(
        "synthetic", description="The seeded toy world (no files)."
    )
    nx: int = Field(128, ge=16, description="HR cells along x.")
    ny: int = Field(128, ge=16, description="HR cells along y.")
    dx: float = Field(500.0, gt=0, description="HR grid spacing in metres.")
    steps: int = Field(480, ge=8, description="Hourly time steps.")
    start: str = Field("2020-06-01T00:00", description="First time step (UTC, ISO 8601).")

    @field_validator("start")
    @classmethod
    def _iso_time(cls, v: str) -> str:
        import datetime as dt

        try:
            dt.datetime.fromisoformat(v)
        except ValueError as err:
            raise ValueError(
                f"data.target.start {v!r} is not an ISO 8601 time ({err}), e.g. 2020-06-01T00:00"
            ) from None
        return v


class _FileSource(StrictModel):
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
    missing_value: float | list[float] | None = Field(
        None,
        description="Value(s) in the files that mean no data (e.g. -3 for MRMS); read as NaN.",
    )
    negative_tolerance: float = Field(
        0.0,
        ge=0,
        description="Precipitation (any non-negative kind) between -negative_tolerance and 0 (in "
        "the variable's units, "
        "after conversion) is read as 0: a model's rounding noise (e.g. 1e-6 mm h-1); anything "
        "more negative still stops ingest. 0: none is.",
    )


class NetCDFSource(_FileSource):
    """NetCDF files: one file, a glob or a list; a multi-file series is opened lazily with dask."""

    source: Literal["netcdf"] = Field(description="NetCDF files, read with xarray (netCDF4).")
    path: str | list[str] = Field(description="File, glob pattern, or list of files/globs.")


SECRET_KEY = re.compile(
    r"(key|secret|token|passw|credential|auth|signature|session|sas|private|cert)", re.IGNORECASE
)
"""Option names that hold secrets (fsspec/s3fs ``key``, ``secret``, ``token``, Azure
``account_key``, ``sas_token``, ...): never written in a config (docs/security.md)."""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def secret_keys(options: Any, prefix: str = "") -> list[str]:
    """The dotted names of the secret-looking keys in a (nested) options mapping."""
    if not isinstance(options, dict):
        return []
    out = []
    for name, value in options.items():
        dotted = f"{prefix}{name}"
        if SECRET_KEY.search(str(name)) and not isinstance(value, bool | None):
            out.append(dotted)
        out += secret_keys(value, f"{dotted}.")
    return out


class ZarrSource(_FileSource):
    """A zarr store: a local folder or an fsspec URL (s3://, gs://, https://...).

    Secrets (keys, tokens) never appear in the config, which travels on job command lines and
    into ``manifest.json``: they come from the environment (``storage_options_env``) or from a
    credentials file (``credentials_file``), read when the store is opened (docs/security.md).
    """

    source: Literal["zarr"] = Field(description="A zarr store, local or an fsspec URL.")
    path: str = Field(description="Store folder or fsspec URL.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options of a remote store without secrets (e.g. anon: true, "
        "endpoint_url); a secret-looking key (key, secret, token, ...) is refused: use "
        "storage_options_env or credentials_file.",
    )
    storage_options_env: dict[str, str] = Field(
        default_factory=dict,
        description="Secret fsspec options from environment variables, option → variable name, "
        "e.g. {key: AWS_ACCESS_KEY_ID, secret: AWS_SECRET_ACCESS_KEY}; read by the job, never "
        "stored or hashed (rotating a key reruns nothing).",
    )
    credentials_file: str | None = Field(
        None,
        description="YAML file of further fsspec options (secrets), read by the job; its path is "
        "recorded, never its contents (keep it outside results/, readable only by you).",
    )

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        found = secret_keys(v)
        if found:
            raise ValueError(
                f"storage_options holds secret-looking option(s) {found}: a secret in the config "
                "travels on job command lines and into manifest.json; give it as "
                f"storage_options_env: {{{found[0].split('.')[-1]}: ENV_VARIABLE}} or in a "
                "credentials_file"
            )
        return v

    @field_validator("storage_options_env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [name for name in v.values() if not _ENV_NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"storage_options_env values must be environment variable names "
                f"(letters, digits, '_'), got {bad}"
            )
        return v


class GribSource(_FileSource):
    """GRIB files through cfgrib/ecCodes: one field per source, selected by its GRIB keys."""

    source: Literal["grib"] = Field(description="GRIB files, read with cfgrib.")
    path: str | list[str] = Field(description="File, glob pattern, or list of files/globs.")
    filter_by_keys: dict[str, str | int] = Field(
        default_factory=dict,
        description="GRIB keys that select the field, e.g. {typeOfLevel: surface} or, for a "
        "local parameter, {discipline: 209, parameterCategory: 6, parameterNumber: 1}; a single "
        "selected field is renamed to the variable's source_name.",
    )
    units_override: str | None = Field(
        None,
        description="Units of the selected field where the file says 'unknown' (a local "
        "parameter), e.g. 'mm h-1' for MRMS PrecipRate.",
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
        plugins = plugin_names("reader")
        if v not in plugins:
            raise ValueError(
                f"unknown source {v!r}; valid sources: synthetic (target only), "
                f"{', '.join(BUILTIN_SOURCES)}, derived (static only), and the installed reader "
                f"plugins: {', '.join(plugins) or 'none'}"
            )
        return v


class DerivedStatic(StrictModel):
    """A static field computed on the HR grid itself (for campaigns without a DEM)."""

    source: Literal["derived"] = Field(description="A field derived from the HR grid itself.")
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


class DataConfig(StrictModel):
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


REDACTED = "<redacted>"
_OPTION_KEYS = ("storage_options", "options")
"""The options mappings of a data source (fsspec's, a reader plugin's), where secrets could be."""


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the values of secret-looking keys (``SECRET_KEY``) inside the options of
    every data source replaced by ``<redacted>``. Validation refuses such keys in
    ``storage_options`` (secrets come from the environment or a credentials file), so this
    guards plugin options and configs written by hand into a manifest."""

    def scrub(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            k: REDACTED
            if SECRET_KEY.search(str(k)) and not isinstance(v, dict | bool | None)
            else scrub(v)
            for k, v in value.items()
        }

    def source(spec: Any) -> Any:
        if not isinstance(spec, dict):
            return spec
        return {k: scrub(v) if k in _OPTION_KEYS else v for k, v in spec.items()}

    data = config.get("data")
    if not isinstance(data, dict):
        return config
    clean = {k: source(v) for k, v in data.items() if k != "static"}
    if isinstance(data.get("static"), dict):
        clean["static"] = {k: source(v) for k, v in data["static"].items()}
    return {**config, "data": {**data, **clean}}
