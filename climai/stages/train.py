"""Rule ``train`` (``climai train --method M``): train an emulator on the prepared dataset.

Relevant settings: ``methods.<method>`` (the emulator's keys: epochs, patch, batch, lr, loss,
channels, init_from, freeze, loader, workers, ...), ``variables``, ``scale``, ``seed``.
Inputs: ``prep/dataset.zarr``, ``prep/stats.json``; the parent's ``model.pt`` when fine-tuned
(``init_from``).
Outputs: ``models/<method>/model.pt`` (weights + model card), ``history.csv`` (per-epoch losses,
lr, samples/s, time; one line appended after every epoch), ``validation.json`` (RMSE/MAE on the
validation patches, bicubic's on the same cells); checkpoints under ``models/<method>/checkpoints/``
while it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from climai.config import ConfigError, EmulatorConfig, stage_slice
from climai.config.slices import split_run_keys
from climai.data.dataset import Collate, MemorySource, PatchDataset, ZarrSource
from climai.data.features import FeatureSpec, feature_spec
from climai.data.prepared import PreparedDataset, split_code, static_key
from climai.io import open_store, write_json
from climai.io.checkpoints import save_model
from climai.io.provenance import code_provenance
from climai.launch import relaunched_on_every_gpu
from climai.manifest import package_versions
from climai.parents import parent_model
from climai.registry import method_kind, method_type
from climai.stages import StageContext, log
from climai.training.distributed import DistContext, barrier, setup_distributed, teardown
from climai.training.finetune import (
    Parent,
    check_compatible,
    group_weights,
    lineage,
    load_parent,
)
from climai.training.guard import guard
from climai.training.history import EpochLog, selection
from climai.training.loop import Loaders, build_model, fit, make_objective
from climai.training.pooled import (
    Source,
    open_sources,
    pooled_grid,
    pooled_loaders,
    pooled_spec,
    source_record,
)
from climai.training.resident import in_memory, source_paths


def store_checksum(path: Path) -> str:
    """sha256 of a zarr store's manifest: every file's relative name and size, and the full
    content of its metadata (``zarr.json``) files. Cheap for any store size; changes whenever a
    chunk is added, removed or rewritten with another length, or any metadata changes."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".snakemake"):
            continue
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        if f.name == "zarr.json":
            h.update(f.read_bytes())
    return h.hexdigest()


def model_card(
    ctx: StageContext,
    method: str,
    spec: FeatureSpec,
    ds: xr.Dataset,
    groups: dict[str, list[str]],
) -> dict[str, Any]:
    """Everything needed to use and trust the model later: config, stats, grids, provenance."""
    mcfg = ctx.cfg.methods.get(method)
    return {
        "method": method,
        "architecture": architecture(mcfg, groups),
        "features": spec.as_dict(),
        # what the training read (its stage slice, without the RUN_KEYS): hashes to
        # config_sha256; the whole config held defaults for every section outside the slice
        "config": split_run_keys(stage_slice(ctx.cfg, "train", method))[0],
        "config_sha256": ctx.config_sha256,
        "grid": {
            "hr_dx": float(ds["x"][1] - ds["x"][0]),
            "hr_dy": float(ds["y"][1] - ds["y"][0]),
            "ny": int(ds.sizes["y"]),
            "nx": int(ds.sizes["x"]),
            "scale": ctx.cfg.scale,
            "crs_wkt": str(ds["crs"].attrs.get("crs_wkt", "")) if "crs" in ds else "",
        },
        "variables": ctx.cfg.variable_names,
        "units": {v.name: v.units for v in ctx.cfg.variables},
        # the stored static fields' units: climai downscale converts a --static field to them
        "static_units": {
            s: str(ds[static_key(s)].attrs["units"])
            for s in spec.statics
            if static_key(s) in ds and "units" in ds[static_key(s)].attrs
        },
        "data_checksums": {
            "dataset_manifest_sha256": store_checksum(ctx.paths.dataset),
            "stats_sha256": hashlib.sha256(ctx.paths.stats.read_bytes()).hexdigest(),
        },
        "provenance": {
            **code_provenance(),
            "torch": str(torch.__version__),
            "python": platform.python_version(),
            "seed": training_seed(ctx, mcfg),
            "dataset_config_sha256": str(ds.attrs.get("config_sha256", "")),
            # the card travels alone (climai downscale): the versions manifest.json records
            "packages": package_versions(),
        },
    }


def training_seed(ctx: StageContext, mcfg: EmulatorConfig) -> int:
    """The seed a method trains (and draws its ensemble members) with: its own ``seed`` key, else
    the campaign's."""
    return ctx.cfg.seed if mcfg.seed is None else mcfg.seed


def architecture(mcfg: EmulatorConfig, groups: dict[str, list[str]]) -> dict[str, Any]:
    """How to rebuild the networks: the method type and its config, the type's weight layout
    (fine-tunable types, e.g. the U-Net's channels), the constraint and the members drawn."""
    mtype = method_type(mcfg.type)
    layout = mtype.layout_of(mcfg, groups) or {"name": "plugin", "groups": groups}
    return {
        **layout,
        "type": mcfg.type,
        "method_config": mcfg.model_dump(mode="json"),
        "constraint": mcfg.constraint,
        "members": mcfg.members if mtype.stochastic else 1,  # type: ignore[attr-defined]
    }


def fine_tuning_parent(
    ctx: StageContext, method: str, spec: FeatureSpec, groups: dict[str, list[str]]
) -> Parent | None:
    """The checked parent model of a fine-tuned method (None: trained from scratch)."""
    path = parent_model(ctx.cfg, method)
    if path is None:
        return None
    key = f"methods.{method}.init_from"
    parent = load_parent(path, key)
    mcfg = ctx.cfg.methods.get(method)
    units = {v.name: v.units for v in ctx.cfg.variables}
    arch = method_type(mcfg.type).layout_of(mcfg, groups)
    if arch is None:
        raise ConfigError(
            f"{key}: method type {mcfg.type!r} cannot be fine-tuned (no weight layout)"
        )
    check_compatible(parent, key, spec, units, arch)
    return parent


def describe_parent(method: str, parent: Parent, ds: xr.Dataset) -> str:
    """A log line: where ``method`` starts from, and a grid spacing that differs from its own."""
    text = f"fine-tuning {method} from {parent.path} ({parent.campaign}/{parent.method})"
    theirs, ours = parent.card.get("grid", {}).get("hr_dx"), float(ds["x"][1] - ds["x"][0])
    if theirs is not None and not np.isclose(abs(theirs), abs(ours)):
        text += f"; the parent was trained on a {abs(theirs):g} m grid, this one is {abs(ours):g} m"
    return text


def lineage_card(mcfg: EmulatorConfig, parent: Parent | None, frozen: list[str]) -> dict[str, Any]:
    """The model card's fine-tuning record: parent chain (nearest first) and what was frozen."""
    if parent is None:
        return {"lineage": []}
    return {
        "lineage": lineage(parent),
        "fine_tuning": {"freeze": list(getattr(mcfg, "freeze", [])), "frozen_parameters": frozen},
    }


def selected_epochs(history: list[dict[str, Any]], epochs: int) -> dict[str, dict[str, Any]]:
    """Per variable group, the epoch whose weights were kept, its val loss, the epochs run and
    whether early stopping ended the run (the model card's ``training``)."""
    groups = dict.fromkeys(str(r.get("group")) for r in history)
    return {g: selection([r for r in history if r.get("group") == g], epochs) for g in groups}


def validation_record(
    method: str,
    mcfg: EmulatorConfig,
    scores: dict[str, dict[str, float]],
    history: list[dict[str, Any]],
    parent: Parent | None,
) -> dict[str, Any]:
    """``validation.json``: the trained model's scores on the val split, and what produced them."""
    val_losses = [row["val_loss"] for row in history if "val_loss" in row]
    return {
        "method": method,
        "split": "val",
        "scope": "fixed validation patches, best epoch's EMA weights, physical units",
        "variables": scores,
        "epochs_run": len(history),
        "best_val_loss": min(val_losses) if val_losses else None,
        "selected": selected_epochs(history, mcfg.epochs),
        "lineage": lineage(parent) if parent is not None else [],
        "config": mcfg.model_dump(mode="json"),
    }


def split_steps(ds: xr.Dataset, split: str) -> int:
    """The number of time steps of ``split`` in the prepared dataset ``ds``."""
    return PreparedDataset(ds).split_size(split)


def use_memory(mcfg: EmulatorConfig, ds: xr.Dataset, variables: list[str]) -> bool:
    """Whether the train and val splits are loaded into RAM (small stores) or streamed: the
    pooled loaders' rule (:func:`climai.training.resident.in_memory`)."""
    return in_memory(PreparedDataset(ds), mcfg, variables)


def memory_source(ds: xr.Dataset, spec: FeatureSpec, split: str) -> MemorySource:
    """The ``split`` of the prepared dataset ``ds`` read into RAM as float32."""
    sub = PreparedDataset(ds).split(split)
    lr = sub.lr_stack(spec.variables).astype(np.float32, copy=False)
    hr = sub.hr_stack(spec.variables).astype(np.float32, copy=False)
    static = sub.static_stack(spec.statics).astype(np.float32)
    return MemorySource(lr, hr, static, pd.DatetimeIndex(sub.times))


def make_loaders(
    ctx: StageContext, mcfg: EmulatorConfig, spec: FeatureSpec, ds: xr.Dataset, world: int
) -> Loaders:
    """Train and val patch datasets over the store (streamed) or over RAM copies of the splits."""
    sources = {}
    for split in ("train", "val"):
        if use_memory(mcfg, ds, spec.variables):
            sources[split] = memory_source(ds, spec, split)
        else:
            sources[split] = ZarrSource(
                ctx.paths.dataset, spec.variables, spec.statics, split_code(split)
            )
    # every val patch is validated (a short last batch), so the val set needs no minimum: it is
    # the same whatever the batch and the number of processes
    lengths = {
        "train": max(mcfg.batch * world, split_steps(ds, "train") * mcfg.patches_per_step),
        "val": max(1, split_steps(ds, "val") * mcfg.patches_per_step),
    }
    seed = training_seed(ctx, mcfg)
    datasets = {
        s: PatchDataset(
            sources[s], mcfg.patch, spec.scale, lengths[s], seed + 1000 * i, mcfg.min_valid
        )
        for i, s in enumerate(("train", "val"))
    }
    return Loaders(
        datasets["train"], datasets["val"], Collate(spec), mcfg.batch, mcfg.workers, seed
    )


def variable_groups(mcfg: EmulatorConfig, variables: list[str]) -> dict[str, list[str]]:
    """``{"all": variables}`` when trained jointly, else one group per variable."""
    return {"all": list(variables)} if mcfg.joint else {v: [v] for v in variables}


def run(ctx: StageContext, method: str) -> None:
    """Train ``method`` on the train split, select on the val split, write model and history.

    Launched by ``torchrun`` with several processes, trains with DDP; only rank 0 writes. An
    interrupted run (SIGTERM, pre-emption) resumes from its latest checkpoint when rerun.
    """
    if method_kind(ctx.cfg.methods.type_of(method)) != "emulator":
        raise ValueError(f"method {method!r} is not trainable")
    mcfg: EmulatorConfig = ctx.cfg.methods.get(method)  # type: ignore[assignment]
    runtime = ctx.compute(method, "auto", mcfg.bf16)  # threads: compute.threads, not --threads
    dist = setup_distributed()
    try:
        _train(ctx, method, mcfg, dist, runtime)
    finally:
        teardown(dist)


def _train(
    ctx: StageContext,
    method: str,
    mcfg: EmulatorConfig,
    dist: DistContext,
    runtime: dict[str, Any],
) -> None:
    ds = open_store(ctx.paths.dataset)
    kinds = [v.kind for v in ctx.cfg.variables]
    sources: dict[str, Source] = {}
    if mcfg.normalisation == "physical":  # one fixed transform: several campaigns, or this one
        spec = pooled_spec(mcfg, ctx.cfg.variable_names, kinds, ctx.cfg.scale)
        paths = source_paths(mcfg, Path(ctx.cfg.results), ctx.cfg.campaign, ctx.paths.dataset)
        units = {v.name: v.units for v in ctx.cfg.variables}
        sources = open_sources(paths, ctx.cfg.variable_names, units, ctx.cfg.scale)
    else:
        stats = json.loads(ctx.paths.stats.read_text())
        spec = feature_spec(ds, ctx.cfg.variable_names, ctx.cfg.scale, stats, kinds)
        spec = replace(spec, time_features=mcfg.time_features)  # the pooled spec's rule too
    groups = variable_groups(mcfg, spec.variables)
    state: dict[str, torch.Tensor] = {}
    history: list[dict[str, Any]] = []
    say = log.info if dist.is_main else (lambda _msg: None)
    ckpt_root = ctx.paths.model(method).parent / "checkpoints"
    parent = fine_tuning_parent(ctx, method, spec, groups)
    if parent is not None:
        say(describe_parent(method, parent, ds))
    scores: dict[str, dict[str, float]] = {}
    frozen: list[str] = []
    epochs = EpochLog(ctx.paths.history(method)) if dist.is_main else None
    identity = {  # resume only a checkpoint of this data and parent
        "dataset_sha256": store_checksum(ctx.paths.dataset),
        "stats_sha256": hashlib.sha256(ctx.paths.stats.read_bytes()).hexdigest(),
        "parent_sha256": parent.sha256 if parent is not None else "",
    }
    guarded: dict[str, dict[str, Any]] = {}
    for group, variables in groups.items():
        gspec = spec.subset(variables)
        if sources:
            loaders = pooled_loaders(mcfg, gspec, sources, training_seed(ctx, mcfg), dist.world)
            say(f"train {method}/{group} on {sorted(sources)}: {loaders.train.counts()} patches")
        else:
            loaders = make_loaders(ctx, mcfg, gspec, ds, dist.world)
        say(
            f"train {method}/{group}: {len(loaders.train)} train / {len(loaders.val)} val patches "
            f"per epoch, {gspec.in_channels} input channels, world size {dist.world}, "
            f"{'in memory' if isinstance(loaders.train.source, MemorySource) else 'streamed'}"
        )
        init = group_weights(parent, group) if parent is not None else None
        result = fit(
            mcfg,
            gspec,
            loaders,
            dist,
            ckpt_root / group,
            ctx.config_sha256,
            log=say,
            init=init,
            on_epoch=(lambda rows, g=group: epochs.record(g, rows)) if epochs else None,
            identity=identity,
        )
        if epochs is not None:
            epochs.finish_group(group, result.history)
        # the guard scores the kept weights where training ran (a GPU run's data are on the GPU)
        net = build_model(mcfg, gspec).to(device=dist.device, memory_format=torch.channels_last)
        net.load_state_dict(result.state_dict)
        group_scores, guarded[group] = guard(
            net,
            loaders,
            make_objective(mcfg, gspec, dist.device),
            dist,
            calibrate=mcfg.calibrate,
            fallback=mcfg.fallback,
            calibrate_by=mcfg.calibrate_by,
            members=int(getattr(mcfg, "members", 1)),
            seed=training_seed(ctx, mcfg),
            log=say,
            blur=mcfg.departure_blur,
        )
        state.update({f"{group}.{k}": v.detach().cpu() for k, v in net.state_dict().items()})
        history += [{**row, "group": group} for row in result.history]
        scores.update(group_scores)
        frozen += [f"{group}.{name}" for name in result.frozen]
    if dist.is_main:
        card = model_card(ctx, method, spec, ds, groups)
        card["runtime"] = runtime
        card.update(lineage_card(mcfg, parent, frozen))
        card["validation"] = scores
        card["training"] = selected_epochs(history, mcfg.epochs)
        card["guard"] = guarded
        if mcfg.calibrate and mcfg.calibrate_by != "noise":  # per variable, for inference
            card["architecture"]["inflation"] = {
                v: float(guarded[g]["calibration"]["inflation"][v])
                for g, vs in groups.items()
                for v in vs
            }
            card["architecture"]["spread_rule"] = mcfg.calibrate_by
        if mcfg.departure_blur:  # the ensemble's departures smoothed at inference too
            card["architecture"]["departure_blur"] = float(mcfg.departure_blur)
        if sources:
            card["training_data"] = source_record(sources)
            if mcfg.train_on:
                card["grid"] = pooled_grid(sources, ctx.cfg.scale)
        record = validation_record(method, mcfg, scores, history, parent)
        record["worse_than_bicubic"] = sorted(
            {v for g in guarded.values() for v in g["worse_than_bicubic"]}
        )
        record["fallback"] = sorted({v for g in guarded.values() for v in g["fallback"]})
        record["guard"] = guarded
        write_json(ctx.paths.validation(method), record)
        save_model(ctx.paths.model(method), state, card)
        shutil.rmtree(ckpt_root, ignore_errors=True)
    barrier(dist)


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai train --method M``: relaunched under torchrun on every GPU (or node) of the job."""
    if not relaunched_on_every_gpu(args, ctx.threads):
        run(ctx, args.method)
