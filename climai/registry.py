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

import ast
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from climai.config.methods import (
    BicubicConfig,
    EmulatorConfig,
    NearestConfig,
    QDMConfig,
    QuantileMappingConfig,
    UNetConfig,
    UNetCRPSConfig,
)
from climai.plugins import PluginError, Registry, unbindable

MethodKind = Literal["emulator", "baseline"]


@dataclass(frozen=True)
class MethodType:
    """A method type: its kind, its config model and how it runs.

    ``config``: a pydantic model of the method's keys under ``methods.<name>``; for an emulator a
    subclass of :class:`climai.config.EmulatorConfig` (the training loop's keys come with it).

    Emulators (trained by climai's loop: masked loss or fair CRPS, EMA, early stopping,
    checkpoints, DDP; run tile by tile):

    - ``build(cfg, in_channels, out_channels) -> torch.nn.Module``, or ``"module:function"``: the
      network, called as ``net(x, base)`` with ``x`` the ``(B, in_channels, H, W)`` normalised
      inputs and ``base`` the ``(B, out_channels, H, W)`` normalised bicubic field; it returns the
      normalised prediction (residual models return ``base + correction``). It may have an int
      attribute ``multiple`` (input sizes must be multiples of it, default 1).
    - ``stochastic``: the network draws noise (``net.sample(x, base, members)``); it is trained
      with the fair CRPS over ``cfg.train_members`` draws and infers ``cfg.members`` members
      (its config must have both keys).
    - ``layout(cfg, groups) -> dict`` (or ``"module:function"``): the facts that decide the
      shapes and names of its weights, recorded in the model card; a type with a layout can be
      fine-tuned from a parent with the same one (``init_from``). Freezing by level
      (``freeze``) is the U-Nets' own key.

    Baselines (no training):

    - ``predict(prep, cfg, method) -> baseline`` (or ``"module:function"``): the baseline fitted
      from the prepared dataset (streamed: never a whole split in memory), a function of
      ``(T, V, h, w)`` LR fields → ``(T, V, H, W)`` HR fields that the inference engine applies
      by time blocks (and bands, given its ``margin``), with optional ``extra`` variables for
      the output store (see :mod:`climai.inference.baselines`);
    - ``upsample``: how the LR field is interpolated (``bicubic`` or ``nearest``).
    - ``whole_series``: the baseline needs the whole predicted series at once (per-cell ranks:
      qdm), so its infer is never split into time-block jobs (every other method's is, when too
      long for a partition: climai/sizing.py).

    ``default``: a method of this type, named after it, runs in every campaign unless set to
    null (climai's own types only).
    """

    kind: MethodKind
    config: type[Any]
    build: Callable[..., Any] | str | None = None
    description: str = ""
    upsample: str | None = None
    default: bool = False
    stochastic: bool = False
    layout: Callable[..., dict[str, Any]] | str | None = None
    predict: Callable[..., Any] | str | None = None
    whole_series: bool = False

    def builder(self) -> Callable[..., Any]:
        """The ``build`` function, imported on first use when given as ``"module:function"``."""
        return _function(self.build, "build")

    def layout_of(self, cfg: Any, groups: dict[str, list[str]]) -> dict[str, Any] | None:
        """The weight layout of a network of this type (None: the type has none, so it cannot
        be fine-tuned)."""
        return None if self.layout is None else _function(self.layout, "layout")(cfg, groups)

    def predictor(self) -> Callable[..., Any]:
        """A baseline's ``predict`` function."""
        return _function(self.predict, "predict")


def _function(spec: Callable[..., Any] | str | None, what: str) -> Callable[..., Any]:
    """``spec`` itself when callable, else the function named ``"module:function"``, imported now."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise TypeError(f"{what} must be a function or 'module:function', got {spec!r}")
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as err:  # a plugin's own module: name what it declared
        raise PluginError(
            f"method type's {what} function {spec!r} cannot be imported: "
            f"{type(err).__name__}: {err}"
        ) from err


def _check_declared(spec: Callable[..., Any] | str, what: str, params: tuple[str, ...]) -> None:
    """``TypeError`` unless the function ``spec`` exists and takes ``params`` positionally;
    a ``"module:function"`` is checked in its module's source, which is not run (the Snakefile
    checks plugins at parse time and must not import torch): a missing module or function, or a
    ``def`` with another number of parameters, is named when the config is read, not mid-run."""
    wanted = f"{what}({', '.join(params)})"
    if callable(spec):
        if (found := unbindable(spec, len(params))) is not None:
            raise TypeError(f"{what} {spec!r} must be {wanted}, not {what}{found}")
        return
    module, _, attr = spec.partition(":")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as err:
        raise TypeError(f"{what} {spec!r}: module {module!r} cannot be found ({err})") from None
    if found is None:
        raise TypeError(f"{what} {spec!r}: no module {module!r} is installed")
    if not (found.origin and found.origin.endswith(".py")):
        return  # compiled or namespace: checked when imported
    tree = ast.parse(Path(found.origin).read_text(encoding="utf-8"), found.origin)
    defs: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defs.update({t.id: node for t in targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.Import | ast.ImportFrom):
            defs.update({(a.asname or a.name).split(".")[0]: node for a in node.names})
        elif not isinstance(node, ast.Expr):  # if/try blocks: names too dynamic to list
            return
    if attr not in defs:
        raise TypeError(f"{what} {spec!r}: {found.origin} defines no {attr!r}")
    node = defs[attr]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        a = node.args
        positional = len(a.posonlyargs) + len(a.args)
        required = positional - len(a.defaults)
        if not (required <= len(params) and (positional >= len(params) or a.vararg)):
            names = ", ".join(x.arg for x in [*a.posonlyargs, *a.args])
            raise TypeError(
                f"{what} {spec!r} must be {wanted}; {found.origin} line {node.lineno} "
                f"defines {attr}({names})"
            )


def build_network(type_name: str, cfg: Any, in_channels: int, out_channels: int) -> Any:
    """The network of the emulator type ``type_name``: its ``build(cfg, in_channels,
    out_channels)``, any failure to find or call it named with the type (a plugin's)."""
    mtype = method_type(type_name)
    try:
        build = mtype.builder()
        _check_declared(build, "build", ("cfg", "in_channels", "out_channels"))
    except (PluginError, TypeError) as err:
        raise PluginError(f"method type {type_name!r}: {err}") from err
    return build(cfg, in_channels, out_channels)


def _named(*types: MethodType) -> dict[str, MethodType]:
    """climai's own types by name: the ``type`` of each one's config model, where the name is
    written once (the config's schema needs it there)."""
    return {t.config.model_fields["type"].default: t for t in types}


BUILTIN_METHOD_TYPES: dict[str, MethodType] = _named(
    MethodType(
        "baseline",
        BicubicConfig,
        upsample="bicubic",
        predict="climai.inference.baselines:interpolate",
        default=True,
        description="Bicubic interpolation of the LR field.",
    ),
    MethodType(
        "baseline",
        NearestConfig,
        upsample="nearest",
        predict="climai.inference.baselines:interpolate",
        default=True,
        description="Nearest-neighbour upsampling of the LR field.",
    ),
    MethodType(
        "baseline",
        QuantileMappingConfig,
        upsample="bicubic",
        predict="climai.inference.baselines:quantile_mapping",
        default=True,
        description="Bicubic interpolation, then empirical quantile mapping.",
    ),
    MethodType(
        "baseline",
        QDMConfig,
        upsample="bicubic",
        predict="climai.inference.qdm:predict",
        whole_series=True,
        description="Bicubic interpolation, then xsdba's quantile delta mapping per cell, by "
        "month or season.",
    ),
    MethodType(
        "emulator",
        UNetConfig,
        build="climai.models.unet:build_unet",
        layout="climai.models.layouts:weight_layout",
        default=True,
        description="Residual U-Net.",
    ),
    MethodType(
        "emulator",
        UNetCRPSConfig,
        build="climai.models.unet:build_unet",
        layout="climai.models.layouts:weight_layout",
        stochastic=True,
        description="Stochastic residual U-Net trained with the fair CRPS.",
    ),
)
"""climai's own method types by name: the one list of them (each config model's ``type`` key
spells its name too, as the schema needs; tests/unit/test_envs.py checks that the two agree)."""


def check_method_type(name: str, obj: object, builtin: bool = False) -> MethodType:
    """``obj`` if it is a complete method type, else ``TypeError`` saying what is missing.

    The same rules hold for climai's own types (a test checks them with ``builtin=True``) and
    for plugins; only climai's own may run by ``default``.
    """
    if not isinstance(obj, MethodType):
        raise TypeError(f"expected a climai.registry.MethodType, got {obj!r}")
    if not (isinstance(obj.config, type) and issubclass(obj.config, BaseModel)):
        raise TypeError(f"config must be a pydantic model class, got {obj.config!r}")
    if obj.kind == "emulator":
        if not issubclass(obj.config, EmulatorConfig):
            raise TypeError(
                f"the config of an emulator must subclass EmulatorConfig: {obj.config!r}"
            )
        if obj.build is None:
            raise TypeError("an emulator needs build(cfg, in_channels, out_channels)")
        missing = {"train_members", "members"} - set(obj.config.model_fields)
        if obj.stochastic and missing:
            raise TypeError(f"a stochastic emulator's config needs the keys {sorted(missing)}")
    elif obj.kind == "baseline":
        if obj.predict is None:
            raise TypeError("a baseline needs predict(prep, cfg, method)")
    else:
        raise TypeError(f"kind {obj.kind!r}: expected 'emulator' or 'baseline'")
    if obj.default and not builtin:
        raise TypeError("default is for climai's own method types")
    # the functions it names exist and take the arguments climai passes (found in their source)
    if obj.kind == "emulator":
        _check_declared(obj.build, "build", ("cfg", "in_channels", "out_channels"))  # type: ignore[arg-type]
        if obj.layout is not None:
            _check_declared(obj.layout, "layout", ("cfg", "groups"))
    else:
        _check_declared(obj.predict, "predict", ("prep", "cfg", "method"))  # type: ignore[arg-type]
    return obj


METHOD_TYPES: Registry[MethodType] = Registry("method", BUILTIN_METHOD_TYPES, check_method_type)
"""Every method type by name: climai's own, then plugins (entry-point group ``climai.methods``)."""


def method_type(name: str) -> MethodType:
    """The method type ``name`` (plugins included); an unknown name lists the valid ones."""
    return METHOD_TYPES.get(name)


def method_kind(name: str) -> MethodKind:
    """``"emulator"`` or ``"baseline"`` for a method type (plugins included)."""
    return method_type(name).kind
