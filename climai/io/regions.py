"""Zarr stores filled region by region: initialised empty, written as results finish, renamed.

The store is created under a temporary name with all metadata and coordinates (``compute=False``
leaves the data chunks unwritten, reading as NaN), data arrive in regions through zarr directly,
and only a store that was completely written is renamed to the target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from climai.io.atomic import atomic_path
from climai.io.stores import COMPRESSOR


class RegionWriter:
    """Writes blocks of values into the arrays of an initialised zarr store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._group = zarr.open_group(str(path), mode="r+", zarr_format=3)

    def write(self, name: str, index: tuple[slice, ...], values: np.ndarray) -> None:
        """``store[name][index] = values`` (dims in the order the array was created with)."""
        array = self._group[name]
        assert isinstance(array, zarr.Array), f"{name!r} is a group in {str(self.path)!r}"
        array[index] = values


def _template_encoding(template: xr.Dataset) -> dict[str, dict[str, object]]:
    enc: dict[str, dict[str, object]] = {}
    for name, var in template.variables.items():
        if var.dtype.kind in "fiu" and var.ndim > 0:
            enc[str(name)] = {"compressors": [COMPRESSOR]}
            if var.chunks is not None:
                enc[str(name)]["chunks"] = tuple(c[0] for c in var.chunks)
    return enc


@contextlib.contextmanager
def streamed_store(target: str | Path, template: xr.Dataset) -> Iterator[RegionWriter]:
    """Create a store shaped like ``template`` (dask data: only metadata is written) and yield a
    :class:`RegionWriter`; on success the store is renamed to ``target``, on error removed."""
    with atomic_path(target) as tmp:
        template.to_zarr(
            tmp,
            mode="w",
            zarr_format=3,
            consolidated=False,
            compute=False,
            encoding=_template_encoding(template),
        )
        yield RegionWriter(tmp)
