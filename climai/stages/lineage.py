"""Rule ``lineage`` (``climai lineage``): the parents of every fine-tuned model, for the report.

Relevant settings: ``methods.<name>.init_from`` (which methods are fine-tuned).
Inputs: ``models/<method>/validation.json`` of every fine-tuned method (its model card's lineage).
Outputs: ``evaluation/lineage.html``.
"""

from __future__ import annotations

import argparse

from climai.evaluation.sweep import lineage_html, read_records
from climai.io import write_text
from climai.stages import StageContext


def run(ctx: StageContext, methods: list[str]) -> None:
    """evaluation/lineage.html from the trained methods' validation.json records."""
    records = read_records({m: ctx.paths.validation(m) for m in methods})
    write_text(ctx.paths.lineage, lineage_html(records))


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai lineage [--methods ...]``: the given methods, else every emulator of the campaign (plugins included)."""
    run(ctx, args.methods or ctx.cfg.methods.of_kind("emulator"))
