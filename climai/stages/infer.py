"""Rule ``infer`` (``climai infer --method M``): downscale the campaign's test split with a method.

Relevant settings: ``infer`` (tile, overlap, batch, device, members, bf16, time_block),
``methods.<method>`` (quantile mapping: quantiles, max_samples), ``variables``, ``scale``, ``seed``.
Inputs: ``prep/dataset.zarr`` (``lr_<var>``, ``static_<name>``, ``split``; quantile mapping also
reads the train split's ``hr_<var>``), ``prep/stats.json``, ``models/<method>/model.pt``
(emulators).
Outputs: ``downscaled/<method>/test.zarr``: ``<var>`` on ``(time, y, x)``, or on
``(member, time, y, x)`` for ensembles; quantile mapping adds its fitted tables.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
import xarray as xr

from climai.data.features import FeatureSpec, load_split
from climai.data.prepared import PreparedDataset
from climai.inference.distributed import (
    SINGLE,
    InferRanks,
    chunk_seed,
    chunk_share,
    rank_device,
    setup_ranks,
    teardown_ranks,
)
from climai.inference.downscale import check_input, downscale_to_store
from climai.inference.predict import (
    Emulator,
    load_emulator,
    model_predictor,
    prediction_dataset,
    resolve_device,
    size_multiple,
    unet_prediction,
)
from climai.io import open_store, provenance_attrs, shared_streamed_store, write_store
from climai.launch import relaunched_on_every_gpu
from climai.registry import method_kind, method_type
from climai.stages import StageContext, log


def _infer_baseline(ctx: StageContext, prep: PreparedDataset, method: str, split: str) -> None:
    """A baseline on the split: its method type's ``predict`` (LR fields are 1/scale² of the HR:
    held in memory)."""
    variables = ctx.cfg.variable_names
    sub = prep.split(split)
    predict = method_type(ctx.cfg.methods.type_of(method)).predictor()
    values, tables = predict(prep, split, ctx.cfg, method)
    attrs = {v: {**prep.cf_attrs(v), "grid_mapping": "crs"} for v in variables}
    out = prediction_dataset(values, sub.ds, variables, attrs).assign(tables)
    out = ctx.stamp(out.assign_attrs(method=method, split=split))
    write_store(out.chunk({"time": 24}), ctx.paths.downscaled(method, split))
    log.info("infer %s: %d %s steps", method, out.sizes["time"], split)


#: Time steps per chunk of the in-memory path's output when ``infer.time_block`` is 0.
MEMORY_TIME_CHUNK = 24


def _member_template(
    sub: xr.Dataset, variables: list[str], attrs: dict[str, dict[str, Any]], members: int, ct: int
) -> xr.Dataset:
    """An empty (dask) output dataset of the in-memory path: ``<var>`` on ([member,] time, y, x),
    chunked by ``ct`` steps (and one member)."""
    import dask.array as da

    shape: tuple[int, ...] = (sub.sizes["time"], sub.sizes["y"], sub.sizes["x"])
    out = xr.Dataset(coords={c: sub[c] for c in ("time", "y", "x")})
    dims: tuple[str, ...] = ("time", "y", "x")
    chunks: tuple[int, ...] = (ct, *shape[1:])
    if members > 1:
        out = out.assign_coords(member=np.arange(members))
        dims, shape, chunks = ("member", *dims), (members, *shape), (1, *chunks)
    for v in variables:
        out[v] = (dims, da.zeros(shape, dtype=np.float32, chunks=chunks), attrs[v])
    if "crs" in sub:
        out["crs"] = sub["crs"].load()
    return out


def _infer_in_memory(
    ctx: StageContext,
    prep: PreparedDataset,
    emulator: Emulator,
    spec: FeatureSpec,
    method: str,
    split: str,
    ranks: InferRanks = SINGLE,
) -> None:
    """Ensembles, conservation and per-variable networks: full domain, one time chunk at a time.

    Each time chunk of the output (``infer.time_block`` steps, default 24) is predicted with its
    own seed (:func:`chunk_seed`), so its members are the same whichever rank draws it; with
    several ``ranks`` each predicts its share of the chunks on its own device.
    """
    variables = ctx.cfg.variable_names
    sub = prep.split(split).ds
    attrs = {v: {**prep.cf_attrs(v), "grid_mapping": "crs"} for v in variables}
    cfg = ctx.cfg.infer
    members = emulator.members if emulator.stochastic else 1
    ct = min(cfg.time_block or MEMORY_TIME_CHUNK, max(1, sub.sizes["time"]))
    template = _member_template(sub, variables, attrs, members, ct)
    template = ctx.stamp(template.assign_attrs(method=method, split=split))
    device = rank_device(resolve_device(cfg.device), ranks)
    share = chunk_share(sub.sizes["time"], ct, ranks)
    with shared_streamed_store(ctx.paths.downscaled(method, split), template, ranks) as writer:
        for k, times in share:
            tensors = load_split(sub.isel(time=times), spec, split, with_target=False)
            seed = chunk_seed(ctx.cfg.seed, k)
            values = unet_prediction(
                emulator, spec, tensors, seed=seed, device=device, bf16=cfg.bf16
            )
            for i, v in enumerate(variables):
                if members > 1:
                    writer.write(v, (slice(None), times), values[:, :, i])
                else:
                    writer.write(v, (times,), values[:, i])
    log.info(
        "infer %s: %d %s steps, %d member(s)%s",
        method,
        sub.sizes["time"],
        split,
        members,
        f", rank {ranks.rank} of {ranks.world} on {device}" if ranks.world > 1 else "",
    )


def run(ctx: StageContext, method: str, split: str = "test") -> None:
    """Downscale the ``split`` time steps with ``method``.

    Under ``torchrun`` (world size above 1) each rank downscales its share of the time chunks on
    its own device into the one output store; baselines run on rank 0 alone.
    """
    baseline = method_kind(ctx.cfg.methods.type_of(method)) == "baseline"
    # threads and determinism from the config (compute), not --threads; runtime/infer_<m>.json
    ctx.compute(method, "cpu" if baseline else ctx.cfg.infer.device, ctx.cfg.infer.bf16)
    prep = PreparedDataset(open_store(ctx.paths.dataset))
    if baseline:
        if int(os.environ.get("RANK", "0")) == 0:
            _infer_baseline(ctx, prep, method, split)
        return
    ranks = setup_ranks()
    try:
        _infer_emulator(ctx, prep, method, split, ranks)
    finally:
        teardown_ranks(ranks)


def _infer_emulator(
    ctx: StageContext, prep: PreparedDataset, method: str, split: str, ranks: InferRanks
) -> None:
    """A trained emulator on the split: tiled streaming for a single deterministic network,
    chunk by chunk on the full domain otherwise."""
    variables = ctx.cfg.variable_names
    model_file = ctx.paths.model(method)
    emulator, spec, card = load_emulator(model_file)
    if spec.variables != variables:
        raise ValueError(
            f"model {str(model_file)!r} predicts {spec.variables}, "
            f"the campaign configures {variables}"
        )
    if emulator.single_net is None:
        _infer_in_memory(ctx, prep, emulator, spec, method, split, ranks)
        return
    model = emulator.single_net
    lr = prep.split(split).lr_dataset(variables)
    check_input(lr, card, spec, str(ctx.paths.dataset))
    static = prep.statics_dataset(spec.statics)
    cfg = ctx.cfg.infer
    device = rank_device(resolve_device(cfg.device), ranks)
    predict = model_predictor(model, device, cfg.bf16, cfg.members)
    members = cfg.members if hasattr(model, "sample") else 1
    attrs = {**provenance_attrs(ctx.config_sha256, ctx.rule), "method": method, "split": split}
    out_path = ctx.paths.downscaled(method, split)
    downscale_to_store(
        predict, spec, lr, static, out_path, cfg, size_multiple(model), members, attrs, ranks
    )
    log.info(
        "infer %s: %d %s steps%s",
        method,
        lr.sizes["time"],
        split,
        f", rank {ranks.rank} of {ranks.world} on {device}" if ranks.world > 1 else "",
    )


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai infer --method M``: relaunched under torchrun on every GPU of the job for an
    emulator on a GPU device; baselines (a few interpolations) and CPU inference in one process."""
    kind = method_kind(ctx.cfg.methods.type_of(args.method))
    gpu_work = kind != "baseline" and ctx.cfg.infer.device != "cpu"
    if not (gpu_work and relaunched_on_every_gpu(args, ctx.threads)):
        run(ctx, args.method)
