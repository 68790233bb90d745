"""Stage ``infer`` and ``climai downscale``: LR fields → HR fields, tile by tile, streamed to zarr.

``infer`` downscales the campaign's test split (``downscaled/<method>/test.zarr``);
``climai downscale`` applies a model file to any LR dataset with the model's variables, units,
spacing and CRS, with static fields for the new domain from a DEM store or file.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from pyproj import CRS
from tqdm import tqdm

from climai.config import InferConfig, QuantileMappingConfig
from climai.data.features import FeatureSpec, normalised_static
from climai.export import cf_dataset, cf_encoding
from climai.inference.distributed import (
    SINGLE,
    InferRanks,
    chunk_seed,
    chunk_share,
    rank_device,
    setup_ranks,
    teardown_ranks,
)
from climai.inference.predict import (
    Emulator,
    bicubic_prediction,
    load_emulator,
    model_predictor,
    prediction_dataset,
    quantile_mapped_prediction,
    resolve_device,
    size_multiple,
    unet_prediction,
)
from climai.inference.tiling import Predict, Tile, TiledPredictor, TileLayout
from climai.io import open_store, provenance_attrs, shared_streamed_store, write_store
from climai.io.netcdf import write_netcdf
from climai.io.regions import RegionWriter
from climai.models import BASELINES, method_kind
from climai.preprocess.splits import SPLITS
from climai.stage import StageContext, log
from climai.training.stage import load_split

CF_KEYS = ("units", "standard_name", "long_name")


def _spacing(coord: xr.DataArray) -> float:
    values = np.asarray(coord.values, dtype=np.float64)
    return float(values[1] - values[0]) if values.size > 1 else float("nan")


def _crs_wkt(ds: xr.Dataset) -> str:
    if "crs" not in ds.variables:
        return ""
    return str(ds["crs"].attrs.get("crs_wkt", ds["crs"].attrs.get("spatial_ref", "")))


def check_input(lr: xr.Dataset, card: dict[str, Any], spec: FeatureSpec, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` unless ``lr`` has the model's variables, units,
    LR spacing and CRS."""
    missing = [v for v in spec.variables if v not in lr]
    if missing:
        raise ValueError(
            f"input {source!r} lacks variables {missing}; the model needs {spec.variables}, "
            f"the input has {sorted(map(str, lr.data_vars))}"
        )
    for v in spec.variables:
        found, want = lr[v].attrs.get("units"), card["units"][v]
        if found != want:
            raise ValueError(
                f"input {source!r}: variable {v!r} has units {found!r}; the model expects {want!r}"
            )
        if set(lr[v].dims) != {"time", "y", "x"}:
            raise ValueError(
                f"input {source!r}: variable {v!r} has dims {lr[v].dims}; expected (time, y, x)"
            )
    grid = card["grid"]
    for axis, key in (("x", "hr_dx"), ("y", "hr_dy")):
        want, found = grid[key] * spec.scale, _spacing(lr[axis])
        if not np.isclose(found, want, rtol=1e-3):
            raise ValueError(
                f"input {source!r}: LR spacing along {axis} is {found:g}; the model expects "
                f"{want:g} (HR {grid[key]:g} × scale {spec.scale})"
            )
    want_wkt, found_wkt = grid.get("crs_wkt", ""), _crs_wkt(lr)
    if want_wkt and not found_wkt:
        raise ValueError(
            f"input {source!r} has no CRS (a 'crs' variable with crs_wkt); the model expects "
            f"{CRS.from_wkt(want_wkt).name!r}"
        )
    if want_wkt and CRS.from_wkt(found_wkt) != CRS.from_wkt(want_wkt):
        raise ValueError(
            f"input {source!r} is in CRS {CRS.from_wkt(found_wkt).name!r}; the model expects "
            f"{CRS.from_wkt(want_wkt).name!r}"
        )


def hr_axis(lr: np.ndarray, scale: int) -> np.ndarray:
    """HR cell centres of the LR cells with centres ``lr`` (``scale`` cells per LR cell)."""
    step = (lr[1] - lr[0]) / scale
    first = lr[0] - step * (scale - 1) / 2
    return first + step * np.arange(lr.size * scale)


def static_window(
    static: xr.Dataset, spec: FeatureSpec, y: np.ndarray, x: np.ndarray, source: str
) -> xr.Dataset:
    """The model's static fields on the HR cells ``y`` × ``x``, cut from a (larger) static store."""
    missing = [s for s in spec.statics if s not in static]
    if missing:
        raise ValueError(
            f"static {source!r} lacks fields {missing}; the model needs {spec.statics}"
        )
    index = {}
    for name, want in (("y", y), ("x", x)):
        have = np.asarray(static[name].values, dtype=np.float64)
        step = want[1] - want[0]
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
    return static[spec.statics].isel(index)


def time_block(cfg: InferConfig, layout: TileLayout, variables: int, members: int) -> int:
    """Time steps per block: ``cfg.time_block``, or as many as ``cfg.memory_mb`` allows."""
    if cfg.time_block:
        return cfg.time_block
    per_step = 3 * members * variables * layout.tile[0] * layout.shape[1] * 4
    return max(1, int(cfg.memory_mb * 2**20 // per_step))


def _template(
    lr: xr.Dataset,
    y: np.ndarray,
    x: np.ndarray,
    variables: list[str],
    attrs: dict[str, dict[str, Any]],
    members: int,
    cfg: InferConfig,
    chunks: tuple[int, int, int],
) -> xr.Dataset:
    """An empty (dask) output dataset: ``<var>`` on (time, [member,] y, x), ensemble summaries."""
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
            ds.coords["member"] = ("member", np.arange(members), {"long_name": "ensemble member"})
            dims, shape, chunk = (
                ("time", "member", "y", "x"),
                (nt, members, ny, nx),
                (ct, 1, cy, cx),
            )
        else:
            dims, shape, chunk = ("time", "y", "x"), (nt, ny, nx), (ct, cy, cx)
        ds[v] = (dims, empty(shape, chunk), attrs[v])
        if members > 1 and cfg.ensemble_mean:
            ds[f"{v}_mean"] = (("time", "y", "x"), empty((nt, ny, nx), (ct, cy, cx)), attrs[v])
        if members > 1 and cfg.quantiles:
            nq = len(cfg.quantiles)
            ds.coords["quantile"] = ("quantile", np.asarray(cfg.quantiles, np.float64))
            ds[f"{v}_quantile"] = (
                ("quantile", "time", "y", "x"),
                empty((nq, nt, ny, nx), (nq, ct, cy, cx)),
                attrs[v],
            )
    if "crs" in lr.variables:
        ds["crs"] = lr["crs"].load()
    return ds


def _write_band(
    writer: RegionWriter,
    values: np.ndarray,
    times: slice,
    rows: slice,
    variables: list[str],
    cfg: InferConfig,
) -> None:
    """Write one band ``(T, [M,] V, h, W)`` of every variable (and its ensemble summaries)."""
    ensemble = values.ndim == 5
    for i, v in enumerate(variables):
        field = values[:, :, i] if ensemble else values[:, i]
        writer.write(v, (times, *([slice(None)] if ensemble else []), rows), field)
        if ensemble and cfg.ensemble_mean:
            writer.write(f"{v}_mean", (times, rows), field.mean(axis=1))
        if ensemble and cfg.quantiles:
            q = np.quantile(field, cfg.quantiles, axis=1).astype(np.float32)
            writer.write(f"{v}_quantile", (slice(None), times, rows), q)


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
) -> None:
    """Downscale ``lr`` (variables on (time, y, x)) tile by tile into the zarr store ``output``.

    ``static`` holds the model's static fields on exactly the HR grid of ``lr``. Memory depends on
    the tile, the batch and one band of tile rows, never on the whole domain. Time blocks are the
    store's time chunks; with several ``ranks`` each downscales its share of the blocks into the
    one store (the same blocks as one process, so the same values).
    """
    y, x = hr_axis(lr["y"].values, spec.scale), hr_axis(lr["x"].values, spec.scale)
    layout = TileLayout.build(
        (lr.sizes["y"], lr.sizes["x"]), spec.scale, cfg.tile, cfg.overlap, multiple
    )
    tb = min(time_block(cfg, layout, len(spec.variables), members), lr.sizes["time"])
    stride = max(spec.scale, cfg.tile - cfg.overlap)
    chunks = (tb, min(y.size, stride), min(x.size, stride))
    var_attrs = {
        v: {**{k: lr[v].attrs[k] for k in CF_KEYS if k in lr[v].attrs}, "grid_mapping": "crs"}
        for v in spec.variables
    }
    template = _template(lr, y, x, spec.variables, var_attrs, members, cfg, chunks)
    template = template.assign_attrs(attrs)
    tiled = TiledPredictor(predict, spec, layout, cfg.batch)

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

    nt = lr.sizes["time"]
    share = chunk_share(nt, tb, ranks)
    mine = sum(times.stop - times.start for _, times in share)
    log.info(
        "downscale: %d×%d LR → %d×%d HR, %d steps, %d tiles of %s, %d steps per block",
        lr.sizes["y"], lr.sizes["x"], y.size, x.size, nt, len(layout), layout.tile, tb,
    )  # fmt: skip
    if ranks.world > 1:
        log.info("rank %d of %d: %d of the %d steps", ranks.rank, ranks.world, mine, nt)
    bar = tqdm(
        total=mine * len(layout), unit="tile", file=sys.stderr, disable=not cfg.progress,
        mininterval=2.0, desc="downscale",
    )  # fmt: skip
    with bar, shared_streamed_store(output, template, ranks) as writer:
        for _, times in share:
            block = lr.isel(time=times)
            values = np.stack([block[v].values for v in spec.variables], axis=1)
            index = pd.DatetimeIndex(block["time"].values)
            for r0, r1, band in tiled.run(values, static_tile, index, bar.update):
                _write_band(writer, band, times, slice(r0, r1), spec.variables, cfg)


def _split_steps(ds: xr.Dataset, split: str) -> slice | np.ndarray:
    """The time indices of ``split``: a slice when contiguous (splits are in time order).

    A slice keeps the store's chunks; dask's take of an index array merges them into one, so
    every rank would read the whole split to get its share.
    """
    idx = np.flatnonzero(ds["split"].values == SPLITS.index(split))
    if idx.size and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _lr_of_split(ds: xr.Dataset, variables: list[str], split: str) -> xr.Dataset:
    """The LR fields of a split of the preprocessed dataset, as ``<var>`` on (time, y, x)."""
    sub = ds.isel(time=_split_steps(ds, split))
    lr = xr.Dataset(
        {
            v: sub[f"lr_{v}"]
            .rename({"y_lr": "y", "x_lr": "x"})
            .assign_attrs(
                {k: sub[f"hr_{v}"].attrs[k] for k in CF_KEYS if k in sub[f"hr_{v}"].attrs}
            )
            for v in variables
        }
    )
    lr = lr.assign_coords(
        y=("y", ds["y"].values.reshape(-1, ds.attrs["scale"]).mean(axis=1), ds["y"].attrs),
        x=("x", ds["x"].values.reshape(-1, ds.attrs["scale"]).mean(axis=1), ds["x"].attrs),
    )
    if "crs" in ds:
        lr["crs"] = ds["crs"]
    return lr


def _quantile_mapping(
    ctx: StageContext, ds: xr.Dataset, sub: xr.Dataset, variables: list[str], method: str
) -> tuple[np.ndarray, dict[str, xr.DataArray]]:
    """Bicubic + empirical quantile mapping fitted on the train split; the fitted tables."""
    qcfg = ctx.cfg.methods.get(method)
    assert isinstance(qcfg, QuantileMappingConfig)
    train = ds.isel(time=np.flatnonzero(ds["split"].values == SPLITS.index("train")))
    values, src_q, tgt_q = quantile_mapped_prediction(
        np.stack([train[f"lr_{v}"].values for v in variables], axis=1),
        np.stack([train[f"hr_{v}"].values for v in variables], axis=1),
        np.stack([sub[f"lr_{v}"].values for v in variables], axis=1),
        ctx.cfg.scale,
        [v.kind for v in ctx.cfg.variables],
        qcfg.quantiles,
        qcfg.max_samples,
        ctx.cfg.seed,
    )
    levels = np.linspace(0.0, 1.0, qcfg.quantiles)
    tables: dict[str, xr.DataArray] = {}
    for i, v in enumerate(variables):
        units = ds[f"hr_{v}"].attrs.get("units", "")
        desc = "fitted on the train split: bicubic-of-LR"
        tables[f"qm_source_{v}"] = xr.DataArray(
            src_q[i],
            {"quantile": levels},
            ("quantile",),
            {"units": units, "long_name": f"{v} quantiles {desc}"},
        )
        tables[f"qm_target_{v}"] = xr.DataArray(
            tgt_q[i],
            {"quantile": levels},
            ("quantile",),
            {"units": units, "long_name": f"{v} quantiles of the HR truth on the train split"},
        )
    return values, tables


def _infer_baseline(ctx: StageContext, ds: xr.Dataset, method: str, split: str) -> None:
    """Baselines on the split (LR fields are 1/scale² of the HR: held in memory)."""
    variables = ctx.cfg.variable_names
    sub = ds.isel(time=np.flatnonzero(ds["split"].values == SPLITS.index(split)))
    tables: dict[str, xr.DataArray] = {}
    kind = ctx.cfg.methods.type_of(method)
    if kind == "quantile-mapping":
        values, tables = _quantile_mapping(ctx, ds, sub, variables, method)
    else:
        lr = np.stack([sub[f"lr_{v}"].values for v in variables], axis=1)
        kinds = [v.kind for v in ctx.cfg.variables]
        values = bicubic_prediction(lr, ctx.cfg.scale, kinds, BASELINES[kind])
    attrs = {
        v: {
            **{k: ds[f"hr_{v}"].attrs[k] for k in CF_KEYS if k in ds[f"hr_{v}"].attrs},
            "grid_mapping": "crs",
        }
        for v in variables
    }
    out = prediction_dataset(values, sub, variables, attrs).assign(tables)
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
    ds: xr.Dataset,
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
    sub = ds.isel(time=_split_steps(ds, split))
    attrs = {
        v: {
            **{k: ds[f"hr_{v}"].attrs[k] for k in CF_KEYS if k in ds[f"hr_{v}"].attrs},
            "grid_mapping": "crs",
        }
        for v in variables
    }
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


def run_infer(ctx: StageContext, method: str, split: str = "test") -> None:
    """Downscale the ``split`` time steps with ``method``.

    Under ``torchrun`` (world size above 1) each rank downscales its share of the time chunks on
    its own device into the one output store; baselines run on rank 0 alone.
    """
    torch.set_num_threads(ctx.threads)
    ds = open_store(ctx.paths.dataset)
    if method_kind(ctx.cfg.methods.type_of(method)) == "baseline":
        if int(os.environ.get("RANK", "0")) == 0:
            _infer_baseline(ctx, ds, method, split)
        return
    ranks = setup_ranks()
    try:
        _infer_emulator(ctx, ds, method, split, ranks)
    finally:
        teardown_ranks(ranks)


def _infer_emulator(
    ctx: StageContext, ds: xr.Dataset, method: str, split: str, ranks: InferRanks
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
        _infer_in_memory(ctx, ds, emulator, spec, method, split, ranks)
        return
    model = emulator.single_net
    lr = _lr_of_split(ds, variables, split)
    check_input(lr, card, spec, str(ctx.paths.dataset))
    static = ds[[f"static_{s}" for s in spec.statics]].rename(
        {f"static_{s}": s for s in spec.statics}
    )
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


def open_input(path: str | Path) -> xr.Dataset:
    """An LR or static dataset from a zarr store or a NetCDF file, lazily."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    if path.is_dir() or path.suffix == ".zarr":
        return open_store(path)
    try:
        return xr.open_dataset(path, chunks={})
    except Exception as err:  # backends raise many types; name the file and keep the cause
        raise ValueError(f"cannot open {str(path)!r} as NetCDF: {err}") from err


def run_downscale(
    model_file: str | Path,
    input_path: str | Path,
    output: str | Path,
    static_path: str | Path | None,
    cfg: InferConfig,
    threads: int,
) -> None:
    """``climai downscale``: apply ``model_file`` to the LR dataset at ``input_path``."""
    torch.set_num_threads(threads)
    emulator, spec, card = load_emulator(model_file)
    if emulator.single_net is None:
        raise ValueError(
            f"model {str(model_file)!r} is an ensemble, conserving or multi-network emulator; "
            "climai downscale streams single deterministic networks only: run such models "
            "through the campaign's infer rule"
        )
    model = emulator.single_net
    lr = open_input(input_path)
    lr = lr.rename({f"lr_{v}": v for v in spec.variables if f"lr_{v}" in lr and v not in lr})
    check_input(lr, card, spec, str(input_path))
    if spec.statics and static_path is None:
        raise ValueError(
            f"model {str(model_file)!r} needs static fields {spec.statics}: pass --static "
            "<store or file> (e.g. the campaign's ingest/static.zarr or a DEM on the HR grid)"
        )
    y, x = hr_axis(lr["y"].values, spec.scale), hr_axis(lr["x"].values, spec.scale)
    static = xr.Dataset()
    if spec.statics:
        static = static_window(open_input(static_path), spec, y, x, str(static_path))  # type: ignore[arg-type]
    predict = model_predictor(model, resolve_device(cfg.device), cfg.bf16, cfg.members)
    members = cfg.members if hasattr(model, "sample") else 1
    attrs = {
        **provenance_attrs(str(card.get("config_sha256", "")), "downscale"),
        "method": str(card.get("method", "")),
        "source_input": str(input_path),
    }
    output = Path(output)
    if output.suffix != ".nc":
        downscale_to_store(
            predict, spec, lr, static, output, cfg, size_multiple(model), members, attrs
        )
        return
    kinds = {v["name"]: v.get("kind", "generic") for v in card["config"]["variables"]}
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
        store = Path(tmp) / "hr.zarr"
        downscale_to_store(
            predict, spec, lr, static, store, cfg, size_multiple(model), members, attrs
        )
        hr = open_store(store)
        write_netcdf(cf_dataset(hr, spec.variables, kinds), output, cf_encoding(hr, spec.variables))
