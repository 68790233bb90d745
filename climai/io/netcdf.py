"""NetCDF output: one file written atomically with the encoding chosen by the caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr

from climai.io.atomic import atomic_path


def write_netcdf(ds: xr.Dataset, path: str | Path, encoding: dict[str, dict[str, Any]]) -> None:
    """Write ``ds`` to the NetCDF-4 file ``path`` atomically (streams dask data chunk by chunk)."""
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
