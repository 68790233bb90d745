"""Units: a small explicit table of what climai converts, and errors that name both units.

Every unit belongs to one *dimension* and is ``value_in_base = factor * value + offset``:

- ``temperature`` (base K): K, degC;
- ``precipitation_rate`` (base mm s-1 = kg m-2 s-1): mm h-1, mm s-1, mm d-1, kg m-2 s-1, m s-1;
- ``precipitation_amount`` (base mm = kg m-2): mm, kg m-2, m — an accumulation over a time
  step; it becomes a rate by dividing by the step length (:func:`amount_to_rate`);
- ``length`` (base m): m, km — but ``m`` alone is read as a length only for non-accumulations;
- ``fraction`` (base 1): 1, %, 0-1;
- ``reflectivity`` (dBZ): logarithmic, only a converter (:mod:`climai.converters`) changes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xarray as xr


class UnitsError(ValueError):
    """Units that are unknown or cannot be converted; the message names the variable and units."""


@dataclass(frozen=True)
class Unit:
    dimension: str
    factor: float = 1.0
    offset: float = 0.0


_TABLE: dict[str, Unit] = {
    "K": Unit("temperature"),
    "degC": Unit("temperature", 1.0, 273.15),
    "mm s-1": Unit("precipitation_rate"),
    "kg m-2 s-1": Unit("precipitation_rate"),
    "mm h-1": Unit("precipitation_rate", 1 / 3600),
    "kg m-2 h-1": Unit("precipitation_rate", 1 / 3600),
    "mm d-1": Unit("precipitation_rate", 1 / 86400),
    "kg m-2 d-1": Unit("precipitation_rate", 1 / 86400),
    "m s-1 lwe": Unit("precipitation_rate", 1000.0),
    "mm": Unit("precipitation_amount"),
    "kg m-2": Unit("precipitation_amount"),
    "m lwe": Unit("precipitation_amount", 1000.0),
    "m": Unit("length"),
    "km": Unit("length", 1000.0),
    "1": Unit("fraction"),
    "%": Unit("fraction", 0.01),
    "dBZ": Unit("reflectivity"),
}

_ALIASES: dict[str, str] = {
    "kelvin": "K",
    "degrees_kelvin": "K",
    "celsius": "degC",
    "degree_celsius": "degC",
    "degrees_celsius": "degC",
    "deg_c": "degC",
    "°c": "degC",
    "mm/h": "mm h-1",
    "mm/hr": "mm h-1",
    "mm hr-1": "mm h-1",
    "mm h^-1": "mm h-1",
    "mm.h-1": "mm h-1",
    "mm/s": "mm s-1",
    "mm/day": "mm d-1",
    "mm day-1": "mm d-1",
    "kg/m2/s": "kg m-2 s-1",
    "kg m**-2 s**-1": "kg m-2 s-1",
    "kg m^-2 s^-1": "kg m-2 s-1",
    "kg/m2": "kg m-2",
    "kg m**-2": "kg m-2",
    "kg m^-2": "kg m-2",
    "metre": "m",
    "meter": "m",
    "meters": "m",
    "metres": "m",
    "percent": "%",
    "dimensionless": "1",
    "dbz": "dBZ",
}


def normalise(units: str) -> str:
    """The table's spelling of ``units`` (whitespace collapsed, known aliases mapped)."""
    text = re.sub(r"\s+", " ", str(units).strip())
    if text in _TABLE:
        return text
    return _ALIASES.get(text.lower(), text)


def lookup(units: str, variable: str, where: str = "") -> Unit:
    """The :class:`Unit` of ``units``; :class:`UnitsError` naming the variable if it is unknown."""
    key = normalise(units)
    if key not in _TABLE:
        raise UnitsError(
            f"variable {variable!r}{where}: unknown units {units!r}; "
            f"known units: {', '.join(_TABLE)}"
        )
    return _TABLE[key]


def is_amount(units: str) -> bool:
    """Whether ``units`` can be an accumulation over a time step (mm, kg m-2, or a length)."""
    key = normalise(units)
    return key in _TABLE and _TABLE[key].dimension in ("precipitation_amount", "length")


def amount_to_rate(
    da: xr.DataArray, step_seconds: xr.DataArray | float, variable: str
) -> xr.DataArray:
    """An accumulation per step (mm, kg m-2, m) → a rate in mm s-1, dividing by each step's length."""
    unit = lookup(str(da.attrs.get("units", "")), variable)
    to_mm = unit.factor * (1000.0 if unit.dimension == "length" else 1.0)
    out = da * to_mm / step_seconds
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
    src_units = str(da.attrs["units"])
    src = lookup(src_units, variable, where)
    dst = lookup(to, variable, " (config 'variables')")
    if src.dimension != dst.dimension:
        raise UnitsError(
            f"variable {variable!r}{where}: cannot convert {src_units!r} ({src.dimension}) "
            f"to {to!r} ({dst.dimension})"
        )
    if src == dst:
        return da.assign_attrs(units=to)
    base = da * src.factor + src.offset if (src.factor, src.offset) != (1.0, 0.0) else da
    out = (base - dst.offset) / dst.factor
    return out.astype(np.float32).assign_attrs({**da.attrs, "units": to})
