"""Fast reads of the sharded zarr v3 arrays climai writes: one task decodes one shard file.

zarr-python decodes the inner chunks of a shard through its asyncio codec pipeline, one chunk at a
time; for climai's HR layout (shards of ``time_chunk`` steps × the whole grid, inner chunks of
1 × 256², Blosc) that costs about 0.3 GB/s per process on this machine, while Blosc itself
decodes the same chunks at about 1 GB/s per thread (``BENCHMARKS.md``). For arrays in exactly
that layout, :func:`shard_dask_array` reads each shard file whole, checks its index checksum
(crc32c, as the zarr v3 sharding spec requires) and decodes the inner chunks with Blosc straight
into the output; anything else (other codecs, index at the start, arrays not sharded over whole
rows and columns) returns ``None`` and the caller reads through zarr. A unit test keeps the two
bitwise equal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

_EMPTY = np.uint64(2**64 - 1)  # offset and nbytes of an inner chunk that was never written


def _layout(array_dir: Path) -> dict[str, Any] | None:
    """Shape, dtype, shard and inner chunk shapes of a supported array, else None."""
    try:
        meta = json.loads((array_dir / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        return None
    codecs = meta.get("codecs", [])
    key = meta.get("chunk_key_encoding", {})
    if (
        len(codecs) != 1
        or codecs[0].get("name") != "sharding_indexed"
        or meta.get("chunk_grid", {}).get("name") != "regular"
        or key.get("name") != "default"
        or key.get("configuration", {}).get("separator", "/") != "/"
    ):
        return None
    conf = codecs[0]["configuration"]
    inner = [c.get("name") for c in conf.get("codecs", [])]
    index = [c.get("name") for c in conf.get("index_codecs", [])]
    little = all(
        c.get("configuration", {}).get("endian", "little") == "little"
        for c in [*conf.get("codecs", []), *conf.get("index_codecs", [])]
        if c.get("name") == "bytes"
    )
    if (
        inner != ["bytes", "blosc"]
        or index != ["bytes", "crc32c"]
        or conf.get("index_location", "end") != "end"
        or not little
    ):
        return None
    dtype = np.dtype(meta["data_type"]) if meta["data_type"] in ("float32", "float64") else None
    shape = tuple(meta["shape"])
    shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    chunk = tuple(conf["chunk_shape"])
    if dtype is None or len(shape) != 3 or shard[1:] < shape[1:]:
        return None  # only shards that span whole rows and columns (time blocks)
    fill = meta.get("fill_value")
    fill = np.nan if fill in ("NaN", None) else float(fill)
    return {"shape": shape, "dtype": dtype, "shard": shard, "chunk": chunk, "fill": fill}


def read_shard(array_dir: Path, index: int, layout: dict[str, Any]) -> np.ndarray:
    """Time block ``index`` of the array (shard ``index`` along time), decoded."""
    import google_crc32c
    import numcodecs.blosc

    shape, shard, chunk = layout["shape"], layout["shard"], layout["chunk"]
    t0 = index * shard[0]
    nt = min(shard[0], shape[0] - t0)
    out = np.full((shard[0], *shard[1:]), layout["fill"], dtype=layout["dtype"])
    path = array_dir / "c" / str(index) / "0" / "0"
    if path.exists():
        data = path.read_bytes()
        grid = tuple(s // c for s, c in zip(shard, chunk, strict=True))
        n = math.prod(grid)
        raw = memoryview(data)[len(data) - 16 * n - 4 :]
        crc = int.from_bytes(raw[-4:], "little")
        if google_crc32c.value(bytes(raw[:-4])) != crc:
            raise OSError(f"shard {str(path)!r}: index checksum mismatch (corrupt file)")
        offsets = np.frombuffer(raw[:-4], dtype="<u8").reshape(n, 2)
        buf = np.empty(chunk, dtype=layout["dtype"])
        for i, (off, size) in enumerate(offsets):
            if off == _EMPTY and size == _EMPTY:
                continue
            numcodecs.blosc.decompress(memoryview(data)[int(off) : int(off + size)], buf)
            ct, cy, cx = np.unravel_index(i, grid)
            out[
                ct * chunk[0] : (ct + 1) * chunk[0],
                cy * chunk[1] : (cy + 1) * chunk[1],
                cx * chunk[2] : (cx + 1) * chunk[2],
            ] = buf
    return out[:nt, : shape[1], : shape[2]]


def shard_dask_array(array_dir: str | Path) -> Any:
    """A dask array of the zarr array at ``array_dir``, one task per shard; None if unsupported."""
    import dask
    import dask.array as da

    array_dir = Path(array_dir)
    layout = _layout(array_dir)
    if layout is None:
        return None
    shape, shard = layout["shape"], layout["shard"]
    sizes = tuple(min(shard[0], shape[0] - t0) for t0 in range(0, shape[0], shard[0]))
    if not sizes:
        return None
    stat = (array_dir / "zarr.json").stat()
    name = "read-shard-" + dask.base.tokenize(
        str(array_dir.resolve()), stat.st_mtime_ns, stat.st_size
    )
    graph = {(name, i, 0, 0): (read_shard, array_dir, i, layout) for i in range(len(sizes))}
    return da.Array(graph, name, (sizes, (shape[1],), (shape[2],)), dtype=layout["dtype"])


def with_fast_reads(ds: Any, store: str | Path) -> Any:
    """``ds`` (opened from ``store``) with every supported 3-D variable read by shard tasks."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if var.ndim != 3 or {"scale_factor", "add_offset"} & set(var.encoding):
            continue  # CF-packed values: xarray decodes them
        arr = shard_dask_array(Path(store) / str(name))
        if arr is not None and arr.shape == var.shape:
            out[name] = var.copy(data=arr)
    return out
