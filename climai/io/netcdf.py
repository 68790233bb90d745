"""NetCDF output: one file written atomically with the encoding chosen by the caller.

With one thread, xarray writes the whole file (HDF5 compresses every chunk as it is written, in
one thread: HDF5 is not thread-safe). With ``threads`` > 1 the chunks of the large fields are
compressed side by side instead: xarray writes every other variable, the large fields are
declared with the same header (xarray's own CF encoding: dtype, ``_FillValue``, attributes,
chunking, shuffle + zlib), and their chunks, each filtered as HDF5 would (byte shuffle, then zlib
at the same level) in a pool of threads (``zlib`` releases the GIL), are stored as they are with
HDF5 direct chunk writes (h5py). Readers see the same variables, attributes and values as the
one-thread file's (``tests/unit/test_io.py``); only the variables' order in the file differs.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from climai.io.atomic import atomic_path

#: Bytes of float32 input a thread reads and compresses per task (a band of chunk rows over
#: one or more time steps).
TASK_BYTES = 16 << 20
#: HDF5 filter ids: byte shuffle, deflate (zlib).
H5Z_SHUFFLE, H5Z_DEFLATE = 2, 1


def write_netcdf(
    ds: xr.Dataset, path: str | Path, encoding: dict[str, dict[str, Any]], threads: int = 1
) -> None:
    """Write ``ds`` to the NetCDF-4 file ``path`` atomically (streams dask data chunk by chunk);
    with ``threads`` > 1 the large zlib-compressed fields' chunks are compressed in threads."""
    parallel = [n for n in ds.data_vars if threads > 1 and _chunkwise(ds[n], encoding.get(str(n)))]
    with atomic_path(path) as tmp:
        rest = ds.drop_vars(parallel)
        rest_enc = {k: v for k, v in encoding.items() if k not in parallel}
        rest.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=rest_enc)
        for name in parallel:
            _write_chunkwise(ds, str(name), encoding[str(name)], tmp, threads)
        if parallel and "coordinates" not in ds.attrs:
            _drop_global_coordinates(tmp)


def _drop_global_coordinates(path: Path) -> None:
    """Remove the global ``coordinates`` attribute xarray gives the file when auxiliary
    coordinates (e.g. 2-D lat/lon) belonged only to the fields written chunk by chunk: those
    fields name them in their own ``coordinates``, as in the one-thread file."""
    import netCDF4

    with netCDF4.Dataset(path, "a") as nc:
        if "coordinates" in nc.ncattrs():
            nc.delncattr("coordinates")


def _chunkwise(var: xr.DataArray, enc: dict[str, Any] | None) -> bool:
    """A field written chunk by chunk: zlib-compressed, chunked one step of every leading
    dimension by a square of (y, x)."""
    if not enc or not enc.get("zlib") or "chunksizes" not in enc or var.dims[-2:] != ("y", "x"):
        return False
    return all(c == 1 for c in enc["chunksizes"][:-2]) and var.ndim >= 3


def _encoded(ds: xr.Dataset, name: str, enc: dict[str, Any]) -> xr.Variable:
    """``ds[name]`` as xarray writes it: CF-encoded (NaN → ``_FillValue``, dtype), with the
    ``coordinates`` attribute xarray gives it."""
    from xarray import conventions

    variables, _ = conventions.encode_dataset_coordinates(ds)
    var = variables[name]
    var.encoding = dict(enc)
    return conventions.encode_cf_variable(var, name=name)


def _write_chunkwise(
    ds: xr.Dataset, name: str, enc: dict[str, Any], path: Path, threads: int
) -> None:
    import h5py
    import netCDF4

    var = _encoded(ds, name, enc)
    attrs = dict(var.attrs)
    fill = attrs.pop("_FillValue", None)
    chunks = tuple(int(c) for c in enc["chunksizes"])
    level = int(enc.get("complevel", 4))
    with netCDF4.Dataset(path, "a") as nc:
        for dim, size in zip(var.dims, var.shape, strict=True):
            if dim not in nc.dimensions:  # a dimension without a coordinate variable
                nc.createDimension(dim, size)
        out = nc.createVariable(name, var.dtype, var.dims, zlib=True, complevel=level,
                                shuffle=bool(enc.get("shuffle", False)), chunksizes=chunks,
                                fill_value=fill)  # fmt: skip
        out.setncatts(attrs)
    pad = fill if fill is not None else 0
    with h5py.File(path, "r+") as f:
        dset = f[name]
        plist = dset.id.get_create_plist()
        pipeline = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        shuffle = pipeline == [H5Z_SHUFFLE, H5Z_DEFLATE]
        if pipeline not in ([H5Z_SHUFFLE, H5Z_DEFLATE], [H5Z_DEFLATE]):
            raise ValueError(f"{str(path)!r}: variable {name!r} has HDF5 filters {pipeline}; "
                             "expected shuffle and deflate")  # fmt: skip

        def compress(task: tuple[tuple[int, ...], slice, slice]) -> list[tuple[tuple, bytes]]:
            lead, steps, rows = task
            block = _values(var, (*lead, steps, rows, slice(None)))
            out = []
            for t in range(block.shape[0]):
                for x0 in range(0, block.shape[2], chunks[-1]):
                    c = np.full(chunks[-2:], pad, var.dtype)
                    part = block[t, :, x0 : x0 + chunks[-1]]
                    c[: part.shape[0], : part.shape[1]] = part
                    raw = c.view(np.uint8).reshape(-1, c.itemsize).T.tobytes() if shuffle else c
                    offset = (*lead, steps.start + t, rows.start, x0)
                    out.append((offset, zlib.compress(raw, level)))
            return out

        for written in _in_order(compress, _tasks(var.shape, chunks, var.dtype.itemsize), threads):
            for offset, data in written:
                dset.id.write_direct_chunk(offset, data)


def _values(var: xr.Variable, index: tuple) -> np.ndarray:
    """``var[index]`` read (dask: in this thread; a lazily indexed file: only that part)."""
    data = var[index].data
    if hasattr(data, "compute"):
        data = data.compute(scheduler="synchronous")
    return np.asarray(data)


def _tasks(shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int) -> Iterator[tuple]:
    """Bands of one chunk row over as many steps as :data:`TASK_BYTES` allows, for every index
    of the dimensions before time."""
    steps = max(1, TASK_BYTES // (chunks[-2] * shape[-1] * itemsize))
    for lead in np.ndindex(*shape[:-3]):
        for t0 in range(0, shape[-3], steps):
            for y0 in range(0, shape[-2], chunks[-2]):
                yield (tuple(int(i) for i in lead), slice(t0, min(t0 + steps, shape[-3])),
                       slice(y0, min(y0 + chunks[-2], shape[-2])))  # fmt: skip


def _in_order(work: Any, tasks: Iterator[Any], threads: int) -> Iterator[Any]:
    """``work(task)`` of every task, in their order, computed by ``threads`` threads with at most
    two tasks per thread in flight (bounded memory)."""
    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(work, task))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
