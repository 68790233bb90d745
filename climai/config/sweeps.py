"""Sweeps: ``methods.<name>.sweep`` expands one trained method into a method per combination of
settings, named ``<name>-<setting><value>...`` (before the methods are validated)."""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from climai.config.base import suggest
from climai.registry import METHOD_TYPES


def _swept_model(kind: str) -> type[BaseModel] | None:
    """The config model of a method type that sweeps (an emulator, plugins included; None for
    a baseline or an unknown type, whose error comes from the methods' own validation)."""
    if kind not in METHOD_TYPES:
        return None
    mtype = METHOD_TYPES[kind]
    return mtype.config if mtype.kind == "emulator" else None


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
    model = _swept_model(kind)
    if model is None:
        raise ValueError(
            f"'methods.{name}.sweep': only trained methods (emulators) sweep; {name!r} is of "
            f"type {kind!r}"
        )
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"'methods.{name}.sweep' must map settings to lists of values")
    allowed = [k for k in model.model_fields if k not in ("type", "sweep")]
    base = {k: v for k, v in spec.items() if k != "sweep"}
    for key, values in grid.items():
        if key not in allowed:
            raise ValueError(
                f"'methods.{name}.sweep.{key}' is not a setting of {kind}"
                f"{suggest(str(key), allowed)}; settings: {', '.join(allowed)}"
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
