"""Zarr v3 stores: open lazily, write atomically with chunking and compression chosen here."""

from __future__ import annotations

import warnings
from pathlib import Path

import xarray as xr
from zarr.codecs import BloscCodec

COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")


class StoreError(OSError):
    """A store is missing or unreadable; the message names it."""


def open_store(path: str | Path) -> xr.Dataset:
    """Open a zarr store written by climai, lazily (dask-backed)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"store {str(path)!r} does not exist; run the stage that writes it first")
    try:
        with warnings.catch_warnings():
            # Snakemake marks directory outputs with a file zarr does not know: harmless
            warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp")
            return xr.open_zarr(path, consolidated=False, chunks={})
    except Exception as err:  # zarr raises many types; name the store and keep the cause
        raise StoreError(f"cannot open store {str(path)!r}: {err}") from err


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, object]]:
    enc: dict[str, dict[str, object]] = {}
    for name, var in ds.variables.items():
        if var.dtype.kind in "fiu" and var.ndim > 0:
            enc[str(name)] = {"compressors": [COMPRESSOR]}
    return enc


def write_store(ds: xr.Dataset, path: str | Path) -> None:
    """Write ``ds`` to a zarr v3 store at ``path`` atomically (temporary name, then rename)."""
    from climai.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=_encoding(ds))
