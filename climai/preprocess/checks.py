"""Checks of an ingested series' values before anything is written: a time axis with steps,
no ±inf, no negative precipitation (a no-data sentinel the config missed). Each failure is an
:class:`IngestError` naming the variable, where it came from and the config key to set."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import xarray as xr

from climai.config import CampaignConfig
from climai.variables import is_non_negative


class IngestError(ValueError):
    """Input that cannot be ingested; one line naming the key, file or variable and the problem."""


def check_time_axis(ds: xr.Dataset, key: str, where: str) -> None:
    """A series needs at least one time step (an empty axis has nothing to learn or score)."""
    if ds.sizes.get("time", 1) == 0:
        raise IngestError(
            f"{key}: the time axis of {where} is empty (0 steps); expected at least one time "
            "step (check the files and the time range they hold)"
        )


def check_finite(infinite: dict[str, Any], key: str, where: str) -> None:
    """±inf is neither data nor NaN: it would spread through every block mean and tile."""
    for name, count in infinite.items():
        if int(count):
            raise IngestError(
                f"variable {name!r} in {where} has {int(count)} infinite value(s) (±inf); "
                f"expected finite values or NaN for no data: if inf marks missing data, set "
                f"{key}.missing_value: [.inf, -.inf] so it is read as NaN"
            )


def check_not_negative(minima: dict[str, Any], cfg: CampaignConfig, key: str, where: str) -> None:
    """Precipitation (or a variable of kind non-negative) left negative after conversion is a
    no-data sentinel the config missed."""
    for name, low in minima.items():
        if float(low) < 0:
            var = next(v for v in cfg.variables if v.name == name)
            what = "precipitation" if var.kind == "precipitation" else f"values (kind {var.kind})"
            raise IngestError(
                f"variable {name!r} in {where} has negative {what} (minimum "
                f"{float(low):g} {var.units}) after conversion; expected values >= 0: if that is "
                f"a no-data value, set {key}.missing_value to it as the file has it (e.g. "
                "missing_value: -3 for MRMS) so it is read as NaN; if it is a model's rounding "
                f"noise, set {key}.negative_tolerance (e.g. 1e-6) so that values down to minus "
                "it are read as 0"
            )


def check_input_values(cfg: CampaignConfig, inputs: dict[str, xr.DataArray], where: str) -> None:
    """The driving data ``inputs`` (canonical variables on their own grid, before regridding
    could hide an inf) hold no ±inf and no negative precipitation; one pass, before any write."""
    non_negative = [v.name for v in cfg.variables if is_non_negative(v.kind)]
    infinite = {n: np.isinf(da).sum() for n, da in inputs.items()}
    minima = {n: inputs[n].min() for n in non_negative if n in inputs}
    infinite, minima = dask.compute(infinite, minima)
    check_finite(infinite, "data.input", where)
    check_not_negative(minima, cfg, "data.input", where)
