"""Rule ``infer`` (``climai infer --method M``): downscale the campaign's test split with a method.

Relevant settings: ``infer`` (tile, overlap, batch, device, bf16, time_block, memory_mb,
ensemble_mean, quantiles), ``methods.<method>`` (ensembles: members; quantile mapping: quantiles,
max_samples), ``variables``, ``scale``, ``seed``.
Inputs: ``prep/dataset.zarr`` (``lr_<var>``, ``static_<name>``, ``split``; quantile mapping also
reads the train split's ``hr_<var>``), ``prep/stats.json``, ``models/<method>/model.pt``
(emulators).
Outputs: ``downscaled/<method>/test.zarr``: ``<var>`` on ``(time, y, x)``, or on
``(member, time, y, x)`` for ensembles; quantile mapping adds its fitted tables. Emulators run
through the engine of ``climai downscale`` (climai/inference/downscale.py), which writes the same
values from the same LR input.
"""

from __future__ import annotations

import argparse
import os

from climai.data.prepared import PreparedDataset
from climai.inference.distributed import InferRanks, setup_ranks, teardown_ranks
from climai.inference.downscale import check_input, downscale_emulator
from climai.inference.predict import load_emulator, prediction_dataset
from climai.io import open_store, provenance_attrs, write_store
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


def run(
    ctx: StageContext, method: str, split: str = "test", block: tuple[int, int] = (0, 1)
) -> None:
    """Downscale the ``split`` time steps with ``method``.

    Under ``torchrun`` (world size above 1) each rank downscales its share of the time chunks on
    its own device into the one output store; baselines run on rank 0 alone. ``block = (i, n)``
    (emulators only): only share ``i`` of ``n`` of the time chunks (rule ``infer_block``).
    """
    baseline = method_kind(ctx.cfg.methods.type_of(method)) == "baseline"
    # threads and determinism from the config (compute), not --threads; runtime/infer_<m>.json
    ctx.compute(method, "cpu" if baseline else ctx.cfg.infer.device, ctx.cfg.infer.bf16)
    prep = PreparedDataset(open_store(ctx.paths.dataset))
    if baseline and block != (0, 1):
        raise ValueError(f"infer of baseline {method!r} cannot be split into time blocks")
    if baseline:
        if int(os.environ.get("RANK", "0")) == 0:
            _infer_baseline(ctx, prep, method, split)
        return
    ranks = setup_ranks()
    try:
        _infer_emulator(ctx, prep, method, split, ranks, block)
    finally:
        teardown_ranks(ranks)


def _infer_emulator(
    ctx: StageContext,
    prep: PreparedDataset,
    method: str,
    split: str,
    ranks: InferRanks,
    block: tuple[int, int] = (0, 1),
) -> None:
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
    downscale_emulator(
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


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai infer --method M``: relaunched under torchrun on every GPU of the job for an
    emulator on a GPU device; baselines (a few interpolations) and CPU inference in one process."""
    kind = method_kind(ctx.cfg.methods.type_of(args.method))
    gpu_work = kind != "baseline" and ctx.cfg.infer.device != "cpu"
    if not (gpu_work and relaunched_on_every_gpu(args, ctx.threads)):
        run(ctx, args.method)
