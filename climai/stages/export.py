"""Rule ``export`` (``climai export --method M``): downscaled zarr → CF-1.10 NetCDF per variable.

Relevant settings: ``export`` (compression_level, chunk_xy), ``variables`` (names, kinds).
Inputs: ``downscaled/<method>/test.zarr``.
Outputs: ``export/<method>_<var>.nc`` for every variable (compressed, chunked, ``grid_mapping``,
time bounds, ``cell_methods``, the run's provenance).
"""

from __future__ import annotations

import argparse

from climai.io import open_store
from climai.io.cf import cf_dataset, cf_encoding
from climai.io.netcdf import write_netcdf
from climai.stages import StageContext, dask_progress, log


def run(ctx: StageContext, method: str, split: str = "test") -> None:
    """Write ``export/<method>_<var>.nc`` for every variable of ``downscaled/<method>/<split>``."""
    hr = open_store(ctx.paths.downscaled(method, split))
    kinds = {v.name: v.kind for v in ctx.cfg.variables}
    exported_by = {"exported_by_rule": ctx.rule, "export_config_sha256": ctx.config_sha256}
    for var in ctx.cfg.variable_names:
        ds = cf_dataset(hr, [var], kinds, exported_by)
        enc = cf_encoding(ds, [var], ctx.cfg.export.compression_level, ctx.cfg.export.chunk_xy)
        with dask_progress():
            write_netcdf(ds, ctx.paths.export(method, var), enc)
        log.info("export %s %s → %s", method, var, ctx.paths.export(method, var))


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai export --method M``."""
    run(ctx, args.method)
