"""The ``climai`` command: one subcommand per stage, usable with or without Snakemake.

Examples::

    climai ingest --configfile config/config.yaml
    climai train --configfile config/config.yaml --method unet --threads 2
    climai validate --configfile config/config.yaml --configfile config/campaigns/x.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from climai.config import (
    CampaignConfig,
    ConfigError,
    config_sha256,
    from_stage_json,
    json_schema,
    load_config,
    stage_slice,
)
from climai.stage import StageContext

DEFAULT_CONFIG = "config/config.yaml"


def _add_common(p: argparse.ArgumentParser, method: bool = False) -> None:
    p.add_argument(
        "--configfile",
        action="append",
        default=None,
        help=f"YAML config file; repeat to merge (default: {DEFAULT_CONFIG})",
    )
    p.add_argument(
        "--config-json",
        default=None,
        help="the stage's config slice as JSON (what the Snakemake rules pass)",
    )
    p.add_argument("--rule", default=None, help="name recorded as created_by_rule")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads to use")
    if method:
        p.add_argument("--method", required=True, help="method name, e.g. unet or bicubic")


def _context(args: argparse.Namespace, stage: str) -> StageContext:
    method = getattr(args, "method", None)
    cfg: CampaignConfig
    if args.config_json is not None:
        cfg, raw = from_stage_json(args.config_json)
    else:
        cfg = load_config(*(args.configfile or [DEFAULT_CONFIG]))
        raw = stage_slice(cfg, stage, method)
    if method is not None and method not in cfg.methods.enabled():
        raise ConfigError(
            f"method {method!r} is not configured under 'methods'; "
            f"configured: {', '.join(cfg.methods.enabled()) or 'none'}"
        )
    return StageContext(cfg, config_sha256(raw), args.rule or args.command, max(1, args.threads))


def _ingest(args: argparse.Namespace) -> None:
    from climai.ingest import run_ingest

    run_ingest(_context(args, "ingest"))


def _preprocess(args: argparse.Namespace) -> None:
    from climai.preprocess.stage import run_preprocess

    run_preprocess(_context(args, "preprocess"))


def _train(args: argparse.Namespace) -> None:
    from climai.training.stage import run_train

    run_train(_context(args, "train"), args.method)


def _infer(args: argparse.Namespace) -> None:
    from climai.inference.stage import run_infer

    run_infer(_context(args, "infer"), args.method)


def _evaluate(args: argparse.Namespace) -> None:
    from climai.evaluation.stage import run_evaluate

    run_evaluate(_context(args, "evaluate"), args.method)


def _compare(args: argparse.Namespace) -> None:
    from climai.evaluation.stage import run_compare

    ctx = _context(args, "evaluate")
    run_compare(ctx, args.methods or ctx.cfg.methods.enabled())


def _validate(args: argparse.Namespace) -> None:
    cfg = load_config(*(args.configfile or [DEFAULT_CONFIG]))
    print(f"config OK: campaign {cfg.campaign!r}, outputs under {cfg.campaign_dir}/")


def _schema(args: argparse.Namespace) -> None:
    print(json.dumps(json_schema(), indent=2, sort_keys=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="climai", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[Callable[[argparse.Namespace], None], str, bool]] = {
        "ingest": (_ingest, "sources → ingest/target.zarr + static.zarr", False),
        "preprocess": (_preprocess, "coarsen, split, normalise → prep/dataset.zarr", False),
        "train": (_train, "train an emulator → models/<method>/model.pt", True),
        "infer": (_infer, "downscale the test split → downscaled/<method>/test.zarr", True),
        "evaluate": (_evaluate, "score a method → evaluation/<method>/metrics.json", True),
        "compare": (_compare, "compare methods → evaluation/comparison.png", False),
    }
    for name, (func, help_text, needs_method) in commands.items():
        p = sub.add_parser(name, help=help_text)
        _add_common(p, method=needs_method)
        if name == "compare":
            p.add_argument("--methods", nargs="*", default=None, help="methods to compare")
        p.set_defaults(func=func)
    p = sub.add_parser("validate", help="validate a config and exit")
    p.add_argument("--configfile", action="append", default=None)
    p.set_defaults(func=_validate)
    p = sub.add_parser("schema", help="print the config's JSON schema")
    p.set_defaults(func=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``climai`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from climai.training.checkpoint import TrainingInterrupted

    try:
        args.func(args)
    except TrainingInterrupted as err:
        print(f"climai {args.command}: {err}; checkpoint written, rerun to resume", file=sys.stderr)
        return 143
    except (ConfigError, FileNotFoundError, ValueError, OSError) as err:
        print(f"climai {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
