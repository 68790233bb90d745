"""Campaign configuration: typed models, validation with errors for people, stage slices.

The pydantic models are the single source of truth for the config: they validate
``config/config.yaml`` (and any ``--configfile``), and they generate
``workflow/schemas/config.schema.json`` and ``config/README.md`` (tests keep them in step).
One module per concern:

- :mod:`~climai.config.base`: the strict base model, :class:`ConfigError`, error wording;
- :mod:`~climai.config.sources`: ``variables`` and ``data`` (sources, static fields);
- :mod:`~climai.config.grid`: ``domain``, ``split``, ``preprocess``, ``prepared``;
- :mod:`~climai.config.methods`: the config models of climai's own method types;
- :mod:`~climai.config.sweeps`: ``methods.<name>.sweep`` expansion;
- :mod:`~climai.config.stages`: ``infer``, ``export``, ``evaluate``;
- :mod:`~climai.config.compute`: ``compute`` (threads and determinism of train and infer);
- :mod:`~climai.config.campaign`: ``methods`` and the whole campaign with its cross-checks;
- :mod:`~climai.config.loading`: YAML files, merging, validation, the JSON schema;
- :mod:`~climai.config.rules`: the campaign's own rule files, confined to the working folder;
- :mod:`~climai.config.slices`: the slice of the config each stage reads, and its hash;
- :mod:`~climai.config.docs`: ``config/README.md`` generated from the models.

Every public name is importable from ``climai.config``, loaded from its module on first use, so
that a module (e.g. :mod:`climai.config.methods`, which :mod:`climai.registry` imports) can be
imported without the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climai.config.base import (
        ConfigError,
        StrictModel,
        format_error,
        suggest,
    )
    from climai.config.campaign import (
        DEFAULT_METHODS,
        METHOD_CONFIGS,
        CampaignConfig,
        MethodConfig,
        MethodsConfig,
    )
    from climai.config.compute import ComputeConfig
    from climai.config.grid import (
        DistributedConfig,
        DomainConfig,
        PreparedConfig,
        PreprocessConfig,
        SplitBound,
        SplitConfig,
    )
    from climai.config.loading import (
        deep_merge,
        json_schema,
        load_config,
        validate_config,
    )
    from climai.config.methods import (
        BicubicConfig,
        EmulatorConfig,
        FreezeGroup,
        InitFromCampaign,
        NearestConfig,
        QDMConfig,
        QuantileMappingConfig,
        UNetConfig,
        UNetCRPSConfig,
        parent_in,
    )
    from climai.config.rules import rule_files
    from climai.config.slices import (
        STAGE_KEYS,
        canonical_json,
        config_sha256,
        from_stage_json,
        stage_slice,
    )
    from climai.config.sources import (
        BUILTIN_SOURCES,
        TOY_VARIABLES,
        ConverterConfig,
        DataConfig,
        DerivedStatic,
        FileSource,
        GribSource,
        InputSource,
        NetCDFSource,
        PluginSource,
        StaticSource,
        SyntheticConfig,
        TargetSource,
        VariableConfig,
        VariableKind,
        ZarrSource,
    )
    from climai.config.stages import (
        EvaluateConfig,
        ExportConfig,
        InferConfig,
    )
    from climai.config.sweeps import (
        expand_sweeps,
    )

_MODULES: dict[str, str] = {
    "ConfigError": "base",
    "StrictModel": "base",
    "suggest": "base",
    "format_error": "base",
    "VariableKind": "sources",
    "TOY_VARIABLES": "sources",
    "BUILTIN_SOURCES": "sources",
    "ConverterConfig": "sources",
    "VariableConfig": "sources",
    "SyntheticConfig": "sources",
    "NetCDFSource": "sources",
    "ZarrSource": "sources",
    "GribSource": "sources",
    "PluginSource": "sources",
    "DerivedStatic": "sources",
    "FileSource": "sources",
    "TargetSource": "sources",
    "StaticSource": "sources",
    "InputSource": "sources",
    "DataConfig": "sources",
    "ComputeConfig": "compute",
    "DomainConfig": "grid",
    "SplitBound": "grid",
    "SplitConfig": "grid",
    "DistributedConfig": "grid",
    "PreprocessConfig": "grid",
    "PreparedConfig": "grid",
    "BicubicConfig": "methods",
    "NearestConfig": "methods",
    "QDMConfig": "methods",
    "QuantileMappingConfig": "methods",
    "FreezeGroup": "methods",
    "InitFromCampaign": "methods",
    "EmulatorConfig": "methods",
    "UNetConfig": "methods",
    "UNetCRPSConfig": "methods",
    "parent_in": "methods",
    "expand_sweeps": "sweeps",
    "InferConfig": "stages",
    "ExportConfig": "stages",
    "EvaluateConfig": "stages",
    "METHOD_CONFIGS": "campaign",
    "DEFAULT_METHODS": "campaign",
    "MethodConfig": "campaign",
    "MethodsConfig": "campaign",
    "CampaignConfig": "campaign",
    "validate_config": "loading",
    "deep_merge": "loading",
    "load_config": "loading",
    "json_schema": "loading",
    "rule_files": "rules",
    "STAGE_KEYS": "slices",
    "stage_slice": "slices",
    "canonical_json": "slices",
    "config_sha256": "slices",
    "from_stage_json": "slices",
}
"""Each public name → the module of ``climai.config`` that defines it."""

__all__ = [
    "BUILTIN_SOURCES",
    "DEFAULT_METHODS",
    "METHOD_CONFIGS",
    "STAGE_KEYS",
    "TOY_VARIABLES",
    "BicubicConfig",
    "CampaignConfig",
    "ComputeConfig",
    "ConfigError",
    "ConverterConfig",
    "DataConfig",
    "DerivedStatic",
    "DistributedConfig",
    "DomainConfig",
    "EmulatorConfig",
    "EvaluateConfig",
    "ExportConfig",
    "FileSource",
    "FreezeGroup",
    "GribSource",
    "InferConfig",
    "InitFromCampaign",
    "InputSource",
    "MethodConfig",
    "MethodsConfig",
    "NearestConfig",
    "NetCDFSource",
    "PluginSource",
    "PreparedConfig",
    "PreprocessConfig",
    "QDMConfig",
    "QuantileMappingConfig",
    "SplitBound",
    "SplitConfig",
    "StaticSource",
    "StrictModel",
    "SyntheticConfig",
    "TargetSource",
    "UNetCRPSConfig",
    "UNetConfig",
    "VariableConfig",
    "VariableKind",
    "ZarrSource",
    "canonical_json",
    "config_sha256",
    "deep_merge",
    "expand_sweeps",
    "format_error",
    "from_stage_json",
    "json_schema",
    "load_config",
    "parent_in",
    "rule_files",
    "stage_slice",
    "suggest",
    "validate_config",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
