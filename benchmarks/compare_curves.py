"""compare drawing evaluate's spectra and quantiles (``curves.json``) against compare streaming
every method's store again (the baseline: what it did before session 46), on a campaign whose
methods were inferred and evaluated.

    python benchmarks/compare_curves.py config/campaigns/transfer-mrms-conus.yaml [--repeats 2]

Where a method has no ``evaluation/<method>/curves.json`` yet (evaluated by older code), its
evaluate runs first with this code (timed and printed: evaluate's own cost, not compare's).
Then the two ways alternate, each in a fresh subprocess with ``--threads`` threads (the compare
rule's on this machine: 2), ``--repeats`` times: ``stream`` (``common_curves`` patched to
return None, so every store is read block by block as before) and ``curves``. Printed: per way
the median wall and CPU seconds (the process, imports included) and peak RSS, and their ratio.
Both write the campaign's evaluation figures and tables (the same files the rule writes).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def context(config: str, threads: int):
    from climai.config import config_sha256, load_config, stage_slice
    from climai.stages import StageContext

    cfg = load_config(str(REPO / "config" / "config.yaml"), str(REPO / config))
    return StageContext(cfg, config_sha256(stage_slice(cfg, "compare", None)), "compare", threads)


def child(config: str, way: str, threads: int) -> None:
    """One compare run; prints its wall, CPU seconds and peak RSS (MB) as JSON."""
    start = time.perf_counter()
    from climai.stages import compare

    if way == "stream":
        compare.common_curves = lambda *args: None  # the code before: every store streamed
    ctx = context(config, threads)
    compare.run(ctx, ctx.cfg.methods.enabled())
    use = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "wall": time.perf_counter() - start,
                "cpu": use.ru_utime + use.ru_stime,
                "rss_mb": use.ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="campaign config, e.g. config/campaigns/transfer-knmi.yaml")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=["stream", "curves"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.config, args.child, args.threads)
        return
    from climai.stages.evaluate import run as evaluate

    ctx = context(args.config, args.threads)
    methods = ctx.cfg.methods.enabled()
    for m in methods:
        if not ctx.paths.curves(m).is_file():
            start = time.perf_counter()
            evaluate(ctx, m)
            print(f"evaluate {m} (to write curves.json): {time.perf_counter() - start:.1f} s")
    runs: dict[str, list[dict[str, float]]] = {"stream": [], "curves": []}
    for r in range(args.repeats):
        for way in runs:
            out = subprocess.run(
                [sys.executable, __file__, args.config, "--child", way, "--threads",
                 str(args.threads)],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            runs[way].append(json.loads(out.strip().splitlines()[-1]))
            print(f"repeat {r} {way}: {runs[way][-1]}", flush=True)
    med = {
        way: {k: statistics.median(x[k] for x in rs) for k in ("wall", "cpu", "rss_mb")}
        for way, rs in runs.items()
    }
    print(f"{ctx.cfg.campaign}: methods {methods}, {args.threads} threads, {args.repeats} repeats")
    for way, m in med.items():
        print(
            f"  {way:7s} wall {m['wall']:8.1f} s  CPU {m['cpu']:8.1f} s  RSS {m['rss_mb']:7.0f} MB"
        )
    s, c = med["stream"], med["curves"]
    print(f"  curves / stream: wall {c['wall'] / s['wall']:.3f}, CPU {c['cpu'] / s['cpu']:.3f}")


if __name__ == "__main__":
    main()
