"""The streaming half of the inference engine: time blocks in, HR bands out, zarr chunks written.

Every method, emulator or baseline, downscales through :func:`stream_to_store`: the LR input is
read one time block at a time, a :data:`BandSource` turns the block into consecutive bands of HR
rows (an emulator: tiles blended by :class:`~climai.inference.tiling.TiledPredictor`; a baseline:
its function applied band by band, :mod:`climai.inference.baselines`), and each band is written
into the output store as soon as it is final. Memory is one time block of LR fields plus one band
of the HR domain's width, never the domain or the split. Optionally (:data:`BACKGROUND_WRITES`)
a writer thread writes the previous band while the next one is computed (at most one band
waits: bounded memory).

Output: ``<var>`` on ``(time, y, x)``, or ``(member, time, y, x)`` for an ensemble (the order the
evaluate stage reads), chunked by one member, one time block and one band height; ensembles may
add ``<var>_mean`` ``(time, y, x)`` and ``<var>_quantile`` ``(quantile, time, y, x)``.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from tqdm import tqdm

from climai.config import InferConfig
from climai.inference.blocks import steps_per_block
from climai.inference.distributed import SINGLE, InferRanks, chunk_seed, chunk_share
from climai.io import shared_streamed_store
from climai.io.cf import MEMBER_ATTRS, QUANTILE_ATTRS
from climai.io.regions import RegionWriter

log = logging.getLogger("climai")

#: Write bands on a thread of their own while the next band is computed. Off by default: on the
#: shared 2-core machine no gain could be shown (BENCHMARKS.md, infer); benchmarks/infer.py
#: ``--writer-thread`` measures it. The values written are the same either way.
BACKGROUND_WRITES = False

#: ``bands(lr, times, seed, progress)``: one time block of physical LR fields ``(T, V, h, w)``
#: and its times → consecutive HR bands ``(y0, y1, values)``, ``values`` ``(T, [M,] V, y1 - y0,
#: W)`` physical; ``seed`` is the block's (ensembles); ``progress(n)`` after every n samples.
BandSource = Callable[
    [np.ndarray, pd.DatetimeIndex, int, Callable[[int], None]],
    Iterator[tuple[int, int, np.ndarray]],
]


@dataclass
class EngineStats:
    """What a run computed: ``samples`` (tile × step, or band × step) and those ``skipped``
    because their whole LR input was missing (written as NaN without computing) or, for a
    conserving emulator of precipitation only, all 0 (written as 0: the conservation makes them
    exactly 0 whatever is predicted)."""

    samples: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts for a runtime record."""
        return {"samples": self.samples, "skipped": self.skipped}


def block_steps(cfg: InferConfig, bytes_per_step: int, chunk_cells: int = 1) -> int:
    """Time steps per block: ``cfg.time_block``, or as many as ``cfg.memory_mb`` allows when one
    step's band buffers take ``bytes_per_step`` and a chunk of ``chunk_cells`` cells per step
    stays within :data:`~climai.inference.blocks.CHUNK_BYTES` (at least one)."""
    return steps_per_block(cfg.time_block, cfg.memory_mb, bytes_per_step, chunk_cells)


def template(
    lr: xr.Dataset,
    y: np.ndarray,
    x: np.ndarray,
    variables: list[str],
    attrs: dict[str, dict[str, Any]],
    members: int,
    cfg: InferConfig,
    chunks: tuple[int, int, int],
) -> xr.Dataset:
    """An empty (dask) output dataset: ``<var>`` on ([member,] time, y, x), ensemble summaries."""
    import dask.array as da

    nt, ny, nx = lr.sizes["time"], y.size, x.size
    coords: dict[str, Any] = {
        "time": lr["time"],
        "y": ("y", y, lr["y"].attrs),
        "x": ("x", x, lr["x"].attrs),
    }
    ds = xr.Dataset(coords=coords)
    ct, cy, cx = chunks

    def empty(shape: tuple[int, ...], chunk: tuple[int, ...]) -> da.Array:
        return da.zeros(shape, dtype=np.float32, chunks=chunk)

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    for v in variables:
        if members > 1:
            ds.coords["member"] = ("member", np.arange(members), MEMBER_ATTRS)
            dims, shape, chunk = (
                ("member", "time", "y", "x"),
                (members, nt, ny, nx),
                (1, ct, cy, cx),
            )
        else:
            dims, shape, chunk = ("time", "y", "x"), (nt, ny, nx), (ct, cy, cx)
        ds[v] = (dims, empty(shape, chunk), attrs[v])
        if members > 1 and cfg.ensemble_mean:
            ds[f"{v}_mean"] = (("time", "y", "x"), empty((nt, ny, nx), (ct, cy, cx)), attrs[v])
        if members > 1 and cfg.quantiles:
            nq = len(cfg.quantiles)
            ds.coords["quantile"] = (
                "quantile",
                np.asarray(cfg.quantiles, np.float64),
                QUANTILE_ATTRS,
            )
            ds[f"{v}_quantile"] = (
                ("quantile", "time", "y", "x"),
                empty((nq, nt, ny, nx), (nq, ct, cy, cx)),
                attrs[v],
            )
    if "crs" in lr.variables:
        ds["crs"] = lr["crs"].load()
    return ds


def write_band(
    writer: RegionWriter,
    values: np.ndarray,
    times: slice,
    rows: slice,
    variables: list[str],
    cfg: InferConfig,
) -> None:
    """Write one band ``(T, [M,] V, h, W)`` of every variable (members first in the store) and
    its ensemble summaries."""
    ensemble = values.ndim == 5
    for i, v in enumerate(variables):
        field = values[:, :, i] if ensemble else values[:, i]
        if ensemble:
            writer.write(v, (slice(None), times, rows), np.moveaxis(field, 1, 0))
        else:
            writer.write(v, (times, rows), field)
        if ensemble and cfg.ensemble_mean:
            writer.write(f"{v}_mean", (times, rows), field.mean(axis=1))
        if ensemble and cfg.quantiles:
            q = np.quantile(field, cfg.quantiles, axis=1).astype(np.float32)
            writer.write(f"{v}_quantile", (slice(None), times, rows), q)


class _BandWriter:
    """Writes bands on a thread of its own while the caller computes the next (zarr encoding and
    compression release the GIL); at most ``depth`` bands wait. Errors surface in the caller."""

    def __init__(
        self, writer: RegionWriter, variables: list[str], cfg: InferConfig, depth: int = 1
    ):
        self.writer, self.variables, self.cfg = writer, variables, cfg
        self.queue: queue.Queue[tuple[np.ndarray, slice, slice] | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="climai-band-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    write_band(self.writer, item[0], item[1], item[2], self.variables, self.cfg)
                except BaseException as err:  # re-raised in the caller's thread
                    self.error = err

    def put(self, values: np.ndarray, times: slice, rows: slice) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((values, times, rows))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def stream_to_store(
    bands: BandSource,
    lr: xr.Dataset,
    variables: list[str],
    out_template: xr.Dataset,
    output: Path,
    cfg: InferConfig,
    steps_per_block: int,
    ranks: InferRanks = SINGLE,
    seed: int = 0,
    samples_per_step: int = 1,
    block: tuple[int, int] = (0, 1),
) -> None:
    """Downscale ``lr`` (``variables`` on (time, y, x)) time block by time block into the zarr
    store ``output`` shaped like ``out_template`` (:func:`template`, whose time chunks are the
    blocks of ``steps_per_block`` steps).

    Block ``k`` gets the seed ``chunk_seed(seed, k)``; with several ``ranks`` each downscales its
    share of the blocks into the one store (the same blocks with the same seeds as one process,
    so the same values). ``samples_per_step``: the progress bar's units per step (tiles).
    ``block = (i, n)``: only the time blocks of share ``i`` of ``n`` (contiguous, as
    :func:`chunk_share` deals them: the ``infer_block`` jobs of a split infer), into a store with
    the whole template, gathered by ``infer_gather``.
    """
    nt = lr.sizes["time"]
    share = chunk_share(
        nt, steps_per_block, InferRanks(block[0] * ranks.world + ranks.rank, block[1] * ranks.world)
    )
    mine = sum(times.stop - times.start for _, times in share)
    if ranks.world > 1:
        log.info("rank %d of %d: %d of the %d steps", ranks.rank, ranks.world, mine, nt)
    bar = tqdm(
        total=mine * samples_per_step, unit="tile", file=sys.stderr, disable=not cfg.progress,
        mininterval=2.0, desc="downscale",
    )  # fmt: skip
    with bar, shared_streamed_store(output, out_template, ranks) as writer:
        background = _BandWriter(writer, variables, cfg) if BACKGROUND_WRITES else None
        try:
            for k, times in share:
                block = lr.isel(time=times)
                values = np.stack([block[v].values for v in variables], axis=1)
                index = pd.DatetimeIndex(block["time"].values)
                for r0, r1, band in bands(values, index, chunk_seed(seed, k), bar.update):
                    if background is None:
                        write_band(writer, band, times, slice(r0, r1), variables, cfg)
                    else:
                        background.put(band, times, slice(r0, r1))
        finally:
            if background is not None:
                background.close()
