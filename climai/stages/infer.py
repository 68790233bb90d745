"""Rule ``infer`` (``climai infer --method M``): downscale the campaign's test split with a method.

Relevant settings: ``infer`` (tile, overlap, batch, device, bf16, time_block, memory_mb,
ensemble_mean, quantiles), ``methods.<method>`` (ensembles: members; quantile mapping: quantiles,
max_samples), ``variables``, ``scale``, ``seed``.
Inputs: ``prep/dataset.zarr`` (``lr_<var>``, ``static_<name>``, ``split``; quantile mapping also
reads the train split's ``hr_<var>``), ``prep/stats.json``, ``models/<method>/model.pt``
(emulators).
Outputs: ``downscaled/<method>/test.zarr``: ``<var>`` on ``(time, y, x)``, or on
``(member, time, y, x)`` for ensembles; quantile mapping adds its fitted tables;
``runtime/infer_<method>.json`` gets ``engine``: tile (or band) steps seen and skipped (no LR
value; conserving precipitation, also LR all 0). Every method runs through the engine of
``climai downscale`` (climai/inference/downscale.py), streamed by time blocks, which writes the
same values from the same LR input.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from climai.data.prepared import PreparedDataset
from climai.inference.distributed import InferRanks, setup_ranks, teardown_ranks
from climai.inference.downscale import downscale_baseline, downscale_emulator
from climai.inference.engine import EngineStats
from climai.inference.inputs import check_input
from climai.inference.predict import load_emulator
from climai.io import open_store, provenance_attrs, write_json
from climai.launch import relaunched_on_every_gpu
from climai.registry import method_kind, method_type
from climai.stages import StageContext, log


def _infer_baseline(
    ctx: StageContext, prep: PreparedDataset, method: str, split: str, block: tuple[int, int]
) -> EngineStats:
    """A baseline on the split: its method type's ``predict`` fits it (quantile mapping: from
    the train split, streamed), the engine applies it by time blocks and bands
    (:func:`~climai.inference.downscale.downscale_baseline`)."""
    variables = ctx.cfg.variable_names
    baseline = method_type(ctx.cfg.methods.type_of(method)).predictor()(prep, ctx.cfg, method)
    lr = prep.split(split).lr_dataset(variables)
    attrs = {**provenance_attrs(ctx.config_sha256, ctx.rule), "method": method, "split": split}
    out_path = ctx.paths.downscaled(method, split)
    stats = downscale_baseline(
        baseline, variables, ctx.cfg.scale, lr, out_path, ctx.cfg.infer, attrs, block
    )
    log.info("infer %s: %d %s steps", method, lr.sizes["time"], split)
    return stats


def run(
    ctx: StageContext, method: str, split: str = "test", block: tuple[int, int] = (0, 1)
) -> None:
    """Downscale the ``split`` time steps with ``method``.

    Under ``torchrun`` (world size above 1) each rank downscales its share of the time chunks on
    its own device into the one output store; baselines run on rank 0 alone. ``block = (i, n)``
    (every method but a whole-series baseline): only share ``i`` of ``n`` of the time chunks
    (rule ``infer_block``).
    """
    baseline = method_kind(ctx.cfg.methods.type_of(method)) == "baseline"
    # threads and determinism from the config (compute), not --threads; runtime/infer_<m>.json
    record = ctx.compute(method, "cpu" if baseline else ctx.cfg.infer.device, ctx.cfg.infer.bf16)
    prep = PreparedDataset(open_store(ctx.paths.dataset))
    if baseline and block != (0, 1) and method_type(ctx.cfg.methods.type_of(method)).whole_series:
        raise ValueError(
            f"infer of baseline {method!r} (type {ctx.cfg.methods.type_of(method)!r}) needs the "
            "whole series at once: it cannot be split into time blocks"
        )
    if baseline:
        if int(os.environ.get("RANK", "0")) == 0:
            _record(ctx, method, record, [_infer_baseline(ctx, prep, method, split, block)])
        return
    ranks = setup_ranks()
    try:
        stats = _infer_emulator(ctx, prep, method, split, ranks, block)
        shares = ranks.gather(json.dumps(stats.as_dict()))
        if ranks.rank == 0:
            _record(ctx, method, record, [EngineStats(**json.loads(s or "{}")) for s in shares])
    finally:
        teardown_ranks(ranks)


def _record(
    ctx: StageContext, method: str, record: dict[str, Any], stats: list[EngineStats]
) -> None:
    """Add the engine's counts (every rank's) to ``runtime/infer_<method>.json``."""
    total = EngineStats(sum(s.samples for s in stats), sum(s.skipped for s in stats))
    write_json(ctx.paths.runtime(ctx.rule, method), {**record, "engine": total.as_dict()})


def _infer_emulator(
    ctx: StageContext,
    prep: PreparedDataset,
    method: str,
    split: str,
    ranks: InferRanks,
    block: tuple[int, int] = (0, 1),
) -> EngineStats:
    """A trained emulator on the split, through the engine ``climai downscale`` runs
    (:func:`~climai.inference.downscale.downscale_emulator`): the split's LR fields and the
    prepared static fields in, the same values out."""
    variables = ctx.cfg.variable_names
    model_file = ctx.paths.model(method)
    emulator, spec, card = load_emulator(model_file)
    if spec.variables != variables:
        raise ValueError(
            f"model {str(model_file)!r} predicts {spec.variables}, "
            f"the campaign configures {variables}"
        )
    lr = prep.split(split).lr_dataset(variables)
    check_input(lr, card, spec, str(ctx.paths.dataset))
    static = prep.statics_dataset(spec.statics)
    attrs = {**provenance_attrs(ctx.config_sha256, ctx.rule), "method": method, "split": split}
    out_path = ctx.paths.downscaled(method, split)
    stats = downscale_emulator(
        emulator, spec, card, lr, static, out_path, ctx.cfg.infer, attrs, ranks, block=block
    )
    log.info(
        "infer %s: %d %s steps, %d member(s)%s",
        method,
        lr.sizes["time"],
        split,
        emulator.members if emulator.stochastic else 1,
        f", rank {ranks.rank} of {ranks.world}" if ranks.world > 1 else "",
    )
    return stats


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai infer --method M``: relaunched under torchrun on every GPU of the job for an
    emulator on a GPU device; baselines (a few interpolations) and CPU inference in one process."""
    kind = method_kind(ctx.cfg.methods.type_of(args.method))
    gpu_work = kind != "baseline" and ctx.cfg.infer.device != "cpu"
    if not (gpu_work and relaunched_on_every_gpu(args, ctx.threads)):
        run(ctx, args.method)
