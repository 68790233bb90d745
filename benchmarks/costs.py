"""Measure every job of the toy campaign at small sizes: records for the cost model, and the check.

    python benchmarks/costs.py                  # run the sizes (Snakemake, --cores 2), write records
    python benchmarks/costs.py --no-run         # records from campaigns already run
    python benchmarks/costs.py --check          # measured vs predicted per job (the acceptance)
    python benchmarks/costs.py --campaign config/campaigns/mrms-conus.yaml   # a real campaign
    python benchmarks/costs.py --campaign config/campaigns/transfer-mrms-conus.yaml --rules infer
    python benchmarks/costs.py --refresh        # every record's workload from its config, anew

``--campaign CONFIG`` (repeatable) takes the records of a campaign already run with that config
(``snakemake --cores 2 --configfile CONFIG``, from the repository root) instead, and writes them
to ``benchmarks/results/real_<machine>.json``: real grids give the slopes (e.g. MRMS's 24.5 M
cells per step against the toy's 16 k), the toy sizes the intercepts. With ``--rules infer,train``
only those rules' records of those campaigns are replaced there, every other record kept (a
remeasure after a change to one stage).

Each size is the default campaign (config/config.yaml) with another synthetic grid and length,
run in ``results/cost-<ny>x<nx>x<steps>/``; every rule's Snakemake ``benchmark:`` file gives the
job's wall time (``s``) and peak RSS (``max_rss``, MB). The records go to
``benchmarks/results/toy_<machine>.json`` (a JSON list, the format ``benchmarks/fit_costs.py``
reads). ``--check`` sizes each job with the committed coefficients (``climai/costs/``), exactly
as the workflow does, and prints measured against predicted: the acceptance wants peak RSS in
[½, 1] × the requested mem_mb, the time within 2× of the cost model's estimate and under
the requested walltime.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = [(128, 128, 480), (128, 128, 240), (192, 192, 720)]  # (ny, nx, steps); the first: toy


def campaign_name(ny: int, nx: int, steps: int) -> str:
    return f"cost-{ny}x{nx}x{steps}"


def run_size(ny: int, nx: int, steps: int, cores: int) -> None:
    """The default campaign at this size through Snakemake."""
    text = (f"campaign: {campaign_name(ny, nx, steps)}\n"
            f"data:\n  target:\n    nx: {nx}\n    ny: {ny}\n    steps: {steps}\n")  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--snakefile",
           str(REPO / "Snakefile"), "--configfile", str(REPO / "config" / "config.yaml"), f.name]  # fmt: skip
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(cmd, cwd=REPO, env=env, check=True)


def campaign_config(name: str, config: str | None = None):
    """The config of a toy size by its name, or of a real campaign from its ``config`` file."""
    from climai.config import load_config

    if config is not None:
        return load_config(str(REPO / "config" / "config.yaml"), str(REPO / config))
    ny, nx, steps = (int(v) for v in name.removeprefix("cost-").split("x"))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(
            f"campaign: {name}\ndata:\n  target:\n    nx: {nx}\n    ny: {ny}\n    steps: {steps}\n"
        )
    return load_config(str(REPO / "config" / "config.yaml"), f.name)


def job_threads(rule: str, kind: str | None, cfg, method: str | None, cores: int) -> int:
    """The threads a job ran with in a local run of ``cores`` (common.smk's thread functions)."""
    if rule == "preprocess":
        return cores
    if rule in ("train", "infer") and kind == "emulator":
        return min(cfg.torch_threads(method), cores)
    if rule in SCORING_RULES:  # every core, at most the sized cores (common.smk's all_cores)
        return min(cores, planned_cpus(cfg, rule, method))
    return 1


#: Rules whose local threads are the run's cores, at most the cores the cost model sizes.
SCORING_RULES = ("evaluate", "compare", "export", "infer_gather")


def planned_cpus(cfg, rule: str, method: str | None) -> int:
    """The cores the workflow sizes a local run's job of ``rule`` with (climai/sizing.py)."""
    from climai.plan import campaign_plans
    from climai.sizing import Sizer

    plans = campaign_plans(cfg, Sizer.load(None, False)) or {}
    plan = plans.get((rule, method))
    return plan.size.cpus if plan is not None else 1


def read_jobs(campaign_dir: Path) -> dict[str, dict[str, float]]:
    """``{job: {max_rss_mb, sampled_rss_mb, seconds, mean_load}}`` of a campaign folder: wall
    time from Snakemake's ``benchmark:`` files; peak RSS from the job's log, the exact
    high-water mark every ``climai`` stage logs as it ends (``climai.launch.PEAK_RSS_LINE``), or
    else the benchmark file's ``max_rss``, sampled every 0.5 s for 15 s and then every 30 s (it
    misses short peaks: the larger of the two is kept)."""
    from climai.launch import logged_peak_rss_mb

    out = {}
    for tsv in sorted((campaign_dir / "benchmarks").glob("*.tsv")):
        row = next(csv.DictReader(tsv.open(), delimiter="\t"))
        log = campaign_dir / "logs" / f"{tsv.stem}.log"
        exact = logged_peak_rss_mb(log.read_text()) if log.is_file() else None
        sampled = float(row["max_rss"])
        out[tsv.stem] = {"max_rss_mb": max(sampled, exact or 0.0), "sampled_rss_mb": sampled,
                         "seconds": float(row["s"]), "mean_load": float(row["mean_load"])}  # fmt: skip
    return out


def records(
    campaign_dir: Path,
    cores: int,
    config: str | None = None,
    memory_only: bool | None = None,
) -> list[dict]:
    """One record per job of a campaign folder (:func:`read_jobs`). ``config``:
    the campaign's config file, relative to the repository (read over config/config.yaml);
    ``memory_only`` (default: whenever ``config`` is given, a real campaign) marks records whose
    run times the cost model's time lines do not fit."""
    from climai.registry import method_type
    from climai.sizing import campaign_workload

    cfg = campaign_config(campaign_dir.name, config)
    memory_only = bool(config) if memory_only is None else memory_only
    out = []
    for stem, meas in read_jobs(campaign_dir).items():
        rule, _, method = stem.partition("_")
        method = method or None
        if method is not None and method not in cfg.methods.enabled():
            rule, method = stem, None  # sweep_<name>: no method
        kind = method_type(cfg.methods.type_of(method)).kind if method else None
        w = campaign_workload(cfg, method)
        assert w is not None
        workload = {k: v for k, v in w.to_record().items()}
        workload["threads"] = job_threads(rule, kind, cfg, method, cores)
        mtype = cfg.methods.type_of(method) if method else None
        out.append({"rule": rule, "method": method, "kind": kind, "type": mtype, "device": "cpu",
                    **meas, "campaign": campaign_dir.name,
                    **({"config": config} if config else {}),
                    **({"fit": "memory"} if memory_only else {}),
                    "workload": workload})  # fmt: skip
    return out


def refreshed(record: dict, cores: int) -> dict:
    """``record`` with its workload recomputed by the current code from its campaign's config
    (the toy sizes' from their names), its threads and measurements kept."""
    from climai.sizing import campaign_workload

    cfg = campaign_config(record["campaign"], record.get("config"))
    w = campaign_workload(cfg, record["method"])
    assert w is not None
    return record | {"workload": w.to_record() | {"threads": record["workload"]["threads"]}}


def check(recs: list[dict]) -> tuple[str, bool]:
    """Measured vs predicted per job, sized as the workflow sizes it (a local run, no GPU): peak
    RSS against the requested mem_mb (in [½, 1] wanted), the time against the cost model's
    estimate (within 2× wanted) and against the requested walltime (never above it). A real
    campaign's record (``"fit": "memory"``: one run per source, outside the synthetic sizes the
    acceptance names) is judged on memory only, never asked less than it used; its time is
    printed."""
    from climai.cost import Workload
    from climai.sizing import Sizer, size_rule

    sizer = Sizer.load(None, False)
    lines = ["| campaign | rule | method | peak RSS MB | mem_mb asked | RSS / asked | s | "
             "estimate s | s / estimate | walltime asked |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    ok = True
    for r in recs:
        cfg = campaign_config(r["campaign"], r.get("config"))
        w = Workload.from_record(r["workload"])
        plan = size_rule(cfg, r["rule"], r["method"], r["kind"], w, sizer)[0]
        mem_ratio = r["max_rss_mb"] / plan.size.mem_mb
        t_ratio = r["seconds"] / plan.estimate.seconds
        good = mem_ratio <= 1.0  # a real campaign's record: never asked less than it used
        if r.get("fit", "all") != "memory":  # a synthetic size: memory in [½, 1], time in 2×
            good &= mem_ratio >= 0.5 and 0.5 <= t_ratio <= 2.0
            good &= r["seconds"] <= plan.size.runtime * 60
        ok &= good
        lines.append(f"| {r['campaign']} | {r['rule']} | {r['method'] or '-'} | "
                     f"{r['max_rss_mb']:.0f} | {plan.size.mem_mb} | {mem_ratio:.2f} | "
                     f"{r['seconds']:.1f} | {plan.estimate.seconds:.1f} | {t_ratio:.2f} | "
                     f"{plan.size.runtime} min{'' if good else ' ✗'} |")  # fmt: skip
    return "\n".join(lines), ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-run", action="store_true", help="use campaigns already run")
    p.add_argument("--check", action="store_true", help="measured vs predicted, exit 1 on a miss")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--machine", default=None, help="machine kind (default: the cost model's CPU)")
    p.add_argument("--refresh", action="store_true",
                   help="recompute every record's workload from its campaign's config (after "
                        "climai.cost.Workload gains a field); the measurements are kept")  # fmt: skip
    p.add_argument("--campaign", action="append", default=[], metavar="CONFIG",
                   help="records of a real campaign already run with this config file")  # fmt: skip
    p.add_argument("--rules", default="", metavar="RULE[,RULE]",
                   help="with --campaign: replace only these rules' records of those campaigns "
                        "in the real records, keeping every other (default: write the campaigns' "
                        "records alone)")  # fmt: skip
    args = p.parse_args()
    from climai.cost import MACHINES

    machine = args.machine or MACHINES["cpu"]
    results = REPO / "benchmarks" / "results"
    out = results / f"toy_{machine}.json"
    if args.check:
        recs = [r for f in ("toy", "scale", "real") if (results / f"{f}_{machine}.json").is_file()
                for r in json.loads((results / f"{f}_{machine}.json").read_text())]  # fmt: skip
        table, ok = check(recs)
        print(table)
        return 0 if ok else 1
    if args.refresh:
        for path in sorted(results.glob(f"*_{machine}.json")):
            recs = json.loads(path.read_text())
            path.write_text(json.dumps([refreshed(r, args.cores) for r in recs], indent=1) + "\n")
            print(f"{len(recs)} records refreshed → {path}")
        return 0
    if args.campaign:
        real = results / f"real_{machine}.json"
        rules = set(args.rules.split(",")) if args.rules else None
        recs = json.loads(real.read_text()) if rules and real.is_file() else []
        for config in args.campaign:
            name = campaign_config("", config).campaign
            new = [r for r in records(REPO / "results" / name, args.cores, config)
                   if rules is None or r["rule"] in rules]  # fmt: skip
            keys = {(r["campaign"], r["rule"], r["method"]) for r in new}
            recs = [r for r in recs if (r["campaign"], r["rule"], r["method"]) not in keys] + new
        real.write_text(json.dumps(recs, indent=1) + "\n")
        print(f"{len(recs)} records → {real}")
        return 0
    recs = []
    for ny, nx, steps in SIZES:
        folder = REPO / "results" / campaign_name(ny, nx, steps)
        if not args.no_run:
            run_size(ny, nx, steps, args.cores)
        recs += records(folder, args.cores)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(recs, indent=1) + "\n")
    print(f"{len(recs)} records → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
