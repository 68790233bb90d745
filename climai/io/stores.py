"""Zarr v3 stores: open lazily, write atomically with chunking and compression chosen here."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr
from zarr.codecs import BloscCodec

from climai.io.calendars import time_encodings, to_datetime64

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
            ds = xr.open_zarr(path, consolidated=False, chunks=None)
        return _chunk_like_storage(to_datetime64(ds, f"store {str(path)!r}", record=False))
    except Exception as err:  # zarr raises many types; name the store and keep the cause
        raise StoreError(f"cannot open store {str(path)!r}: {err}") from err


def _chunk_like_storage(ds: xr.Dataset) -> xr.Dataset:
    """Dask chunks per variable: its shard shape when sharded, else its zarr chunks.

    xarray's ``chunks={}`` would give one dask chunk per *inner* chunk of a shard (e.g. 1 × 256²):
    thousands of tiny tasks; a task per shard reads each shard file once.
    """
    out = {}
    for name, var in ds.variables.items():
        if name in ds.indexes:
            continue
        shape = var.encoding.get("shards") or var.encoding.get("chunks")
        if var.ndim and shape:
            out[name] = var.chunk(dict(zip(var.dims, shape, strict=True)))
    return ds.assign(out) if out else ds


def _v3_compressors(compressors: Any) -> bool:
    """Whether ``compressors`` (an ``encoding`` entry) are zarr v3 bytes-to-bytes codecs; those
    read from a zarr v2 source (numcodecs' Blosc, Zlib, ...) cannot be written to a v3 store."""
    from zarr.abc.codec import BytesBytesCodec

    items = compressors if isinstance(compressors, list | tuple) else [compressors]
    return all(isinstance(c, BytesBytesCodec) for c in items if c is not None)


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, object]]:
    """Per variable: its own ``encoding`` (chunks, shards, compressors) if set, else Blosc lz4
    (also in place of a zarr v2 source's compressors, which a v3 store cannot hold)."""
    enc: dict[str, dict[str, object]] = {}
    for name, var in ds.variables.items():
        keep = {k: v for k, v in var.encoding.items() if k in ("chunks", "shards", "compressors")}
        if "compressors" in keep and not _v3_compressors(keep["compressors"]):
            del keep["compressors"]
        if var.dtype.kind in "fiu" and var.ndim > 0 and "compressors" not in keep:
            keep["compressors"] = [COMPRESSOR]
        if keep:
            enc[str(name)] = keep
    for name, calendar in time_encodings(ds).items():  # read back in the source's calendar
        enc[name] = {**enc.get(name, {}), **calendar}
    return enc


def reusable_array(source: str | Path, name: str, var: xr.Variable, encoding: dict) -> bool:
    """Whether array ``name`` of store ``source`` already holds ``var`` encoded as ``encoding``.

    True when shape, dtype, dimension names, chunks, shards and compressors all match: its
    compressed shard files can then be linked into a new store instead of decoded and re-encoded.
    """
    import zarr

    try:
        arr = zarr.open_array(Path(source) / name, mode="r")
    except Exception:  # zarr raises several types for "no such array": not reusable, re-encode
        return False
    codecs = encoding.get("compressors") or []
    return (
        arr.shape == var.shape
        and arr.dtype == var.dtype
        and tuple(arr.metadata.dimension_names or ()) == tuple(var.dims)
        and arr.shards == (tuple(encoding["shards"]) if encoding.get("shards") else None)
        and arr.chunks == tuple(encoding.get("chunks") or ())
        and [_codec_key(c) for c in arr.compressors] == [_codec_key(c) for c in codecs]
    )


def _codec_key(codec: Any) -> dict[str, Any]:
    # ``typesize`` is tuned to the dtype when an array is created: not part of the choice
    d = codec.to_dict()
    d["configuration"] = {k: v for k, v in d.get("configuration", {}).items() if k != "typesize"}
    return d


def _link_array(source: Path, dest: Path, attrs: dict[str, Any]) -> None:
    """Hard-link (or copy, across file systems) the chunk files of a zarr v3 array."""
    import json
    import os
    import shutil

    for root, _, files in os.walk(source):
        rel = Path(root).relative_to(source)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            if rel == Path(".") and f == "zarr.json":
                continue
            try:
                os.link(Path(root) / f, dest / rel / f)
            except OSError:
                shutil.copy2(Path(root) / f, dest / rel / f)
    meta = json.loads((source / "zarr.json").read_text())
    meta["attributes"] = {
        **meta.get("attributes", {}),
        **json.loads(json.dumps(attrs, default=str)),
    }
    (dest / "zarr.json").write_text(json.dumps(meta, indent=2))


def write_store(
    ds: xr.Dataset,
    path: str | Path,
    compute_with: Sequence[Any] = (),
    reuse: dict[str, tuple[str | Path, str]] | None = None,
) -> list[Any]:
    """Write ``ds`` to a zarr v3 store at ``path`` atomically (temporary name, then rename).

    Chunks, shards and compressors come from each variable's ``encoding`` (default: Blosc lz4 on
    the dask chunks). ``compute_with`` are further dask objects computed in the same pass as the
    write (so shared inputs are read once); their results are returned, and the store appears at
    ``path`` only once they all succeeded. ``reuse`` maps variables to ``(store, array)`` sources
    holding the same values: where :func:`reusable_array` says the source is already encoded as
    asked, its compressed files are hard-linked instead of re-encoded (else ``ds`` is written).
    """
    import dask

    from climai.io.atomic import atomic_path

    encoding = _encoding(ds)
    linked = {
        name: (Path(src), arr)
        for name, (src, arr) in (reuse or {}).items()
        if reusable_array(src, arr, ds[name].variable, encoding.get(name, {}))
    }
    linked_attrs = {name: dict(ds[name].attrs) for name in linked}
    ds = ds.drop_vars(list(linked)).copy()
    for var in ds.variables.values():
        var.encoding = {}  # what is written is exactly ``encoding``; no stale source encodings
    encoding = {k: v for k, v in encoding.items() if k in ds.variables}
    with atomic_path(path) as tmp:
        write = ds.to_zarr(
            tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding, compute=False
        )
        _, *results = dask.compute(write, *compute_with)
        for name, (src, arr) in linked.items():
            _link_array(src / arr, tmp / name, linked_attrs[name])
        consolidate(tmp)
    return results


def consolidate(path: str | Path) -> None:
    """Write the consolidated metadata of the store at ``path`` (its root ``zarr.json`` lists
    every array), so that a user's plain ``xr.open_zarr(path)`` reads one file, silently, and
    never lists the folder, where Snakemake puts its ``.snakemake_timestamp``. Call it once the
    metadata is final (data chunks may still be written after it)."""
    import zarr

    (Path(path) / ".snakemake_timestamp").unlink(missing_ok=True)  # copied from another store
    with warnings.catch_warnings():
        # zarr-python's consolidated metadata for format 3 (read by xarray and zarr-python)
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(path), zarr_format=3)
