"""What every config model shares: the strict base model, the error type and error wording.

A config error names the key, the value found and what is allowed; :func:`format_error` turns
pydantic's errors into such messages, with a did-you-mean for unknown keys.
"""

from __future__ import annotations

import difflib
import json
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, RootModel, ValidationError


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key, the value and what is allowed."""


class StrictModel(BaseModel):
    """A config section: unknown keys are errors and defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def suggest(key: str, allowed: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the allowed name closest to ``key``, else an empty string."""
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


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model at a validation-error location below ``root`` (discriminator tags and dict
    keys skipped)."""
    candidates: list[type[BaseModel]] = [root]
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


_NAMED = "Value error, config key "


def error_lines(
    err: ValidationError, root: type[BaseModel], prefix: tuple[str, ...] = ()
) -> list[str]:
    """One line per error of ``root``'s validation: the dotted key (under ``prefix``), the value
    and the problem (for an unknown key: a close match and the allowed keys there)."""
    lines = []
    for e in err.errors():
        parts = [str(p) for p in e["loc"] if not str(p).startswith("function-after")]
        if parts[:1] == ["methods"] and len(parts) >= 3:
            del parts[2]  # the method's type tag (discriminator), not a config key
        loc = ".".join([*prefix, *parts])
        if e["type"] == "extra_forbidden":
            model = _model_at(root, e["loc"][:-1])
            allowed = [f.alias or n for n, f in model.model_fields.items()]
            lines.append(
                f"config key {loc!r} is not known{suggest(str(e['loc'][-1]), allowed)}; "
                f"allowed here: {', '.join(allowed)}"
            )
        elif e["type"] == "value_error" and e["msg"].startswith(_NAMED):
            # a nested model's own lines (a plugin method's keys: MethodsConfig._typed)
            lines += e["msg"].removeprefix("Value error, ").splitlines()
        else:
            value = e.get("input")
            shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
            lines.append(f"config key {loc or '<top>'!r} = {shown}: {e['msg']}")
    return lines


def format_error(err: ValidationError, root: type[BaseModel]) -> str:
    """``invalid configuration:`` and one line per error of ``root``'s validation
    (:func:`error_lines`)."""
    lines = error_lines(err, root)
    return "invalid configuration:\n  " + "\n  ".join(lines)
