"""Named converters that derive a variable from another (e.g. radar reflectivity → rain rate).

A converter is a pure, lazy function ``(DataArray, **params) → DataArray`` that checks the units
of its input and sets the units of its output. climai's own are registered with :func:`register`;
a package adds one through an entry point in the group ``climai.converters``
(``docs/add-a-variable.md``). Config names it under ``variables[].converter`` with its ``params``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import xarray as xr

from climai.config import CampaignConfig, ConfigError
from climai.plugins import Registry
from climai.units import UnitsError, normalise

Converter = Callable[..., xr.DataArray]


def _check_converter(name: str, obj: object) -> Converter:
    if not callable(obj):
        raise TypeError(f"expected a function (DataArray, **params) -> DataArray, got {obj!r}")
    return obj  # type: ignore[return-value]


_BUILTIN: dict[str, Converter] = {}
CONVERTERS: Registry[Converter] = Registry("converter", _BUILTIN, _check_converter)


def register(name: str) -> Callable[[Converter], Converter]:
    """Decorator: make a converter available under ``name``."""

    def deco(fn: Converter) -> Converter:
        _BUILTIN[name] = fn
        return fn

    return deco


def get_converter(name: str) -> Converter:
    """The converter called ``name`` (plugins included); the error lists the valid ones."""
    return CONVERTERS.get(name)


def checked_converter(name: str, params: dict[str, float]) -> Converter:
    """The converter ``name`` after checking that it takes every one of ``params`` (the config
    checks it when read: an unknown name or parameter is named before any job)."""
    fn = get_converter(name)
    allowed = [p for p in inspect.signature(fn).parameters if p != "da"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"converter {name!r} has no parameter(s) {unknown}; parameters: {', '.join(allowed)}"
        )
    return fn


def check_converters(cfg: CampaignConfig) -> None:
    """Every ``variables[i].converter`` names a known converter and only its parameters (before
    any job: the workflow and ``climai validate`` call it); a ``ConfigError`` names the key."""
    for i, var in enumerate(cfg.variables):
        if var.converter is not None:
            try:
                checked_converter(var.converter.name, var.converter.params)
            except ValueError as err:
                raise ConfigError(
                    f"config key 'variables.{i}.converter' ({var.name}): {err}"
                ) from None


def apply_converter(
    da: xr.DataArray, name: str, params: dict[str, float], variable: str
) -> xr.DataArray:
    """Apply converter ``name`` with ``params`` to ``da``; unknown parameters are named."""
    try:
        fn = checked_converter(name, params)
    except ValueError as err:
        raise ValueError(f"variable {variable!r}: {err}") from None
    out = fn(da, **params)
    return out.assign_attrs(converter=name, converter_params=str(dict(sorted(params.items()))))


@register("dbz_to_rain_rate")
def dbz_to_rain_rate(
    da: xr.DataArray, a: float = 200.0, b: float = 1.6, no_echo_dbz: float = -32.0
) -> xr.DataArray:
    """Radar reflectivity (dBZ) → rain rate (mm h-1) with the Z–R relation Z = a·R^b.

    Z = 10^(dBZ/10) in mm⁶ m⁻³, so R = (Z / a)^(1/b). Values at or below ``no_echo_dbz`` mean no
    echo: 0 mm h-1. NaN (no data) stays NaN. Defaults are Marshall–Palmer (a = 200, b = 1.6);
    FMI uses a = 223, b = 1.53.

    >>> r = dbz_to_rain_rate(xr.DataArray([-32.0, 10 * np.log10(223.0)], attrs={"units": "dBZ"}),
    ...                      a=223, b=1.53)
    >>> [round(float(v), 6) for v in r]
    [0.0, 1.0]
    """
    units = da.attrs.get("units")
    if units is None or normalise(str(units)) != "dBZ":
        raise UnitsError(
            f"converter 'dbz_to_rain_rate' needs reflectivity in 'dBZ'; variable "
            f"{str(da.name)!r} has units {units!r}"
        )
    if a <= 0 or b <= 0:
        raise ValueError(f"dbz_to_rain_rate: a and b must be positive, got a={a}, b={b}")
    z = 10.0 ** (da.astype(np.float64) / 10.0)
    rate = (z / a) ** (1.0 / b)
    rate = xr.where(da <= no_echo_dbz, 0.0, rate)
    rate = rate.where(da.notnull())
    return rate.astype(np.float32).assign_attrs(
        {
            "units": "mm h-1",
            "standard_name": "rainfall_rate",
            "long_name": f"rain rate from reflectivity, Z = {a:g}·R^{b:g}",
        }
    )
