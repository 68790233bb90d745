"""Rule ``preprocess`` (``climai preprocess``): target + static → the prepared dataset.

Relevant settings: ``preprocess`` (valid_fraction, quantiles, chunking, distributed), ``split``,
``scale``, ``variables`` (kinds pick the transforms of the statistics).
Inputs: ``ingest/target.zarr``, ``ingest/static.zarr``, ``ingest/input.zarr`` (with ``data.input``).
Outputs: ``prep/dataset.zarr`` (``hr_<var>``, ``lr_<var>``, ``static_<name>``, ``split``),
``prep/stats.json`` (normalisation statistics of the train split only).
"""

from __future__ import annotations

import argparse
from typing import Any

import xarray as xr

from climai.data.prepared import hr_key
from climai.io import open_store, write_json, write_store
from climai.io.shards import with_fast_reads
from climai.malloc import release_large_buffers
from climai.preprocess.dataset import Layout, build_dataset, static_and_split_stats, stats_graph
from climai.preprocess.parallel import dask_scheduler
from climai.stages import StageContext, log


def compute_stats(
    ds: xr.Dataset, variables: dict[str, str], scale: int, n_quantiles: int = 101
) -> dict[str, Any]:
    """Statistics of ``ds`` (built by :func:`build_dataset`) computed now (not while writing)."""
    import dask

    (per_var,) = dask.compute(stats_graph(ds, variables, scale, n_quantiles))
    return {**per_var, **static_and_split_stats(ds)}


def run(ctx: StageContext) -> None:
    """Coarsen, split and normalise in one pass; write the dataset and its statistics."""
    cfg = ctx.cfg
    pre = cfg.preprocess
    release_large_buffers()  # peak RSS bounded by the blocks in flight, not by freed ones
    variables = {v.name: v.kind for v in cfg.variables}
    layout = Layout(time_chunk=pre.time_chunk, tile=pre.tile, codec=pre.codec, clevel=pre.clevel)
    # HR shards decoded by one task each (Blosc straight into the block), not chunk by chunk
    # through zarr's codec pipeline: the read is most of preprocess's time (BENCHMARKS.md)
    target = with_fast_reads(open_store(ctx.paths.target), ctx.paths.target)
    ds = build_dataset(
        target,
        open_store(ctx.paths.static),
        variables,
        cfg.scale,
        cfg.split.model_dump(),
        pre.min_valid_fraction,
        layout,
        inputs=open_store(ctx.paths.input) if cfg.data.input is not None else None,
    )
    ds = ctx.stamp(ds)
    with dask_scheduler(pre, ctx.threads):
        (per_var,) = write_store(
            ds,
            ctx.paths.preprocessed,
            compute_with=[stats_graph(ds, variables, cfg.scale, pre.quantiles)],
            # HR is the target itself: where ingest wrote it in the dataset's layout, its
            # compressed shards are linked, not decoded and re-encoded (see BENCHMARKS.md)
            reuse={hr_key(v): (ctx.paths.target, v) for v in variables},
        )
    stats = {**per_var, **static_and_split_stats(ds)}
    write_json(ctx.paths.preprocessed_stats, stats)
    log.info(
        "preprocess: %s",
        {k: {m: v[m] for m in ("mean", "std", "count")} for k, v in per_var.items()},
    )


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai preprocess``."""
    run(ctx)
