"""Rule ``sweep`` (``climai sweep --name N``): rank the variants of a swept method on validation.

Relevant settings: ``methods.<name>.sweep`` (the variants), ``variables``.
Inputs: ``models/<variant>/validation.json`` of every variant (never test metrics).
Outputs: ``evaluation/sweep_<name>.csv``, ``.md``, ``.html`` and ``.png``.
"""

from __future__ import annotations

import argparse

from climai.config import ConfigError
from climai.evaluation.figures import save_figure
from climai.evaluation.sweep import (
    read_records,
    sweep_figure,
    sweep_html,
    sweep_markdown,
    sweep_table,
)
from climai.io import write_text
from climai.stages import StageContext, log


def run(ctx: StageContext, name: str, methods: list[str]) -> None:
    """Rank the variants ``methods`` of sweep ``name``: evaluation/sweep_<name>.csv/.md/.png."""
    if not methods:
        raise ValueError(f"sweep {name!r} has no variants")
    variables = ctx.cfg.variable_names
    records = read_records({m: ctx.paths.validation(m) for m in methods})
    table = sweep_table(records, variables)
    units = {v.name: v.units for v in ctx.cfg.variables}
    write_text(ctx.paths.sweep_csv(name), table.to_csv(index=False))
    write_text(ctx.paths.sweep_md(name), sweep_markdown(table, name, variables, units))
    write_text(ctx.paths.sweep_html(name), sweep_html(table, name))
    fig = sweep_figure(table, name, variables)
    save_figure(fig, ctx.paths.sweep_figure(name))
    best = table.iloc[0]
    log.info(f"sweep {name}: best on val is {best['method']} (score {best['score']:.4g})")


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai sweep --name N [--methods ...]``: the given variants, else the sweep's own."""
    if args.methods is None and args.name not in ctx.cfg.sweeps:
        raise ConfigError(
            f"no method {args.name!r} with a sweep; swept: {', '.join(ctx.cfg.sweeps) or 'none'}"
        )
    run(ctx, args.name, args.methods or ctx.cfg.sweeps[args.name])
