"""Stage ``ingest``: sources → ``ingest/target.zarr`` and ``ingest/static.zarr``."""

from __future__ import annotations

from climai.io.stores import write_store
from climai.preprocess.dataset import with_hr_layout
from climai.stage import StageContext, log
from climai.synthetic import toy_world


def run_ingest(ctx: StageContext) -> None:
    """Build the target and static stores of the campaign."""
    cfg = ctx.cfg
    src = cfg.data.target
    target, static = toy_world(
        seed=cfg.seed, nx=src.nx, ny=src.ny, dx=src.dx, steps=src.steps, start=src.start
    )
    names = cfg.variable_names
    missing = [n for n in names if n not in target]
    if missing:
        raise ValueError(
            f"variables {missing} are not in the synthetic toy world; it provides tas, pr"
        )
    # the dataset's HR layout: preprocess then links the shards instead of re-encoding them
    target = with_hr_layout(target[[*names, "crs"]], names)
    log.info(
        "toy world: %s HR cells × %d steps at %g m", target["tas"].shape[1:], src.steps, src.dx
    )
    write_store(ctx.stamp(static), ctx.paths.static)
    write_store(ctx.stamp(target), ctx.paths.target)
