"""Zarr v3 stores: open lazily, write atomically with chunking and compression chosen here."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    """Per variable: its own ``encoding`` (chunks, shards, compressors) if set, else Blosc lz4."""
    enc: dict[str, dict[str, object]] = {}
    for name, var in ds.variables.items():
        keep = {k: v for k, v in var.encoding.items() if k in ("chunks", "shards", "compressors")}
        if var.dtype.kind in "fiu" and var.ndim > 0 and "compressors" not in keep:
            keep["compressors"] = [COMPRESSOR]
        if keep:
            enc[str(name)] = keep
    return enc


def write_store(ds: xr.Dataset, path: str | Path, compute_with: Sequence[Any] = ()) -> list[Any]:
    """Write ``ds`` to a zarr v3 store at ``path`` atomically (temporary name, then rename).

    Chunks, shards and compressors come from each variable's ``encoding`` (default: Blosc lz4 on
    the dask chunks). ``compute_with`` are further dask objects computed in the same pass as the
    write (so shared inputs are read once); their results are returned, and the store appears at
    ``path`` only once they all succeeded.
    """
    import dask

    from climai.io.atomic import atomic_path

    encoding = _encoding(ds)
    ds = ds.copy()
    for var in ds.variables.values():
        var.encoding = {}  # what is written is exactly ``encoding``; no stale source encodings
    with atomic_path(path) as tmp:
        write = ds.to_zarr(
            tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding, compute=False
        )
        _, *results = dask.compute(write, *compute_with)
    return results
