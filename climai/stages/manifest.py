"""Rule ``manifest`` (``climai manifest``): what the campaign was made of, for reruns and audits.

Relevant settings: the whole validated config (recorded with its sha256), ``data.*.path`` (the
input files identified), ``seed``.
Inputs: every method's ``evaluation/<method>/metrics.json`` and ``export/<method>_<var>.nc``, every
emulator's ``model.pt``, ``evaluation/summary.csv`` (the manifest is written last).
Outputs: ``manifest.json``: config and hash, input file identities, package versions, git commit,
platform, and a checksum of the values of every artifact.
"""

from __future__ import annotations

import argparse
import json

from climai.io import write_json
from climai.manifest import build_manifest, input_paths
from climai.stages import StageContext


def run(ctx: StageContext) -> None:
    """Write ``manifest.json`` of the campaign under ``results/<campaign>/``."""
    cfg_json = json.loads(ctx.cfg.model_dump_json())
    manifest = build_manifest(cfg_json, ctx.config_sha256, ctx.paths.root, input_paths(ctx.cfg))
    write_json(ctx.paths.manifest, manifest)


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """``climai manifest``."""
    run(ctx)
