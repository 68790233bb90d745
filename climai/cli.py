"""The ``climai`` command: one subcommand per stage, usable with or without Snakemake.

Examples::

    climai ingest --configfile config/config.yaml
    climai train --configfile config/config.yaml --method unet --threads 2
    climai validate --configfile config/config.yaml --configfile config/campaigns/x.yaml
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from climai import __version__
from climai.config import (
    CampaignConfig,
    ConfigError,
    InferConfig,
    config_sha256,
    from_stage_json,
    json_schema,
    load_config,
    stage_slice,
)
from climai.config.slices import RUN_KEYS_ENV
from climai.launch import PEAK_RSS_LINE, START_LINE, LaunchError, available_cpus, peak_rss_mb
from climai.stages import STAGES, StageContext
from climai.training import TrainingInterrupted

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
    p.add_argument(
        "--threads",
        type=int,
        default=available_cpus(),
        help="the job's CPU cores (default: the allocation's): dask threads of ingest, "
        "preprocess, evaluate, compare and export; train and infer compute with "
        "compute.threads (or methods.<m>.threads) whatever it says, and only share it among "
        "torchrun ranks",
    )
    p.add_argument(
        "--job-log",
        default=None,
        help="the job's log (the rules pass their log:); every attempt is also appended to "
        "attempts/<its name> beside it, since Snakemake deletes a job's log before a retry",
    )
    if method:
        p.add_argument("--method", required=True, help="method name, e.g. unet or bicubic")


def _context(args: argparse.Namespace, stage: str) -> StageContext:
    method = getattr(args, "method", None)
    cfg: CampaignConfig
    if args.config_json is not None:  # a rule's slice, and the run keys the workflow set apart
        cfg, raw = from_stage_json(
            args.config_json, json.loads(os.environ.get(RUN_KEYS_ENV) or "{}")
        )
    else:
        cfg = load_config(*(args.configfile or [DEFAULT_CONFIG]))
        raw = stage_slice(cfg, stage, method)
        if stage in ("train", "infer", "evaluate", "compare"):
            from climai.reuse import check_reused_dataset

            check_reused_dataset(cfg)  # the whole config is here (a stage slice lacks preprocess)
    if method is not None and method not in cfg.methods.enabled():
        raise ConfigError(
            f"method {method!r} is not configured under 'methods'; "
            f"configured: {', '.join(cfg.methods.enabled()) or 'none'}"
        )
    return StageContext(cfg, config_sha256(raw), args.rule or args.command, max(1, args.threads))


def _run_stage(args: argparse.Namespace) -> None:
    """Run the stage ``args.command`` (a rule): its module's ``main(ctx, args)``."""
    stage = STAGES[args.command]
    ctx = _context(args, stage.config_of or stage.name)
    importlib.import_module(stage.module).main(ctx, args)


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a count: it must be at least 1")
    return value


def _option_problem(e: Any) -> str:
    """``--tile 7: ... (config key infer.tile)`` for one of pydantic's errors of InferConfig."""
    msg = str(e["msg"]).removeprefix("Value error, ")
    if not e["loc"]:
        return f"{msg} (options --tile/--overlap or config keys infer.*)"
    key = str(e["loc"][0])
    return f"--{key.replace('_', '-')} {e['input']}: {msg} (config key infer.{key})"


def _downscale(args: argparse.Namespace) -> None:
    from climai.inference.downscale import run_downscale
    from climai.inference.inputs import output_format
    from climai.io.outputs import check_output

    protected = {"model": args.model, "input": args.input, "static": args.static}
    check_output(args.output, args.overwrite, {k: v for k, v in protected.items() if v})
    output_format(args.output)  # a suffix it can write (.zarr, .nc, .nc4), before any reading

    cfg = load_config(*(args.configfile or [DEFAULT_CONFIG])) if args.configfile else None
    infer = cfg.infer if cfg is not None else InferConfig()
    keys = ("tile", "overlap", "batch", "device", "self_ensemble")
    updates = {k: getattr(args, k) for k in keys}
    infer = infer.model_copy(update={k: v for k, v in updates.items() if v is not None})
    if args.no_progress:
        infer = infer.model_copy(update={"progress": False})
    try:
        InferConfig.model_validate(infer.model_dump())
    except ValidationError as err:  # one line per problem, not pydantic's dump
        raise ValueError("; ".join(map(_option_problem, err.errors()))) from None
    try:
        run_downscale(
            args.model, args.input, args.output, args.static, infer, args.threads, args.members,
            campaign=cfg,
        )  # fmt: skip
    except ValueError as err:  # the tiling's checks name infer.*: name the option given instead
        raise ValueError(_as_options(str(err), args)) from None


def _as_options(message: str, args: argparse.Namespace) -> str:
    """``message`` with ``infer.tile=36`` written ``--tile 36 (infer.tile)`` where the option
    was given (so for ``overlap``)."""
    for key in ("tile", "overlap"):
        if getattr(args, key) is not None:
            message = re.sub(rf"\binfer\.{key}=(\d+)", rf"--{key} \1 (infer.{key})", message)
    return message


def _verify(args: argparse.Namespace) -> None:
    from climai.reuse import other_campaigns_inputs
    from climai.verify import verify

    cfg = load_config(*(args.configfile or [DEFAULT_CONFIG]))
    reference = Path(args.reference) if args.reference else cfg.campaign_dir
    reused = (other_campaigns_inputs(cfg), Path(cfg.results))
    results = verify(
        reference, args.configfile or [], cfg.campaign, args.threads, args.device, reused=reused
    )
    for r in results:
        print(f"{'OK  ' if r.ok else 'FAIL'} {r.artifact}: {r.detail}")
    failed = [r for r in results if not r.ok]
    if failed:
        raise VerificationError(
            f"{len(failed)} of {len(results)} artifacts differ from {reference}"
        )
    print(f"verify OK: {len(results)} artifacts of {reference} reproduced")


def _plan(args: argparse.Namespace) -> None:
    from climai.plan import (
        argv_partitions,
        argv_profiles,
        argv_qos,
        beside_snakemake_jobs,
        campaign_jobs,
        campaign_rule_jobs,
        plan_json,
        plan_table,
        set_resources,
        uses_gpus,
        with_qos,
        with_set_resources,
    )
    from climai.sizing import Sizer
    from climai.verify import snakefile

    # as a run reads them: the Snakefile's config/config.yaml first (the workflow checkout's,
    # whatever the working folder), then each --configfile
    files = list(args.configfile or [])
    try:
        default = snakefile().parent / DEFAULT_CONFIG
    except FileNotFoundError:
        default = Path(DEFAULT_CONFIG)
    if default.is_file() and default.resolve() not in {Path(f).resolve() for f in files}:
        files.insert(0, str(default))
    cfg = load_config(*(files or [DEFAULT_CONFIG]))
    # as Snakemake takes it: --profile, else $SNAKEMAKE_PROFILE
    profile = args.profile or next(reversed(argv_profiles([])), None)
    partitions = argv_partitions(["--profile", profile]) if profile else None
    jobs = campaign_jobs(cfg, Sizer.load(partitions, uses_gpus(partitions)), strict=False)
    jobs += campaign_rule_jobs(cfg, profile, partitions)  # config key rules
    jobs = with_set_resources(jobs, set_resources(profile), partitions)  # as a run asks
    jobs = with_qos(jobs, argv_qos(["--profile", profile]) if profile else {})
    if partitions is not None:  # compare, manifest, ... run beside Snakemake while small
        jobs = beside_snakemake_jobs(jobs)
    print(plan_json(jobs) if args.format == "json" else plan_table(cfg, jobs))
    if any(j.problem for j in jobs):
        raise ValueError("jobs that fit no partition: a run with this profile would stop")


class VerificationError(ValueError):
    """A rerun did not reproduce the reference campaign."""


def _validate(args: argparse.Namespace) -> None:
    from climai.config import rule_files
    from climai.io.headers import check_before_jobs

    cfg = load_config(*(args.configfile or [DEFAULT_CONFIG]))
    rules = rule_files(cfg)
    check_before_jobs(cfg, cache=False)  # what the workflow checks before any job, but the sizes
    print(f"config OK: campaign {cfg.campaign!r}, outputs under {cfg.campaign_dir}/")
    for path in rules:
        print(f"rules: Snakemake will include and run the code of {path}")


def _install_profile(args: argparse.Namespace) -> None:
    from pathlib import Path

    from climai.hpc import install_profile

    for name in args.names:
        link = install_profile(
            name,
            Path(args.profiles_dir) if args.profiles_dir else None,
            Path(args.config_dir) if args.config_dir else None,
            args.force,
        )
        print(f"profile {name!r}: {link} -> {link.resolve()}; run `snakemake --profile {name}`")


def _schema(args: argparse.Namespace) -> None:
    if args.markdown:
        from climai.config.docs import config_markdown

        sys.stdout.write(config_markdown())
        return
    print(json.dumps(json_schema(), indent=2, sort_keys=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="climai",
        description="AI downscaling of km-scale fields: one subcommand per campaign stage "
        "(what each Snakemake rule runs), usable without Snakemake.",
    )
    parser.add_argument("--version", action="version", version=f"climai {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES.values():
        p = sub.add_parser(stage.name, help=stage.help)
        _add_common(p, method="method" in stage.options)
        if "methods" in stage.options:
            p.add_argument("--methods", nargs="*", default=None, help="methods (default: all)")
        if "name" in stage.options:
            p.add_argument("--name", required=True, help="the swept method's name")
        for opt in ("block", "blocks"):
            if opt in stage.options:
                p.add_argument(
                    f"--{opt}", type=int, required=True, help=f"time {opt} of a split infer"
                )
        p.set_defaults(func=_run_stage)
    p = sub.add_parser("verify", help="rerun the campaign in a fresh folder and compare outputs")
    p.add_argument("--configfile", action="append", default=None)
    p.add_argument("--reference", default=None, help="campaign folder to compare with")
    p.add_argument(
        "--threads",
        type=int,
        default=available_cpus(),
        help="CPU threads (default: the allocation's)",
    )
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="tolerance set")
    p.set_defaults(func=_verify)
    p = sub.add_parser(
        "downscale", help="apply a model file to new LR data → HR zarr store or NetCDF file"
    )
    p.add_argument(
        "--model",
        required=True,
        help="model file (models/<method>/model.pt), or a baseline method of --configfile",
    )
    p.add_argument("--input", required=True, help="LR zarr store or NetCDF file")
    p.add_argument(
        "--output", required=True, help="HR output: a .zarr store or a .nc (or .nc4) NetCDF file"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output that climai wrote (never the model, the input, or "
        "files climai did not write)",
    )
    p.add_argument("--static", default=None, help="static fields (DEM) on the HR grid or wider")
    p.add_argument(
        "--configfile",
        action="append",
        default=None,
        help="config whose 'infer' section applies, and its 'export' section to a NetCDF "
        "--output (default: the model's campaign's)",
    )
    p.add_argument("--tile", type=int, default=None, help="HR tile edge (overrides infer.tile)")
    p.add_argument("--overlap", type=int, default=None, help="HR tile overlap (infer.overlap)")
    p.add_argument("--batch", type=int, default=None, help="samples per forward (infer.batch)")
    p.add_argument(
        "--members",
        type=_positive_int,
        default=None,
        help="ensemble members, at least 1 (2 for an ensemble whose spread is calibrated by "
        "spreading its members), for an ensemble model only (default: the model's, "
        "methods.<name>.members)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument(
        "--self-ensemble",
        type=int,
        choices=[1, 2, 4, 8],
        default=None,
        help="average a deterministic model over this many flips/rotations of each tile "
        "(infer.self_ensemble; models trained with augment: true)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: with --configfile the threads the campaign's infer used for "
        "this method, methods.<name>.threads or compute.threads: on some CPUs the numbers "
        "depend on them; else the allocation's)",
    )
    p.set_defaults(func=_downscale)
    p = sub.add_parser(
        "plan", help="every job's cores, GPUs, memory, time, partition and the node-hours"
    )
    p.add_argument("--configfile", action="append", default=None)
    p.add_argument(
        "--profile",
        default=None,
        help="Snakemake profile (its partitions.yaml); default: $SNAKEMAKE_PROFILE",
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_plan)
    p = sub.add_parser("validate", help="validate a config and exit")
    p.add_argument("--configfile", action="append", default=None)
    p.set_defaults(func=_validate)
    p = sub.add_parser(
        "install-profile",
        help="link profiles/<name> into ~/.config/snakemake/ for `snakemake --profile <name>`",
    )
    p.add_argument("names", nargs="*", default=["leonardo", "leonardo-debug"], help="profiles")
    p.add_argument("--profiles-dir", default=None, help="folder of profiles (default: checkout's)")
    p.add_argument("--config-dir", default=None, help="target (default: Snakemake's user folder)")
    p.add_argument("--force", action="store_true", help="replace a link to another folder")
    p.set_defaults(func=_install_profile)
    p = sub.add_parser("schema", help="print the config's JSON schema (or its Markdown key table)")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="every key as Markdown tables: climai schema --markdown > config/README.md",
    )
    p.set_defaults(func=_schema)
    return parser


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _keep_attempts(job_log: str) -> logging.FileHandler:
    """Append this process's log lines to ``attempts/<name>`` beside the job's log: Snakemake
    deletes a job's ``log:`` before each attempt, so a retry would lose the first attempt's
    lines (a training's "resumed from", the error that caused the retry)."""
    path = Path(job_log).parent / "attempts" / Path(job_log).name
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``climai`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what `climai train` passes on when it relaunches itself under torchrun
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT, stream=sys.stderr)
    attempts = _keep_attempts(args.job_log) if getattr(args, "job_log", None) else None

    def to_attempts(text: str) -> None:  # what is printed, not logged, goes there too
        if attempts is not None:
            attempts.stream.write(text)
            attempts.flush()

    def say(message: str) -> None:  # the job's log and its attempts file
        print(message, file=sys.stderr)
        to_attempts(message + "\n")

    if args.command in STAGES and "LOCAL_RANK" not in os.environ:  # where this attempt begins
        job = os.environ.get("SLURM_JOB_ID")
        logging.getLogger("climai").info(
            START_LINE.format(
                command=args.command,
                host=os.uname().nodename,
                pid=os.getpid(),
                job=f", SLURM job {job}" if job else "",
            )
        )
    try:
        args.func(args)
        if args.command in STAGES:  # a rule's job: its exact peak memory, for the benchmarks
            logging.getLogger("climai").info(PEAK_RSS_LINE.format(mb=peak_rss_mb()))
    except (ConfigError, FileNotFoundError, ValueError, OSError, LaunchError) as err:
        say(f"climai {args.command}: error: {err}")
        return 1
    except TrainingInterrupted as err:
        say(f"climai {args.command}: {err}; checkpoint written, rerun to resume")
        return 143
    except BaseException:  # a crash: its traceback too (Python prints it to stderr as it ends)
        to_attempts(traceback.format_exc())
        raise
    finally:
        if attempts is not None:  # main() may run again in this process (tests)
            logging.getLogger().removeHandler(attempts)
            attempts.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
