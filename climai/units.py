"""Units through pint, with cf-xarray's CF/UDUNITS registry, and errors that name both units.

Any unit string that cf-xarray's pint registry reads (``K``, ``degC``, ``mm h-1``,
``kg m-2 s-1``, ``m s-1``, ``hPa``, ``W m-2``, ``%``, ...) converts to any other of the same
dimensionality. The :data:`WATER` context adds liquid water equivalence (density 1000 kg m-3), so a
water flux ``kg m-2 s-1`` is a rate ``mm s-1`` and an amount ``kg m-2`` is ``mm``. An accumulation
over each time step (``mm``, ``kg m-2``, ``m``) becomes a rate by dividing by the step length
(:func:`amount_to_rate`). Radar reflectivity ``dBZ`` is logarithmic: only a converter
(:mod:`climai.converters`) changes it.

The registry is built on first use (importing pint costs ~1 s), so modules that only import this
one pay nothing until they convert.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

WATER = "climai_water"  #: the pint context name of liquid water equivalence
WATER_DENSITY = "1000 kg m-3"
REFLECTIVITY = "dBZ"
#: Spellings pint does not read, mapped to ones it does (``lwe``: liquid water equivalent).
_ALIASES: dict[str, str] = {
    "degrees_kelvin": "K",
    "degree_celsius": "degC",
    "degrees_celsius": "degC",
    "degree celsius": "degC",
    "degrees celsius": "degC",
    "deg_c": "degC",
    "deg c": "degC",
    "degree_c": "degC",
    "degrees_c": "degC",
    "degreec": "degC",
    "degree c": "degC",
    "degrees c": "degC",
    "°c": "degC",
    "degree_f": "degF",
    "degrees_f": "degF",
    "degree_fahrenheit": "degF",
    "degrees_fahrenheit": "degF",
    "degree f": "degF",
    "degrees f": "degF",
    "°f": "degF",
    "m s-1 lwe": "m s-1",
    "m lwe": "m",
    "dbz": REFLECTIVITY,
}
#: Readable names of the dimensionalities climai meets (water fluxes count as length per time).
_DIMENSION_NAMES: dict[str, str] = {
    "[temperature]": "temperature",
    "[length]": "length",
    "[length] / [time]": "length per time",
    "[mass] / [length] / [time] ** 2": "pressure",
    "[mass] / [time] ** 3": "power per area",
    "[mass] / [time] ** 2": "energy per area",
    "[mass] / [length] ** 2": "mass per area",
    "[mass] / [length] ** 2 / [time]": "mass flux",
    "dimensionless": "dimensionless",
    "[time]": "time",
}
_WATER_PAIRS = (
    ("[mass] / [length] ** 2", "[length]"),
    ("[mass] / [length] ** 2 / [time]", "[length] / [time]"),
)
_SPAN = 1.0e6
_EXAMPLES = "K, degC, mm h-1, kg m-2 s-1, mm, kg m-2, m s-1, Pa, hPa, W m-2, 1, %, dBZ"


class UnitsError(ValueError):
    """Units that are unknown or cannot be converted; the message names the variable and units."""


@dataclass(frozen=True)
class Unit:
    """A unit as ``value_in_base = factor * value + offset`` in SI base units of its dimension."""

    dimension: str
    factor: float = 1.0
    offset: float = 0.0


@functools.cache
def registry() -> Any:
    """cf-xarray's pint registry with the :data:`WATER` context added (once)."""
    import pint

    # cf-xarray redefines a few of pint's units (%, year, C, degrees...) as it builds its
    # registry: 11 "WARNING pint.util: Redefining ..." lines in every ingest log and validate
    # output that say nothing about the data
    quiet, level = logging.getLogger("pint.util"), logging.getLogger("pint.util").level
    quiet.setLevel(logging.ERROR)
    try:
        from cf_xarray.units import units
    finally:
        quiet.setLevel(level)

    if WATER not in units._contexts:
        ctx = pint.Context(WATER)
        for mass, length in _WATER_PAIRS:
            ctx.add_transformation(mass, length, _over_density)
            ctx.add_transformation(length, mass, _times_density)
        units.add_context(ctx)
    return units


def _over_density(ureg: Any, value: Any, **_: Any) -> Any:
    """Mass per area (per time) → depth of liquid water (per time)."""
    return value / ureg.Quantity(WATER_DENSITY)


def _times_density(ureg: Any, value: Any, **_: Any) -> Any:
    """Depth of liquid water (per time) → mass per area (per time)."""
    return value * ureg.Quantity(WATER_DENSITY)


def normalise(units: str) -> str:
    """``units`` with whitespace collapsed and the spellings pint does not read mapped."""
    text = re.sub(r"\s+", " ", str(units).strip())
    return _ALIASES.get(text.lower(), text)


def _clean(x: float) -> float:
    """``x`` to 15 significant digits: drops the last-bit noise of chained conversions."""
    return float(f"{x:.15g}")


#: Plane-angle units: as a factor of a product ('degrees C' = degree × delta_degC) they hide a
#: misspelt unit and scale the values by π/180 (20 'degrees C' became 0.35 K).
_ANGLES = frozenset({"degree", "degrees", "radian", "arcminute", "arcsecond", "turn", "gradian"})


@functools.cache
def _parse(units: str) -> Any:
    """The pint unit of ``units`` (already normalised); ``None`` if pint cannot read it, or
    reads it as a product with a plane angle (a misspelling such as 'degrees C')."""
    if not units or units == REFLECTIVITY:
        return None
    ureg = registry()
    try:
        unit = ureg.Unit(units)
    except Exception:  # pint raises several error types (undefined, scaling factor, syntax)
        return None
    names = set(unit._units)
    return None if len(names) > 1 and names & _ANGLES else unit


def _dimension(unit: Any, water: bool = False) -> str:
    """The readable name of ``unit``'s dimensionality; with ``water``, mass per area is length."""
    dims = str(unit.dimensionality)
    for mass, length in _WATER_PAIRS if water else ():
        dims = length if dims == mass else dims
    return _DIMENSION_NAMES.get(dims, dims)


def _factor_offset(a: Any, b: Any, *contexts: str) -> tuple[float, float]:
    """``(factor, offset)`` from unit ``a`` to ``b``; the factor over a wide span, so an
    offset (degF → degC) costs it no digits."""
    ureg = registry()
    offset = ureg.Quantity(0.0, a).to(b, *contexts).magnitude
    factor = (ureg.Quantity(_SPAN, a).to(b, *contexts).magnitude - offset) / _SPAN
    return _clean(factor), _clean(offset)


def _unit(units: str, variable: str, where: str) -> Any:
    key = normalise(units)
    parsed = _parse(key)
    if parsed is None and key != REFLECTIVITY:
        raise UnitsError(
            f"variable {variable!r}{where}: unknown units {units!r}; known units are CF/UDUNITS "
            f"strings such as {_EXAMPLES}"
        )
    return parsed


def lookup(units: str, variable: str, where: str = "") -> Unit:
    """The :class:`Unit` of ``units``; :class:`UnitsError` naming the variable if it is unknown."""
    parsed = _unit(units, variable, where)
    if parsed is None:
        return Unit("reflectivity")
    base = registry().Quantity(1.0, parsed).to_base_units().units
    return Unit(_dimension(parsed), *_factor_offset(parsed, base))


def is_amount(units: str) -> bool:
    """Whether ``units`` can be an accumulation over a time step (a length, or mass per area)."""
    parsed = _parse(normalise(units))
    return parsed is not None and _dimension(parsed, water=True) == "length"


def is_rate(units: str) -> bool:
    """Whether ``units`` are a rate that an accumulation can become (length or water per time)."""
    parsed = _parse(normalise(units))
    return parsed is not None and _dimension(parsed, water=True) == "length per time"


def affine(src: str, dst: str, variable: str, where: str = "") -> tuple[float, float]:
    """``(factor, offset)`` with ``value_in_dst = factor * value_in_src + offset``.

    Raises :class:`UnitsError` naming the variable and both units when they do not convert (in
    the :data:`WATER` context).
    """
    a = _unit(src, variable, where)
    b = _unit(dst, variable, " (config 'variables')")
    if a is None or b is None:
        if a is None and b is None:
            return 1.0, 0.0
        raise UnitsError(
            f"variable {variable!r}{where}: cannot convert {src!r} "
            f"({'reflectivity' if a is None else _dimension(a)}) to {dst!r} "
            f"({'reflectivity' if b is None else _dimension(b)}); only a converter changes dBZ"
        )
    import pint

    try:
        return _factor_offset(a, b, WATER)
    except pint.DimensionalityError:
        raise UnitsError(
            f"variable {variable!r}{where}: cannot convert {src!r} ({_dimension(a)}) "
            f"to {dst!r} ({_dimension(b)})"
        ) from None


def amount_to_rate(
    da: xr.DataArray, step_seconds: xr.DataArray | float, variable: str
) -> xr.DataArray:
    """An accumulation per step (mm, kg m-2, m) → a rate in mm s-1, dividing by each step's length."""
    factor, _ = affine(str(da.attrs.get("units", "")), "mm", variable)
    out = da * factor / step_seconds
    return out.assign_attrs({**da.attrs, "units": "mm s-1"})


def convert(da: xr.DataArray, to: str, variable: str, where: str = "") -> xr.DataArray:
    """``da`` (with ``units`` in its attrs) in the units ``to``; lazy for dask arrays.

    Raises :class:`UnitsError` naming the variable and both units when the dimensions differ.
    """
    if "units" not in da.attrs:
        raise UnitsError(
            f"variable {variable!r}{where} has no 'units' attribute; expected units "
            f"convertible to {to!r}"
        )
    factor, offset = affine(str(da.attrs["units"]), to, variable, where)
    if (factor, offset) == (1.0, 0.0):
        return da.assign_attrs(units=to)
    out = da * factor + offset if offset else da * factor
    return out.astype(np.float32).assign_attrs({**da.attrs, "units": to})
