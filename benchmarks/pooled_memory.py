"""What a pooled training's loaders add to the process's memory (issue 19, session 48).

    python benchmarks/pooled_memory.py [HELD ...] [--method unet] [--repeats 3]

For each held-out source (default: knmi and mrms-conus; their ``config/campaigns/transfer-*.yaml``
and the ``train_on`` campaigns' prepared stores under ``results/`` must exist, e.g. after
``bash benchmarks/transfer_protocol.sh``), builds ``method``'s pooled loaders
(:func:`climai.training.pooled.pooled_loaders`, the training's own code) in a fresh process, in
two ways alternated ``repeats`` times:

- ``store``: every ``coarsen_sources`` copy read step by step from its campaign's store (the
  loaders before session 48);
- ``ram``: a copy made from its split already in RAM where it is (the loaders now).

and prints the process's resident memory added by the loaders (``VmRSS`` after minus before,
and the high-water mark ``VmHWM`` minus the RSS before), the bytes of the arrays they hold
(:func:`climai.training.resident.resident_bytes`, what the cost model sizes), the medians and
their ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fresh import alternated, status_mb

REPO = Path(__file__).resolve().parents[1]


def measure(held: str, method: str, mode: str) -> dict[str, float]:
    """One process's figures (run in a child: the heap starts clean)."""
    import torch  # noqa: F401  (imported before the baseline, as the train stage does)

    from climai.config import load_config
    from climai.sizing import campaign_workload
    from climai.training import pooled
    from climai.training.resident import source_paths

    config = REPO / "config" / "campaigns" / f"transfer-{held}.yaml"
    cfg = load_config(str(REPO / "config" / "config.yaml"), str(config))
    m = cfg.methods.get(method)
    paths = source_paths(m, REPO / cfg.results, cfg.campaign, Path())
    units = {v.name: v.units for v in cfg.variables}
    sources = pooled.open_sources(paths, cfg.variable_names, units, cfg.scale)
    spec = pooled.pooled_spec(m, cfg.variable_names, [v.kind for v in cfg.variables], cfg.scale)
    if mode == "store":
        copy = pooled.coarsened_source
        pooled.coarsened_source = lambda *a, **k: copy(*a[:6])  # type: ignore[assignment]
    before = status_mb("VmRSS")
    loaders = pooled.pooled_loaders(m, spec, sources, seed=0, world=1)
    added, peak = status_mb("VmRSS") - before, status_mb("VmHWM") - before
    assert len(loaders.train) > 0
    held_mb = campaign_workload(cfg, method).pooled_bytes / 1e6
    return {"arrays_mb": held_mb, "added_mb": added, "peak_mb": peak}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("held", nargs="*", default=["knmi", "mrms-conus"])
    p.add_argument("--method", default="unet")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=2, metavar=("HELD", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.method, args.child[1])))
        return 0
    print("| held out | method | arrays MB | RSS added MB, store → ram | peak added MB, store → "
          "ram | RSS added / arrays, store → ram | ram / store |")  # fmt: skip
    print("|---|---|---:|---|---|---|---:|")
    for held in args.held:
        cmd = [sys.executable, __file__, "--method", args.method, "--child", held]
        med = alternated({mode: [*cmd, mode] for mode in ("store", "ram")}, args.repeats, REPO)
        s, r = med["store"], med["ram"]
        print(f"| {held} | {args.method} | {r['arrays_mb']:.0f} | {s['added_mb']:.0f} → "
              f"{r['added_mb']:.0f} | {s['peak_mb']:.0f} → {r['peak_mb']:.0f} | "
              f"{s['added_mb'] / r['arrays_mb']:.2f} → {r['added_mb'] / r['arrays_mb']:.2f} | "
              f"{r['added_mb'] / s['added_mb']:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
