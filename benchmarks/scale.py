"""Peak memory and time of every rule of the whole campaign at N and 4N time steps (issue 17).

The default campaign (``config/config.yaml``: bicubic, quantile-mapping, unet, unet-crps, then
evaluate, export, compare, lineage and manifest) runs through Snakemake on the synthetic toy world
at ``--steps`` (N) and 4 × ``--steps`` hourly steps of ``--nx`` × ``--ny`` HR cells, each size in a
fresh results folder under ``--workdir``. Every rule's wall time comes from its Snakemake
``benchmark:`` file, its peak RSS from the exact high-water mark the job logs as it ends
(``climai.launch.PEAK_RSS_LINE``; the benchmark file's ``max_rss`` is sampled every 30 s after
the first 15 s and misses short peaks: kept as ``sampled_rss_mb``). Goals per rule: RSS at 4N ≤
1.3 × RSS at N, and ≤ 25 % of the HR data size (float32, every variable) at 4N. Each size's
config is kept beside the records (``benchmarks/results/scale-<ny>x<nx>x<steps>.yaml``), from
which ``benchmarks/costs.py --check`` sizes the jobs.

Only the emulators' cost is shrunk (this measures memory, not skill): ``--channels`` per U-Net
level, one epoch, ``--patches-per-step`` patches per step, ``loader: stream``; unet-crps keeps its
default members. The split is 0.8 / 0.1 / 0.1 (a shorter test split: less inference). Each size's
results are deleted once measured, the work folder at the end (``--keep`` keeps it).

Prints the table rule × (RSS N, RSS 4N, ratio, RSS / HR size, throughput in HR cells per second,
share of the wall time) and writes one record per (size, rule, method) job to
``benchmarks/results/scale_<machine>.json`` (the cost model's input, issue 24)::

    nice -n 5 python benchmarks/scale.py --nx 512 --ny 512 --steps 1024 --workdir /work/scale-run
    python benchmarks/scale.py --nx 64 --ny 64 --steps 48 --workdir /tmp/s   # a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1, "gap": 0}
RSS_RATIO_GOAL = 1.3
RSS_SHARE_GOAL = 0.25


def campaign_config(args: argparse.Namespace, steps: int, results: Path) -> dict[str, Any]:
    """The default campaign on a ``steps``-long toy world, emulators shrunk (module docstring)."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    shrink = {
        "epochs": 1,
        "channels": args.channels,
        "patch": args.patch,
        "patches_per_step": args.patches_per_step,
        "loader": "stream",
    }
    methods = base["methods"]
    methods["unet"].update(shrink)
    methods["unet-crps"].update(shrink)
    base.update(
        campaign=f"scale{steps}",
        results=str(results),
        split=dict(SPLIT),
        compute={"threads": args.cores, "deterministic": False},
    )
    base["data"]["target"].update(nx=args.nx, ny=args.ny, steps=steps)
    base["infer"]["progress"] = False
    base["export"]["compression_level"] = args.compression
    base["preprocess"]["progress"] = False
    return base


def costs_module():
    """benchmarks/costs.py (the toy sizes' records and the check), which reads the jobs."""
    spec = importlib.util.spec_from_file_location("costs", REPO / "benchmarks" / "costs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_file(args: argparse.Namespace, steps: int) -> Path:
    """Where a size's config is kept with the records (``costs.py --check`` sizes from it)."""
    return REPO / "benchmarks" / "results" / f"scale-{args.ny}x{args.nx}x{steps}.yaml"


def size_records(campaign: Path, config: Path, cores: int) -> list[dict[str, Any]]:
    """One cost-model record per job of a finished size (issue 24's format, as
    ``benchmarks/costs.py`` writes for the toy sizes: run times fitted too)."""
    costs = costs_module()
    name = config.relative_to(REPO) if config.is_relative_to(REPO) else config
    return costs.records(campaign, cores, str(name), memory_only=False)


def hr_cells(record: dict[str, Any]) -> int:
    """HR cells (steps × ny × nx × variables) of the data a job reads: the whole series for
    ingest, preprocess and manifest, train + val for train, the test split for the rest (times
    the methods for compare; members not counted)."""
    w = record["workload"]
    per_step = w["ny"] * w["nx"] * w["variables"]
    rule = record["rule"]
    if rule in ("ingest", "preprocess", "manifest"):
        return per_step * w["steps_total"]
    if rule == "train":
        return per_step * (w["steps_train"] + w["steps_val"])
    return per_step * w["steps_test"]


def run_size(args: argparse.Namespace, steps: int) -> list[dict[str, Any]]:
    """Run the campaign at ``steps`` steps; its records (its results are deleted after)."""
    work = args.workdir / f"steps{steps}"
    results = work / "results"
    cfg = campaign_config(args, steps, results)
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = config_file(args, steps)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(args.cores)]
    cmd += ["--configfile", str(cfg_path), "--directory", str(work), "--quiet", "rules"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise SystemExit(f"snakemake failed at {steps} steps (logs under {results})")
    records = size_records(results / cfg["campaign"], cfg_path, args.cores)
    print(f"{steps} steps: campaign wall {wall:.0f} s, {len(records)} jobs", flush=True)
    if not args.keep:
        shutil.rmtree(results)
    return records


def size_of(record: dict[str, Any]) -> tuple[int, int, int]:
    """``(ny, nx, steps)`` of the campaign a record was measured in."""
    w = record["workload"]
    return w["ny"], w["nx"], w["steps_total"]


def table(small: list[dict[str, Any]], large: list[dict[str, Any]]) -> list[str]:
    """Markdown table rule × (RSS N, RSS 4N, ratio, share of HR size, throughput, time share)."""
    by_job = {(r["rule"], r["method"]): r for r in small}
    total = sum(r["seconds"] for r in large)
    hr = large[0]["workload"]["hr_bytes"] / 1e6
    lines = [
        "| rule | method | RSS N (MB) | RSS 4N (MB) | ratio | RSS 4N / HR size | "
        "HR cells/s (4N) | time 4N (s) | share of time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in large:
        s = by_job[(r["rule"], r["method"])]
        ratio = r["max_rss_mb"] / max(s["max_rss_mb"], 1e-9)
        share = r["max_rss_mb"] / hr
        ok = "" if ratio <= RSS_RATIO_GOAL and share <= RSS_SHARE_GOAL else " ✗"
        lines.append(
            f"| {r['rule']} | {r['method'] or '–'} | {s['max_rss_mb']:.0f} | "
            f"{r['max_rss_mb']:.0f} | {ratio:.2f}{ok} | {100 * share:.1f} % | "
            f"{hr_cells(r) / max(r['seconds'], 1e-9):.3g} | {r['seconds']:.0f} | "
            f"{100 * r['seconds'] / total:.0f} % |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nx", type=int, default=512, help="HR cells along x")
    p.add_argument("--ny", type=int, default=512, help="HR cells along y")
    p.add_argument("--steps", type=int, default=1024, help="N: time steps of the smaller run")
    p.add_argument("--workdir", type=Path, required=True, help="work folder (deleted after)")
    p.add_argument("--cores", type=int, default=2, help="snakemake --cores and torch threads")
    p.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--patch", type=int, default=16, help="U-Net training patch (HR cells)")
    p.add_argument("--patches-per-step", type=int, default=1)
    p.add_argument("--compression", type=int, default=1, help="export.compression_level")
    p.add_argument("--machine", default="cpu-2core-epyc", help="slug of the records file")
    p.add_argument("--records", type=Path, default=None, help="default benchmarks/results/")
    p.add_argument("--keep", action="store_true", help="keep the results and the work folder")
    args = p.parse_args()
    args.workdir = args.workdir.resolve()
    if args.workdir.exists() and any(args.workdir.iterdir()):
        raise SystemExit(f"--workdir {args.workdir} is not empty")
    os.environ.setdefault("PYTHONPATH", str(REPO))
    out = args.records or REPO / "benchmarks" / "results" / f"scale_{args.machine}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # records of other grids and lengths stay; this run's sizes replace theirs
    sizes = {(args.ny, args.nx, args.steps), (args.ny, args.nx, 4 * args.steps)}
    kept = (
        [r for r in json.loads(out.read_text()) if size_of(r) not in sizes] if out.is_file() else []
    )
    small = run_size(args, args.steps)  # a failed run keeps its work folder (logs)
    out.write_text(json.dumps(kept + small, indent=1) + "\n")  # kept if the larger run fails
    large = run_size(args, 4 * args.steps)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    out.write_text(json.dumps(kept + small + large, indent=1) + "\n")
    hr_gb = large[0]["workload"]["hr_bytes"] / 1e9
    print(f"HR data at 4N: {hr_gb:.2f} GB float32; records: {out}")
    print("\n".join(table(small, large)))


if __name__ == "__main__":
    main()
