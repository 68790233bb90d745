"""Variables know their physics: ``kind`` picks the transform and the non-negativity constraint."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

ArrayLike = Any  # np.ndarray | torch.Tensor; torch is imported only by callers that use it


def _is_tensor(x: Any) -> bool:
    # torch is not imported here: preprocessing never needs it (and it costs ~180 MB of RSS)
    torch_mod = sys.modules.get("torch")
    return torch_mod is not None and isinstance(x, torch_mod.Tensor)


@dataclass(frozen=True)
class Transform:
    """Maps a variable to the space where it is normalised and learned, and back.

    ``log1p`` (precipitation) compresses the heavy right tail: t = log(1 + x / offset), with
    ``offset`` in the variable's units (1 mm h-1 by default), so light and heavy rain both matter.
    ``identity`` (temperature, generic, non-negative) leaves values as they are. Standardisation with the
    train-split mean and std follows in both cases.
    """

    name: str
    offset: float = 1.0

    def forward(self, x: ArrayLike) -> ArrayLike:
        if self.name == "identity":
            return x
        if _is_tensor(x):
            return x.clamp(min=0).div(self.offset).log1p()
        out = np.maximum(x, 0)  # NaN stays NaN
        if self.offset != 1.0:
            out /= out.dtype.type(self.offset) if out.dtype.kind == "f" else self.offset
        return np.log1p(out, out=out) if out.dtype.kind == "f" else np.log1p(out)

    def inverse(self, t: ArrayLike) -> ArrayLike:
        if self.name == "identity":
            return t
        if _is_tensor(t):
            return (t.expm1() * self.offset).clamp(min=0)
        return np.clip(np.expm1(t) * self.offset, 0, None)


_TRANSFORMS = {
    "precipitation": "log1p",
    "temperature": "identity",
    "generic": "identity",
    "non-negative": "identity",
}


def transform_for(kind: str) -> Transform:
    """The transform of a variable ``kind``."""
    try:
        return Transform(_TRANSFORMS[kind])
    except KeyError:
        raise ValueError(
            f"unknown variable kind {kind!r}; kinds: {', '.join(_TRANSFORMS)}"
        ) from None


NON_NEGATIVE_KINDS = ("precipitation", "non-negative")
"""Kinds whose values are never negative: clipped at 0 after interpolation and prediction,
conserved multiplicatively, and a negative value in the input stops ingest (a wind speed, a
specific humidity, a radiation flux: ``non-negative``; rain: ``precipitation``)."""


def is_non_negative(kind: str) -> bool:
    """Whether values of this kind can never be negative (clipped after interpolation)."""
    return kind in NON_NEGATIVE_KINDS


@dataclass(frozen=True)
class KnownVariable:
    """What climai knows of a CMIP short name: its CF standard name, canonical units (those of
    the CF standard-name table, or ones convertible to them) and kind."""

    standard_name: str
    units: str
    long_name: str
    kind: str = "generic"


#: CMIP short names → CF metadata. An exported variable without a ``standard_name`` gets the one
#: here; a campaign may use any units convertible to ``units`` (:mod:`climai.units`).
KNOWN_VARIABLES: dict[str, KnownVariable] = {
    "pr": KnownVariable("lwe_precipitation_rate", "mm h-1", "precipitation rate", "precipitation"),
    "tas": KnownVariable("air_temperature", "K", "near-surface air temperature", "temperature"),
    "tasmax": KnownVariable("air_temperature", "K", "daily maximum temperature", "temperature"),
    "tasmin": KnownVariable("air_temperature", "K", "daily minimum temperature", "temperature"),
    "sfcWind": KnownVariable("wind_speed", "m s-1", "near-surface (10 m) wind speed"),
    "uas": KnownVariable("eastward_wind", "m s-1", "eastward near-surface wind"),
    "vas": KnownVariable("northward_wind", "m s-1", "northward near-surface wind"),
    "ps": KnownVariable("surface_air_pressure", "Pa", "surface air pressure"),
    "psl": KnownVariable("air_pressure_at_mean_sea_level", "Pa", "sea-level pressure"),
    "rsds": KnownVariable(
        "surface_downwelling_shortwave_flux_in_air", "W m-2", "surface downwelling shortwave"
    ),
    "huss": KnownVariable("specific_humidity", "1", "near-surface specific humidity"),
    "hurs": KnownVariable("relative_humidity", "%", "near-surface relative humidity"),
}


def known_variable(name: str) -> KnownVariable | None:
    """The :data:`KNOWN_VARIABLES` entry of ``name`` (a CMIP short name), or ``None``."""
    return KNOWN_VARIABLES.get(name)
