"""Method types by name, without importing torch (the Snakefile reads them at parse time).

Every method type, climai's own and a plugin's, is a :class:`MethodType`: its kind, its config
model (``methods.<name>``) and how it runs. climai's own are defined once, in
:data:`BUILTIN_METHOD_TYPES`; a package adds a type through an entry point in the group
``climai.methods`` that names a :class:`MethodType` (docs/add-an-emulator.md)::

    [project.entry-points."climai.methods"]
    myemu = "my_package.method:METHOD"

The module holding ``METHOD`` should import no torch either: ``build`` is then given as
``"module:function"`` and imported only when a model is built (train, infer).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from climai.config.methods import (
    BicubicConfig,
    EmulatorConfig,
    NearestConfig,
    QuantileMappingConfig,
    UNetConfig,
    UNetCRPSConfig,
)
from climai.plugins import Registry

MethodKind = Literal["emulator", "baseline"]


@dataclass(frozen=True)
class MethodType:
    """A method type: its config model, its kind and (emulators) how its network is built.

    ``config``: a pydantic model of the method's keys under ``methods.<name>``; for an emulator a
    subclass of :class:`climai.config.EmulatorConfig` (the training loop's keys come with it).
    ``build(cfg, in_channels, out_channels) -> torch.nn.Module``, or ``"module:function"``: the
    network, called as ``net(x, base)`` with ``x`` the ``(B, in_channels, H, W)`` normalised
    inputs and ``base`` the ``(B, out_channels, H, W)`` normalised bicubic field; it returns the
    normalised prediction (residual models return ``base + correction``). It may have an int
    attribute ``multiple`` (input sizes must be multiples of it, default 1). climai trains it with
    its own loop (masked MSE, EMA, early stopping, checkpoints, DDP) and runs it tile by tile.
    ``upsample`` (baselines): how the LR field is interpolated (``bicubic`` or ``nearest``)
    before any statistical correction. ``default``: a method of this type, named after it, runs
    in every campaign unless set to null (climai's own types only).
    """

    kind: MethodKind
    config: type[Any]
    build: Callable[..., Any] | str | None = None
    description: str = ""
    upsample: str | None = None
    default: bool = False

    def builder(self) -> Callable[..., Any]:
        """The ``build`` function, imported on first use when given as ``"module:function"``."""
        if callable(self.build):
            return self.build
        if not isinstance(self.build, str) or ":" not in self.build:
            raise TypeError(f"build must be a function or 'module:function', got {self.build!r}")
        module, _, attr = self.build.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


BUILTIN_METHOD_TYPES: dict[str, MethodType] = {
    "bicubic": MethodType(
        "baseline",
        BicubicConfig,
        upsample="bicubic",
        default=True,
        description="Bicubic interpolation of the LR field.",
    ),
    "nearest": MethodType(
        "baseline",
        NearestConfig,
        upsample="nearest",
        default=True,
        description="Nearest-neighbour upsampling of the LR field.",
    ),
    "quantile-mapping": MethodType(
        "baseline",
        QuantileMappingConfig,
        upsample="bicubic",
        default=True,
        description="Bicubic interpolation, then empirical quantile mapping.",
    ),
    "unet": MethodType(
        "emulator",
        UNetConfig,
        build="climai.models.unet:build_unet",
        default=True,
        description="Residual U-Net.",
    ),
    "unet-crps": MethodType(
        "emulator",
        UNetCRPSConfig,
        build="climai.models.unet:build_unet",
        description="Stochastic residual U-Net trained with the fair CRPS.",
    ),
}
"""climai's own method types by name: the one list of them (each config model's ``type`` key
spells its name too, as the schema needs; tests/unit/test_envs.py checks that the two agree)."""

EMULATORS: tuple[str, ...] = tuple(
    n for n, t in BUILTIN_METHOD_TYPES.items() if t.kind == "emulator"
)  # trained: train → infer
BASELINES: tuple[str, ...] = tuple(
    n for n, t in BUILTIN_METHOD_TYPES.items() if t.kind == "baseline"
)  # no training: infer only


def _check_method_type(name: str, obj: object) -> MethodType:
    if not isinstance(obj, MethodType):
        raise TypeError(f"expected a climai.registry.MethodType, got {obj!r}")
    if not (isinstance(obj.config, type) and issubclass(obj.config, BaseModel)):
        raise TypeError(f"config must be a pydantic model class, got {obj.config!r}")
    if obj.kind != "emulator":
        raise TypeError(f"kind {obj.kind!r}: plugins add emulators (kind 'emulator') for now")
    if not issubclass(obj.config, EmulatorConfig):
        raise TypeError(f"the config of an emulator must subclass EmulatorConfig: {obj.config!r}")
    if obj.build is None:
        raise TypeError("an emulator needs build(cfg, in_channels, out_channels)")
    if obj.default:
        raise TypeError("default is for climai's own method types")
    return obj


METHOD_TYPES: Registry[MethodType] = Registry("method", BUILTIN_METHOD_TYPES, _check_method_type)
"""Every method type by name: climai's own, then plugins (entry-point group ``climai.methods``)."""


def method_type(name: str) -> MethodType:
    """The method type ``name`` (plugins included); an unknown name lists the valid ones."""
    return METHOD_TYPES.get(name)


def method_kind(name: str) -> MethodKind:
    """``"emulator"`` or ``"baseline"`` for a method type (plugins included)."""
    return method_type(name).kind
