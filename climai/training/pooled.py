"""Training on several campaigns' prepared datasets at once (``methods.<m>.train_on``).

:func:`pooled_loaders` opens ``<results>/<campaign>/prep/dataset.zarr`` of every campaign named
by ``train_on`` and ``validate_on``, checks that each holds this campaign's variables in the same
units at the same scale, and returns the train patches (drawn in the stated shares, augmented on
request, with each campaign's copies coarsened by ``coarsen_sources`` sharing its share) and the
fixed validation patches (every ``validate_on`` campaign's val split, in order).
:func:`pooled_spec` is the model's feature spec: the fixed physical normalisation, no campaign
static fields (coordinates name a place, not a climate) and, on request, the grid channel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from climai.config import EmulatorConfig
from climai.data.dataset import Collate, MemorySource, PatchDataset, ZarrSource
from climai.data.features import FeatureSpec
from climai.data.pooled import Member, PooledPatches, physical_stats, shares
from climai.data.prepared import GRID_STATIC, PreparedDataset, grid_spacing_km, split_code
from climai.io import open_store
from climai.preprocess.coarsen import coarser_pair
from climai.training.loop import Loaders
from climai.training.resident import in_memory


def pooled_spec(
    mcfg: EmulatorConfig, variables: list[str], kinds: list[str], scale: int
) -> FeatureSpec:
    """The feature spec of a model trained with ``normalisation: physical``."""
    stats = physical_stats(variables, kinds, mcfg.grid_channel)
    statics = [GRID_STATIC] if mcfg.grid_channel else []
    return FeatureSpec(variables, statics, scale, stats, kinds, mcfg.time_features)


@dataclass
class Source:
    """One campaign's prepared dataset."""

    name: str
    path: Path
    ds: xr.Dataset

    @property
    def grid_log2_km(self) -> float:
        return float(np.log2(grid_spacing_km(self.ds)))


def open_sources(
    paths: dict[str, Path], variables: list[str], units: dict[str, str], scale: int
) -> dict[str, Source]:
    """Each campaign's prepared dataset, checked against this campaign's variables, units and
    scale; a missing one names the file and how to make it."""
    out = {}
    for name, path in paths.items():
        if not (path / "zarr.json").is_file():
            raise FileNotFoundError(
                f"train_on/validate_on campaign {name!r}: {str(path)!r} does not exist; prepare "
                f"it first (snakemake {path} --configfile config/campaigns/{name}.yaml)"
            )
        ds = open_store(path)
        prep = PreparedDataset(ds)
        if int(ds.attrs.get("scale", -1)) != scale:
            raise ValueError(f"{str(path)!r} has scale {ds.attrs.get('scale')}; expected {scale}")
        for v in variables:
            found = prep.hr(v).attrs.get("units")
            if found != units[v]:
                raise ValueError(
                    f"{str(path)!r}: variable {v!r} has units {found!r}; expected {units[v]!r}"
                )
        out[name] = Source(name, path, ds)
    return out


def source_record(sources: dict[str, Source]) -> dict[str, dict[str, Any]]:
    """The model card's record of the datasets trained and validated on: each dataset's config
    hash (written by its preprocess), a checksum of its zarr metadata, its grid and steps."""
    record = {}
    for name, s in sources.items():
        h = hashlib.sha256()
        for f in sorted(s.path.rglob("zarr.json")):
            h.update(f.relative_to(s.path).as_posix().encode() + b"\0" + f.read_bytes())
        prep = PreparedDataset(s.ds)
        record[name] = {
            "dataset": str(s.path),
            "config_sha256": str(s.ds.attrs.get("config_sha256", "")),
            "metadata_sha256": h.hexdigest(),
            "grid_km": grid_spacing_km(s.ds),
            "steps": {sp: prep.split_size(sp) for sp in ("train", "val", "test")},
        }
    return record


def _source(
    s: Source, mcfg: EmulatorConfig, spec: FeatureSpec, split: str
) -> MemorySource | ZarrSource:
    """The split of ``s`` in RAM when small (:func:`in_memory`), else streamed from zarr."""
    prep = PreparedDataset(s.ds)
    if in_memory(prep, mcfg, spec.variables):
        sub = prep.split(split)
        lr = sub.lr_stack(spec.variables).astype(np.float32, copy=False)
        hr = sub.hr_stack(spec.variables).astype(np.float32, copy=False)
        return MemorySource(lr, hr, sub.static_stack([]), pd.DatetimeIndex(sub.times))
    return ZarrSource(s.path, spec.variables, [], split_code(split))


def coarsened_source(
    prep: PreparedDataset,
    variables: list[str],
    factor: int,
    split: str,
    patch: int,
    name: str,
    hr: np.ndarray | None = None,
) -> MemorySource:
    """``split`` of ``prep`` coarsened ``factor``× in memory, one time step at a time: HR = the
    block mean of its HR (cut to whole LR blocks of the coarse grid), LR = the block mean of
    that by the scale; a block with under ``min_valid_fraction`` valid cells is missing, as in
    preprocess. ``hr``: that split's HR already in RAM ``(time, variable, y, x)``, read from
    there instead of the store (each step read again leaves its chunks in the heap: the
    mrms-conus-held-out loaders added 504 MB of RSS for 272 MB of arrays, 382 from RAM;
    ``benchmarks/pooled_memory.py``). Raises ``ValueError`` naming ``coarsen_sources`` when a
    patch does not fit."""
    sub, scale = prep.split(split), prep.scale
    frac = float(prep.ds.attrs.get("min_valid_fraction", 0.5))
    ny, nx = (sub.sizes[d] // (factor * scale) * scale for d in ("y", "x"))
    if min(ny, nx) < patch:
        raise ValueError(
            f"coarsen_sources: campaign {name!r}'s HR grid {sub.sizes['y']}×{sub.sizes['x']} "
            f"coarsened {factor}x is {ny}×{nx} cells, smaller than patch={patch}"
        )
    out = np.empty((sub.sizes["time"], len(variables), ny, nx), np.float32)
    lr = np.empty((*out.shape[:2], ny // scale, nx // scale), np.float32)
    for t in range(len(out)):
        full = hr[t] if hr is not None else sub.isel(time=slice(t, t + 1)).hr_stack(variables)[0]
        out[t], lr[t] = coarser_pair(full, factor, scale, frac)
    static = np.zeros((0, ny, nx), np.float32)
    return MemorySource(lr, out, static, pd.DatetimeIndex(sub.times))


def _members(
    sources: dict[str, Source],
    names: list[str],
    mcfg: EmulatorConfig,
    spec: FeatureSpec,
    split: str,
    seed: int,
) -> list[Member]:
    members = []
    for k, name in enumerate(names):
        s = sources[name]
        n = max(1, PreparedDataset(s.ds).split_size(split) * mcfg.patches_per_step)
        source = _source(s, mcfg, spec, split)
        patches = PatchDataset(
            source,
            mcfg.patch,
            spec.scale,
            n,
            seed + 17 * k,
            mcfg.min_valid,
            min_wet=mcfg.min_wet,
        )
        members.append(Member(name, patches, s.grid_log2_km))
        if split != "train":
            continue
        for j, factor in enumerate(mcfg.coarsen_sources, start=1):
            in_ram = source.hr if isinstance(source, MemorySource) else None
            coarse = coarsened_source(
                PreparedDataset(s.ds), spec.variables, factor, split, mcfg.patch, name, in_ram
            )
            patches = PatchDataset(
                coarse,
                mcfg.patch,
                spec.scale,
                n,
                seed + 17 * k + 7919 * j,
                mcfg.min_valid,
                min_wet=mcfg.min_wet,
            )
            grid = s.grid_log2_km + float(np.log2(factor))
            members.append(Member(f"{name}/{factor}x", patches, grid))
    return members


def pooled_loaders(
    mcfg: EmulatorConfig, spec: FeatureSpec, sources: dict[str, Source], seed: int, world: int
) -> Loaders:
    """Train patches from ``train_on`` in the stated shares; val patches from ``validate_on``."""
    train_on = list(mcfg.train_on or sources)
    validate_on = list(mcfg.validate_on or train_on)
    grid = GRID_STATIC in spec.statics
    train_members = _members(sources, train_on, mcfg, spec, "train", seed)
    copies = 1 + len(mcfg.coarsen_sources)  # per campaign, each as long as the original
    # coarsened copies share their campaign's patches: the epoch's budget stays the originals'
    length = mcfg.pooled_patches or sum(len(m.patches) for m in train_members) // copies
    length = max(mcfg.batch * world, length)
    train = PooledPatches(
        train_members,
        length,
        seed,
        np.repeat(shares(train_on, mcfg.train_weights) / copies, copies),
        augment=mcfg.augment,
        grid=grid,
        gain=mcfg.augment_gain,
    )
    val_members = _members(sources, validate_on, mcfg, spec, "val", seed + 1000)
    n_val = sum(len(m.patches) for m in val_members)
    val = PooledPatches(val_members, n_val, seed + 1000, None, augment=False, grid=grid)
    return Loaders(train, val, Collate(spec), mcfg.batch, mcfg.workers, seed)  # type: ignore[arg-type]


def pooled_grid(sources: dict[str, Source], scale: int) -> dict[str, Any]:
    """The model card's ``grid`` of a pooled model: no single spacing or CRS (``climai downscale``
    then checks neither), the scale, and each source's spacing in km."""
    return {
        "hr_dx": None,
        "hr_dy": None,
        "scale": scale,
        "crs_wkt": "",
        "sources_km": {n: grid_spacing_km(s.ds) for n, s in sources.items()},
    }
