"""Zarr stores filled region by region: initialised empty, written as results finish, renamed.

The store is created under a temporary name with all metadata and coordinates (``compute=False``
leaves the data chunks unwritten, reading as NaN), data arrive in regions through zarr directly,
and only a store that was completely written is renamed to the target.

Several processes (the ranks of a ``torchrun`` job) can fill one store together
(:func:`shared_streamed_store`): rank 0 creates it, every rank writes its own chunks, and rank 0
renames it once every rank has reported success. Ranks must write disjoint zarr chunks: two
writers of one chunk would each read, modify and rewrite it, and one would lose.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import xarray as xr
import zarr

from climai.io.atomic import atomic_path
from climai.io.calendars import time_encodings
from climai.io.stores import COMPRESSOR, StoreError, consolidate

log = logging.getLogger("climai")


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
    for name, calendar in time_encodings(template).items():  # the source's calendar
        enc[name] = {**enc.get(name, {}), **calendar}
    return enc


@contextlib.contextmanager
def streamed_store(target: str | Path, template: xr.Dataset) -> Iterator[RegionWriter]:
    """Create a store shaped like ``template`` (dask data: only metadata is written) and yield a
    :class:`RegionWriter`; on success the store is renamed to ``target``, on error removed."""
    with atomic_path(target) as tmp:
        _create(tmp, template)
        yield RegionWriter(tmp)


def _create(path: Path, template: xr.Dataset) -> None:
    """Write the metadata and coordinates of ``template`` (dask data variables stay unwritten)."""
    template.to_zarr(
        path,
        mode="w",
        zarr_format=3,
        consolidated=False,
        compute=False,
        encoding=_template_encoding(template),
    )
    consolidate(path)  # the metadata is final: regions only add data chunks


class RankGroup(Protocol):
    """The processes that fill one store together, and their two collective operations."""

    @property
    def rank(self) -> int:
        """This process's rank, 0 to ``world`` - 1."""

    @property
    def world(self) -> int:
        """Number of ranks."""

    def broadcast(self, obj: str | None) -> str | None:
        """Rank 0's ``obj``, on every rank."""

    def gather(self, obj: str | None) -> list[str | None]:
        """Every rank's ``obj`` in rank order, on every rank."""


class SharedStoreError(StoreError):
    """Another rank failed while filling a shared store: the store was not written."""


@contextlib.contextmanager
def shared_streamed_store(
    target: str | Path, template: xr.Dataset, group: RankGroup
) -> Iterator[RegionWriter]:
    """:func:`streamed_store` filled by every rank of ``group``.

    Rank 0 creates the store under a temporary name, then tells the other ranks its path (they
    write nothing before). Once a rank has written its share it reports success or its error;
    rank 0 renames the store to ``target`` only when every rank succeeded, and removes it
    otherwise; the other ranks return or raise only after that, so that a launcher stopping
    the job at the first exit never interrupts the rename or the removal. Every rank raises
    when any rank failed: a failing rank never leaves a store that looks complete.
    """
    if group.world == 1:
        with streamed_store(target, template) as writer:
            yield writer
        return
    if group.rank != 0:
        path = group.broadcast(None)
        if path is None:
            raise SharedStoreError(f"rank 0 could not create the store {str(target)!r}")
        try:
            with _all_ranks_succeed(group, target):
                yield RegionWriter(Path(path))
        finally:
            _collective_quietly(group, "wait for rank 0 to finish the store")
        return
    announced = False
    try:
        with atomic_path(target) as tmp:
            _create(tmp, template)
            group.broadcast(str(tmp))
            announced = True
            with _all_ranks_succeed(group, target):
                yield RegionWriter(tmp)
    finally:  # renamed or removed: tell the others (None before the path: creation failed)
        _collective_quietly(
            group, "tell the others the store is done", "done" if announced else None
        )


def _collective_quietly(group: RankGroup, what: str, obj: str | None = None) -> None:
    """``group.broadcast(obj)``, logging instead of raising when the other ranks are gone
    (a rank leaving on an error must raise that error, not the lost connection)."""
    try:
        group.broadcast(obj)
    except Exception as lost:  # a lost peer: this rank's own outcome is the news
        log.error("rank %d could not %s: %s", group.rank, what, lost)


@contextlib.contextmanager
def _all_ranks_succeed(group: RankGroup, target: str | Path) -> Iterator[None]:
    """Run the body on this rank, then raise :class:`SharedStoreError` if any other rank failed."""
    try:
        yield
    except BaseException as err:
        try:
            group.gather(f"{type(err).__name__}: {err}")
        except Exception as lost:  # a lost peer: this rank's own error is the news
            log.error("rank %d could not report its failure to the others: %s", group.rank, lost)
        raise
    failed = [(rank, why) for rank, why in enumerate(group.gather(None)) if why is not None]
    if failed:
        raise SharedStoreError(
            f"{str(target)!r} was not written: "
            + "; ".join(f"rank {rank} of {group.world} failed: {why}" for rank, why in failed)
        )
