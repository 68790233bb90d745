"""The inference engine and ``climai downscale``: LR fields → HR fields, streamed to zarr by
time blocks (:func:`climai.inference.engine.stream_to_store`).

Every emulator (one network or one per variable group, deterministic or an ensemble, conserving
or not) runs tile by tile through :func:`downscale_emulator`, every baseline (bicubic, nearest,
quantile mapping, a plugin's) band by band through :func:`downscale_baseline`: the rule ``infer``
(climai/stages/infer.py) on the campaign's split, ``climai downscale`` (:func:`run_downscale`) on
any LR dataset with the method's variables, units, spacing and CRS, with static fields for the new
domain from a DEM store or file. Given the same LR input, static fields and ``infer`` settings
both write the same values.

A baseline has no model file: bicubic and nearest are defined by the campaign's config alone
(scale, variables), quantile mapping by tables fitted on the campaign's train split. So
``climai downscale --model <baseline method> --configfile <campaign config>`` names the method
instead of a file and rebuilds it from the campaign (quantile mapping refits its tables from the
campaign's prepared dataset, seeded and streamed as ``infer`` fits them: the same tables).

Output: ``<var>`` on ``(time, y, x)``, or ``(member, time, y, x)`` for an ensemble (the order the
evaluate stage reads), chunked by one member, one time block and one tile stride; ensembles may add
``<var>_mean`` ``(time, y, x)`` and ``<var>_quantile`` ``(quantile, time, y, x)``.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from climai.config import CampaignConfig, InferConfig
from climai.data.features import FeatureSpec, normalised_static
from climai.data.prepared import lr_key
from climai.inference.baselines import BaselineBands
from climai.inference.distributed import SINGLE, InferRanks, rank_device
from climai.inference.engine import EngineStats, block_steps, stream_to_store, template
from climai.inference.inputs import (
    as_xy,
    check_crs,
    check_input,
    in_model_units,
    oriented,
    output_format,
    with_crs_variable,
)
from climai.inference.predict import (
    Emulator,
    card_seed,
    emulator_predictor,
    load_emulator,
    resolve_device,
)
from climai.inference.tiling import Predict, Tile, TiledPredictor, TileLayout
from climai.io import open_store, provenance_attrs
from climai.io.atomic import scratch_dir
from climai.io.calendars import to_datetime64
from climai.io.cf import cf_dataset, cf_encoding, completed_attrs, with_bounds
from climai.io.netcdf import write_netcdf
from climai.io.provenance import file_sha256
from climai.io.readers import open_netcdf_glob
from climai.launch import available_cpus
from climai.models.unet import ResidualUNet
from climai.runtime import configure_torch
from climai.units import UnitsError, convert

log = logging.getLogger("climai")


def hr_axis(lr: np.ndarray, scale: int) -> np.ndarray:
    """HR cell centres of the LR cells with centres ``lr`` (``scale`` cells per LR cell)."""
    step = (lr[1] - lr[0]) / scale
    first = lr[0] - step * (scale - 1) / 2
    return first + step * np.arange(lr.size * scale)


def static_window(
    static: xr.Dataset, spec: FeatureSpec, y: np.ndarray, x: np.ndarray, source: str,
    card: dict[str, Any] | None = None,
) -> xr.Dataset:  # fmt: skip
    """The model's static fields on the HR cells ``y`` × ``x``, cut from a (larger) static store
    stored in either direction along each axis; with the model's ``card``, in the CRS and
    converted to the units it was trained with."""
    missing = [s for s in spec.statics if s not in static]
    if missing:
        raise ValueError(
            f"static {source!r} lacks fields {missing}; the model needs {spec.statics}"
        )
    card = card or {}
    check_crs(static, card.get("grid", {}).get("crs_wkt", ""), f"static {source!r}", False)
    for name, units in card.get("static_units", {}).items():
        if name in static and static[name].attrs.get("units", units) != units:
            try:  # e.g. an orography in km for a model trained on metres
                static[name] = convert(static[name], units, name, f" in static {source!r}")
            except UnitsError as err:
                raise ValueError(str(err)) from None
    index = {}
    for name, want in (("y", y), ("x", x)):
        have = np.asarray(static[name].values, dtype=np.float64)
        step = want[1] - want[0]
        if have.size > 1 and (have[1] - have[0]) * step < 0:  # e.g. a DEM stored north to south
            static, have = static.isel({name: slice(None, None, -1)}), have[::-1]
        i0 = int(np.argmin(np.abs(have - want[0])))
        ok = (
            have.size > 1
            and np.isclose(have[1] - have[0], step, rtol=1e-3)
            and abs(have[i0] - want[0]) <= 1e-3 * abs(step)
            and i0 + want.size <= have.size
        )
        if not ok:
            raise ValueError(
                f"static {source!r} does not cover the HR grid along {name}: need "
                f"{want.size} cells from {want[0]:g} every {step:g}, it has {have.size} cells "
                f"from {have[0]:g} every {have[1] - have[0]:g}"
            )
        index[name] = slice(i0, i0 + want.size)
    return static[spec.statics].isel(index).transpose(..., "y", "x")


def time_block(
    cfg: InferConfig, layout: TileLayout, variables: int, members: int, chunk_cells: int = 1
) -> int:
    """Time steps per block: ``cfg.time_block``, or as many as ``cfg.memory_mb`` allows (and
    :data:`~climai.inference.blocks.CHUNK_BYTES` for chunks of ``chunk_cells`` cells a step)."""
    per_step = 3 * members * variables * layout.tile[0] * layout.shape[1] * 4
    return block_steps(cfg, per_step, chunk_cells)


def _var_attrs(lr: xr.Dataset, variables: list[str]) -> dict[str, dict[str, Any]]:
    return {v: {**completed_attrs(lr[v].attrs, v), "grid_mapping": "crs"} for v in variables}


def downscale_to_store(
    predict: Predict,
    spec: FeatureSpec,
    lr: xr.Dataset,
    static: xr.Dataset,
    output: Path,
    cfg: InferConfig,
    multiple: int,
    members: int,
    attrs: dict[str, Any],
    ranks: InferRanks = SINGLE,
    seed: int = 0,
    conserving: bool = False,
    block: tuple[int, int] = (0, 1),
    inflation: list[float] | None = None,
    spread_rule: str = "inflation",
) -> EngineStats:
    """Downscale ``lr`` (variables on (time, y, x)) tile by tile into the zarr store ``output``.

    ``static`` holds the model's static fields on exactly the HR grid of ``lr``. Memory depends on
    the tile, the batch and one band of tile rows, never on the whole domain. Time blocks are the
    store's time chunks; block ``k`` is drawn with ``chunk_seed(seed, k)``; with several ``ranks``
    each downscales its share of the blocks into the one store (the same blocks with the same
    seeds as one process, so the same values). ``conserving``: every HR block mean equals its LR
    value (applied to the blended bands). Tile steps whose LR cells are all missing are not
    computed (written as NaN), nor, conserving precipitation, those whose LR cells are all 0
    (written as 0; :class:`~climai.inference.tiling.TiledPredictor`): the returned counts say
    how many. ``block = (i, n)``: only the time blocks of share ``i`` of ``n`` (contiguous, as
    :func:`chunk_share` deals them; the ``infer_block`` jobs of a split infer), into a store with
    the whole template, gathered by ``infer_gather``. ``inflation`` (ensembles): per variable,
    the factor the members are spread by before the constraint, with ``spread_rule`` (the
    model card's ``calibrate_by``: ``inflation`` scales the departures from the members' mean,
    ``intensity`` sets every cell's spread to the factor × the mean ** 0.75, ``roughness`` to
    the factor × the mean × the coefficient of variation of the LR around the cell).
    """
    y, x = hr_axis(lr["y"].values, spec.scale), hr_axis(lr["x"].values, spec.scale)
    layout = TileLayout.build(
        (lr.sizes["y"], lr.sizes["x"]), spec.scale, cfg.tile, cfg.overlap, multiple
    )
    stride = max(spec.scale, cfg.tile - cfg.overlap)
    chunk_cells = min(y.size, stride) * min(x.size, stride)
    tb = min(time_block(cfg, layout, len(spec.variables), members, chunk_cells), lr.sizes["time"])
    chunks = (tb, min(y.size, stride), min(x.size, stride))
    out = template(lr, y, x, spec.variables, _var_attrs(lr, spec.variables), members, cfg, chunks)
    tiled = TiledPredictor(
        predict, spec, layout, cfg.batch, conserving, members,
        inflation=inflation, spread_rule=spread_rule,
    )  # fmt: skip

    static_rows: dict[int, torch.Tensor] = {}  # static fields of the current tile row only

    def static_tile(t: Tile) -> torch.Tensor:
        if not spec.statics:
            return torch.zeros((0, t.y1 - t.y0, t.x1 - t.x0))
        if t.y0 not in static_rows:
            rows = static[spec.statics].isel(y=slice(t.y0, t.y1)).load()  # one read per row
            static_rows.clear()
            static_rows[t.y0] = normalised_static(
                spec, np.stack([rows[s].values for s in spec.statics])
            )
        return static_rows[t.y0][:, :, t.x0 : t.x1]

    def bands(values: np.ndarray, index: pd.DatetimeIndex, block_seed: int, progress: Any):
        return tiled.run(values, static_tile, index, progress, block_seed)

    log.info(
        "downscale: %d×%d LR → %d×%d HR, %d steps, %d tiles of %s, %d steps per block",
        lr.sizes["y"], lr.sizes["x"], y.size, x.size, lr.sizes["time"], len(layout),
        layout.tile, tb,
    )  # fmt: skip
    stream_to_store(
        bands, lr, spec.variables, out.assign_attrs(attrs), output, cfg, tb, ranks, seed,
        len(layout), block,
    )  # fmt: skip
    stats = EngineStats(tiled.samples, tiled.skipped)
    log.info(
        "downscale: %d tile steps computed, %d skipped (LR input all missing, or all 0 under "
        "multiplicative conservation: %d); the parts computed around the wet LR cells hold "
        "%.3f of those tiles' cells",
        stats.samples - stats.skipped, stats.skipped, tiled.dry,
        tiled.cells[0] / max(1, tiled.cells[1]),
    )  # fmt: skip
    return stats


def downscale_baseline(
    baseline: Any,
    variables: list[str],
    scale: int,
    lr: xr.Dataset,
    output: Path,
    cfg: InferConfig,
    attrs: dict[str, Any],
    block: tuple[int, int] = (0, 1),
) -> EngineStats:
    """The engine for a baseline (a registry ``predict``'s result, :mod:`climai.inference.
    baselines`): ``lr`` downscaled time block by time block and band by band (bands of the
    emulators' chunk height, ``infer.tile - infer.overlap`` HR rows) into ``output``, with the
    baseline's ``extra`` variables; the HR footprint of missing LR cells is NaN. ``block = (i,
    n)``: only share ``i`` of ``n`` of the time blocks (an ``infer_block`` job), as for emulators
    (:func:`downscale_to_store`); a ``whole_series`` baseline has one time block, never split."""
    y, x = hr_axis(lr["y"].values, scale), hr_axis(lr["x"].values, scale)
    stride = max(scale, cfg.tile - cfg.overlap)
    rows = min(y.size, stride - stride % scale)
    if getattr(baseline, "margin", None) is None:  # it needs the whole domain at once
        rows = y.size
    chunk_cells = rows * min(x.size, stride)
    tb = block_steps(cfg, 3 * len(variables) * rows * x.size * 4, chunk_cells)
    tb = min(tb, lr.sizes["time"])
    if getattr(baseline, "whole_series", False):  # per-cell ranks over the whole series (qdm)
        tb = lr.sizes["time"]
        if block != (0, 1):
            raise ValueError("a whole-series baseline (qdm) cannot be split into time blocks")
    chunks = (tb, rows, min(x.size, stride))
    out = template(lr, y, x, variables, _var_attrs(lr, variables), 1, cfg, chunks)
    out = out.assign(getattr(baseline, "extra", {})).assign_attrs(attrs)
    runner = BaselineBands(baseline, scale, rows)
    log.info(
        "downscale: %d×%d LR → %d×%d HR, %d steps, bands of %d rows, %d steps per block",
        lr.sizes["y"], lr.sizes["x"], y.size, x.size, lr.sizes["time"], rows, tb,
    )  # fmt: skip
    stream_to_store(runner, lr, variables, out, output, cfg, tb, SINGLE, 0, 1, block)
    return EngineStats(runner.samples, runner.skipped)


def open_input(path: str | Path) -> xr.Dataset:
    """An LR or static dataset from a zarr store, a NetCDF file or a glob of NetCDF files (a
    scenario run in yearly files, a file per variable: joined as ingest joins them), lazily."""
    if set("*?[") & set(str(path)):
        return with_bounds(open_netcdf_glob(str(path), "--input"))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    if path.is_dir() or path.suffix == ".zarr":
        return open_store(path)
    try:
        ds = xr.open_dataset(path, chunks={})
    except Exception as err:  # backends raise many types; name the file and keep the cause
        raise ValueError(f"cannot open {str(path)!r} as NetCDF: {err}") from err
    return with_bounds(to_datetime64(ds, f"input {str(path)!r}"))  # noleap: calendar kept


def downscale_emulator(
    emulator: Emulator,
    spec: FeatureSpec,
    card: dict[str, Any],
    lr: xr.Dataset,
    static: xr.Dataset,
    output: Path,
    cfg: InferConfig,
    attrs: dict[str, Any],
    ranks: InferRanks = SINGLE,
    members: int | None = None,
    block: tuple[int, int] = (0, 1),
) -> EngineStats:
    """The engine for a trained emulator: the one path of the ``infer`` rule and of
    ``climai downscale``.

    ``lr`` must fit the model (:func:`check_input`); ``static`` holds its static fields on the HR
    grid of ``lr``. An ensemble draws ``members`` (default the model card's, i.e. the method's
    ``members`` key) from the seed the model was trained with; ``constraint: conserve`` makes every
    HR block mean equal its LR value. Each rank runs on its own device.
    """
    device = rank_device(resolve_device(cfg.device), ranks)
    count = (members or emulator.members) if emulator.stochastic else 1
    views = 1 if emulator.stochastic else cfg.self_ensemble
    arch = card.get("architecture", {})
    if views > 1 and not arch.get("method_config", {}).get("augment"):
        raise ValueError(
            f"infer.self_ensemble={views}: the model of method {card.get('method')!r} was not "
            "trained with augment: true, so its predictions are not meant to be averaged over "
            "flips and rotations; set infer.self_ensemble: 1 or retrain with augment: true"
        )
    blur = float(arch.get("departure_blur", 0.0))  # as the calibration smoothed the members
    predict = emulator_predictor(emulator, spec.variables, device, cfg.bf16, count, views, blur)
    conserving = emulator.constraint == "conserve"
    factors = arch.get("inflation")
    rule = arch.get("spread_rule", "inflation")
    if factors and count == 1:  # a calibrated spread needs the members' mean
        raise ValueError(
            f"--members 1: the ensemble of method {card.get('method')!r} is calibrated by "
            f"spreading its members around their mean (calibrate_by: {rule}, factors {factors}); "
            "one member has no mean to spread around and would be the network's raw, "
            "uncalibrated draw: ask for at least 2 members"
        )
    inflation = [float(factors[v]) for v in spec.variables] if factors and count > 1 else None
    check_overlap(emulator, cfg, max(lr.sizes["y"], lr.sizes["x"]) * spec.scale, spec.scale)
    return downscale_to_store(
        predict, spec, lr, static, output, cfg, emulator.multiple, count, attrs, ranks,
        card_seed(card), conserving, block, inflation, rule,
    )  # fmt: skip


def check_overlap(emulator: Emulator, cfg: InferConfig, extent: int, scale: int) -> None:
    """Warn when tiles of an HR domain ``extent`` cells across are not exact: ``infer.overlap``
    under 4 × the U-Nets' receptive radius (a 4-level U-Net at the default overlap)."""
    radius = max(
        (n.receptive_radius for n in emulator.nets.values() if isinstance(n, ResidualUNet)),
        default=0,
    )
    if extent > cfg.tile and cfg.overlap < 4 * radius:
        need = -(-4 * radius // scale) * scale
        log.warning(
            "infer.overlap=%d is under 4 × the model's receptive radius of %d HR cells: tiled "
            "output differs from one pass over the domain near tile seams; set infer.overlap "
            "(--overlap) to at least %d (a multiple of the scale) for exact tiles",
            cfg.overlap, radius, need,
        )  # fmt: skip


def campaign_baseline(
    name: str, campaign: CampaignConfig
) -> tuple[Any, FeatureSpec, dict[str, Any]]:
    """Baseline method ``name`` of ``campaign`` rebuilt as ``infer`` builds it (its registry
    ``predict`` on the campaign's prepared dataset), with a spec and a card-like record of what
    input it fits (variables, units, HR spacing, CRS) for :func:`check_input`."""
    from climai.data.prepared import PreparedDataset
    from climai.registry import method_kind, method_type

    if name not in campaign.methods.enabled() or method_kind(campaign.methods.type_of(name)) != (
        "baseline"
    ):
        baselines = sorted(
            m
            for m in campaign.methods.enabled()
            if method_kind(campaign.methods.type_of(m)) == "baseline"
        )
        raise ValueError(
            f"--model {name!r} is neither a model file nor a baseline method of campaign "
            f"{campaign.campaign!r} (its baselines: {', '.join(baselines) or 'none'})"
        )
    path = campaign.prepared_dir / "dataset.zarr"
    if not path.exists():
        raise FileNotFoundError(
            f"baseline {name!r} is rebuilt from the campaign's prepared dataset {str(path)!r}, "
            "which does not exist: run the campaign's preprocess rule first"
        )
    prep = PreparedDataset(open_store(path))
    baseline = method_type(campaign.methods.type_of(name)).predictor()(prep, campaign, name)
    variables = campaign.variable_names
    spec = FeatureSpec(variables, [], campaign.scale, {}, [v.kind for v in campaign.variables])
    ds = prep.ds
    card = {
        "method": name,
        "units": {v.name: v.units for v in campaign.variables},
        "grid": {
            "hr_dx": float(ds["x"][1] - ds["x"][0]),
            "hr_dy": float(ds["y"][1] - ds["y"][0]),
            "crs_wkt": str(ds["crs"].attrs.get("crs_wkt", "")) if "crs" in ds else "",
        },
        "config_sha256": "",
        "config": {"variables": [v.model_dump() for v in campaign.variables]},
    }
    return baseline, spec, card


def run_downscale(
    model_file: str | Path,
    input_path: str | Path,
    output: str | Path,
    static_path: str | Path | None,
    cfg: InferConfig,
    threads: int | None = None,
    members: int | None = None,
    campaign: CampaignConfig | None = None,
) -> EngineStats:
    """``climai downscale``: apply ``model_file`` to the LR dataset at ``input_path`` (``members``:
    ensemble members instead of the model's own count). ``model_file`` may instead name a
    baseline method of ``campaign`` (:func:`campaign_baseline`): baselines have no model file.
    ``threads`` None: with ``campaign``, the torch threads its infer used for the card's method
    (:meth:`~climai.config.CampaignConfig.torch_threads`: a convolution's last bits can depend on
    the count), else the CPUs this process may use."""
    kind = output_format(output)
    if members is not None and members < 1:
        raise ValueError(f"--members {members}: the number of ensemble members must be at least 1")
    baseline = None
    if campaign is not None and not Path(model_file).exists():
        baseline, spec, card = campaign_baseline(str(model_file), campaign)
    else:
        emulator, spec, card = load_emulator(model_file)
    if threads is None:
        method = str(card.get("method", ""))
        if campaign is None:
            threads = available_cpus()
        elif method in campaign.methods.enabled():
            threads = campaign.torch_threads(method)
        else:  # a model of another campaign's method: this campaign's compute.threads
            threads = campaign.compute.threads
    # the campaign's kernels too (compute.deterministic), as its infer ran them
    configure_torch(max(1, threads), campaign is not None and campaign.compute.deterministic)
    lr = open_input(input_path)
    lr = lr.rename({lr_key(v): v for v in spec.variables if lr_key(v) in lr and v not in lr})
    lr = as_xy(lr, spec.variables, str(input_path))  # e.g. dims lat/lon: y/x
    lr = with_crs_variable(lr, spec.variables, str(input_path))  # any CF grid_mapping
    lr = in_model_units(lr, card["units"], str(input_path))  # e.g. kg m-2 s-1 → mm h-1
    lr = oriented(lr, card["grid"], spec.scale)  # rows north to south: flipped to the model's
    check_input(lr, card, spec, str(input_path))
    lr = lr.assign({v: lr[v].transpose("time", "y", "x") for v in spec.variables})
    deterministic = baseline is not None or not emulator.stochastic
    if members is not None and members > 1 and deterministic:
        raise ValueError(
            f"--members {members}: {str(model_file)!r} (method {card.get('method')!r}) is "
            "deterministic and draws no ensemble members; leave --members out"
        )
    if spec.statics and static_path is None:
        raise ValueError(
            f"model {str(model_file)!r} needs static fields {spec.statics}: pass --static "
            "<store or file> (e.g. the campaign's ingest/static.zarr or a DEM on the HR grid)"
        )
    y, x = hr_axis(lr["y"].values, spec.scale), hr_axis(lr["x"].values, spec.scale)
    static = xr.Dataset()
    if spec.statics:
        static_ds = as_xy(open_input(static_path), spec.statics, str(static_path))  # type: ignore[arg-type]
        static_ds = with_crs_variable(static_ds, spec.statics, str(static_path))
        static = static_window(static_ds, spec, y, x, str(static_path), card)  # type: ignore[arg-type]
    attrs = {
        **provenance_attrs(str(card.get("config_sha256", "")), "downscale"),
        "method": str(card.get("method", "")),
        "source_input": str(Path(input_path).resolve()),
        **({"source_static": str(Path(static_path).resolve())} if static_path else {}),
        "source_model": str(Path(model_file).resolve()) if baseline is None else str(model_file),
        "source_model_sha256": file_sha256(Path(model_file)) if baseline is None else "",
    }

    def engine(store: Path) -> EngineStats:
        if baseline is not None:
            return downscale_baseline(baseline, spec.variables, spec.scale, lr, store, cfg, attrs)
        return downscale_emulator(
            emulator, spec, card, lr, static, store, cfg, attrs, members=members
        )

    output = Path(output)
    if kind == "zarr":
        return engine(output)
    kinds = {v["name"]: v.get("kind", "generic") for v in card["config"]["variables"]}

    with scratch_dir(output) as scratch:  # the zarr store the NetCDF file is made from
        store = scratch / "hr.zarr"
        stats = engine(store)
        hr = open_store(store)
        # --configfile's export section, else the training campaign's (the model card's)
        export = campaign.export.model_dump() if campaign else card["config"].get("export", {})
        meta = {
            k: str(export[k]) for k in ("institution", "references", "comment") if export.get(k)
        }
        meta |= {k: str(v) for k, v in attrs.items() if k.startswith("source_") and v}
        meta["history"] = (
            f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ} climai downscale of "
            f"{attrs['source_input']} with {attrs['source_model']}"
        )
        ds = cf_dataset(hr, spec.variables, kinds, meta)
        level, chunk = export.get("compression_level", 4), export.get("chunk_xy", 256)
        write_netcdf(ds, output, cf_encoding(ds, spec.variables, level, chunk))
    return stats
