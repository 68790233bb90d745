"""Rule ``infer_gather`` (``climai infer_gather --method M --blocks N``): join the blocks of a split
infer into the one store an unsplit infer writes.

Relevant settings: none beyond the blocks' (their count, ``--blocks``).
Inputs: ``downscaled/<method>/blocks/test_<i>.zarr`` for i < N, ``runtime/infer_block_<method>_0.json``.
Outputs: ``downscaled/<method>/test.zarr`` (equal, array by array and bit by bit, to what one
``infer`` job writes: block 0's store with every other block's time chunks copied in) and
``runtime/infer_<method>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from climai.stages import StageContext, log


def block_steps(steps: int, chunk: int, block: int, blocks: int) -> slice:
    """The time steps of ``block`` of ``blocks``: its contiguous run of whole time chunks (the
    share :func:`climai.inference.distributed.chunk_share` gives rank ``block`` of ``blocks``)."""
    n = -(-steps // chunk)
    first, last = block * n // blocks, (block + 1) * n // blocks
    return slice(first * chunk, min(steps, last * chunk))


def gather(blocks: list[Path], target: Path, threads: int = 1) -> None:
    """Block 0's store with each other block's time chunks copied in (by ``threads`` threads,
    one time chunk of one row of chunks at a time), renamed to ``target`` once complete (a failed gather leaves no
    ``target``)."""
    from concurrent.futures import ThreadPoolExecutor

    import zarr

    from climai.io.atomic import atomic_path
    from climai.io.stores import consolidate

    copies: list[tuple[Any, Any, tuple[slice, ...]]] = []
    with atomic_path(target) as tmp:
        shutil.copytree(blocks[0], tmp)
        dst = zarr.open_group(tmp, mode="r+")
        for i, path in enumerate(blocks[1:], start=1):
            src = zarr.open_group(path, mode="r")
            for name, arr in src.arrays():
                dims = list(arr.metadata.dimension_names or ())
                if "time" not in dims or name == "time":
                    continue  # coordinates and fields without time: whole in every block
                axis = dims.index("time")
                chunk = arr.chunks[axis]
                steps = block_steps(arr.shape[axis], chunk, i, len(blocks))
                rows = dims.index("y") if "y" in dims else axis
                band = arr.chunks[rows] if rows != axis else arr.shape[axis]
                for t0 in range(steps.start, steps.stop, chunk):
                    for y0 in range(0, arr.shape[rows], band):
                        index = tuple(
                            slice(t0, min(steps.stop, t0 + chunk)) if d == axis
                            else slice(y0, y0 + band) if d == rows else slice(None)
                            for d in range(arr.ndim)
                        )  # fmt: skip
                        copies.append((arr, dst[name], index))

        def copy(job: tuple[Any, Any, tuple[slice, ...]]) -> None:
            src, out, index = job
            out[index] = src[index]

        with ThreadPoolExecutor(max(1, threads)) as pool:
            list(pool.map(copy, copies))
        consolidate(tmp)
    log.info("infer_gather: %d blocks → %s", len(blocks), target)


def run(ctx: StageContext, method: str, blocks: int) -> None:
    from climai.io import write_json

    paths = ctx.paths
    gather(
        [paths.downscaled_block(method, i) for i in range(blocks)],
        paths.downscaled(method),
        ctx.threads,
    )
    record = json.loads(paths.runtime("infer_block", f"{method}_0").read_text())
    write_json(paths.runtime("infer", method), {**record, "rule": "infer"})


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    run(ctx, args.method, args.blocks)
