"""Rule ``export`` (``climai export --method M``): downscaled zarr → CF-1.10 NetCDF per variable.

Relevant settings: ``export`` (compression_level, chunk_xy, institution, references, comment),
``variables`` (names, kinds), ``data.target`` (named in ``source``).
Inputs: ``downscaled/<method>/test.zarr``.
Outputs: ``export/<method>_<var>.nc`` for every variable (compressed, chunked, ``grid_mapping``,
time bounds, ``cell_methods``, the run's provenance), passing the CF-1.10 checks of the IOOS
compliance checker (``tests/unit/test_cf.py``). With ``--threads`` > 1 the fields' chunks are
compressed in threads (:func:`climai.io.netcdf.write_netcdf`: the same variables and values).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import xarray as xr

from climai.config import CampaignConfig, SyntheticConfig
from climai.io import open_store
from climai.io.cf import cf_dataset, cf_encoding
from climai.io.netcdf import write_netcdf
from climai.manifest import input_paths
from climai.stages import StageContext, dask_progress, log


def _utc(seconds: float | None = None) -> str:
    when = (
        dt.datetime.now(dt.UTC) if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def target_description(cfg: CampaignConfig) -> str:
    """What the campaign's target data are: the toy world's parameters or the input files."""
    src = cfg.data.target
    if isinstance(src, SyntheticConfig):
        return (
            f"the climai synthetic toy world (seed {cfg.seed}, {src.ny}×{src.nx} cells of "
            f"{src.dx:g} m, {src.steps} hourly steps from {src.start})"
        )
    paths = input_paths(cfg)
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return f"{src.source} files {shown}" if shown else f"{src.source} data"


def global_attrs(
    ctx: StageContext, hr: xr.Dataset, method: str, split: str, store: Path
) -> dict[str, str]:
    """The CF global attributes of an export: ``institution``/``references``/``comment`` from
    ``export``, ``source`` (code, method and target data) and a ``history`` line for the store's
    creation and one for this export, as the manifest records them (version, commit, config)."""
    export = ctx.cfg.export
    code = f"climai {hr.attrs.get('climai_version', '?')} (commit {hr.attrs.get('climai_commit', '?')})"
    history = [
        f"{_utc(store.stat().st_mtime)}: {code} rule {hr.attrs.get('created_by_rule', 'infer')} "
        f"downscaled the {split} split with method {method} "
        f"(config sha256 {hr.attrs.get('config_sha256', '?')})",
        f"{_utc()}: climai export --method {method} (rule {ctx.rule}, config sha256 "
        f"{ctx.config_sha256}) wrote CF-1.10 NetCDF",
    ]
    attrs = {
        "institution": export.institution,
        "references": export.references,
        "source": f"{code} method {method}; campaign {ctx.cfg.campaign}; target data: "
        f"{target_description(ctx.cfg)}",
        "history": "\n".join(history),
        "campaign": ctx.cfg.campaign,
        "exported_by_rule": ctx.rule,
        "export_config_sha256": ctx.config_sha256,
    }
    if export.comment:
        attrs["comment"] = export.comment
    return attrs


def run(ctx: StageContext, method: str, split: str = "test") -> None:
    """Write ``export/<method>_<var>.nc`` for every variable of ``downscaled/<method>/<split>``."""
    store = ctx.paths.downscaled(method, split)
    hr = open_store(store)
    kinds = {v.name: v.kind for v in ctx.cfg.variables}
    attrs = global_attrs(ctx, hr, method, split, Path(store))
    for var in ctx.cfg.variable_names:
        ds = cf_dataset(hr, [var], kinds, attrs)
        enc = cf_encoding(ds, [var], ctx.cfg.export.compression_level, ctx.cfg.export.chunk_xy)
        with dask_progress():
            write_netcdf(ds, ctx.paths.export(method, var), enc, threads=ctx.threads)
        log.info("export %s %s → %s", method, var, ctx.paths.export(method, var))


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai export --method M``."""
    run(ctx, args.method)
