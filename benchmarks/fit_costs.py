"""Regenerate the cost model's coefficients (``climai/costs/<machine>.json``) from measurements.

    python benchmarks/fit_costs.py            # every benchmarks/results/*.json
    python benchmarks/fit_costs.py --dry-run  # print the coefficients, write nothing

Each ``benchmarks/results/<name>_<machine>.json`` is a JSON list of records
``{"rule", "method", "kind", "device", "max_rss_mb", "seconds", "workload": {...}}`` (the toy
sizes of ``benchmarks/costs.py``, the two large sizes of ``benchmarks/scale.py``); the records of
one machine kind are fitted together (:func:`climai.cost.fit`). A machine kind without records
keeps its file (the A100's stated estimates, ``"estimate": true``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine_of(path: Path) -> str:
    """``toy_cpu-2core-epyc.json`` → ``cpu-2core-epyc``."""
    return path.stem.partition("_")[2] or path.stem


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--out", default=None, help="folder of the coefficient files (climai/costs/)")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    from climai.cost import COSTS_DIR, fit

    by_machine: dict[str, list[dict]] = {}
    sources: dict[str, list[str]] = {}
    for path in sorted(Path(args.results).glob("*.json")):
        recs = [r for r in json.loads(path.read_text()) if r.get("seconds") is not None]
        by_machine.setdefault(machine_of(path), []).extend(recs)
        sources.setdefault(machine_of(path), []).append(f"benchmarks/results/{path.name}")
    out_dir = Path(args.out) if args.out else COSTS_DIR
    for machine, recs in sorted(by_machine.items()):
        costs = fit(
            recs, machine, "fitted by benchmarks/fit_costs.py from " + ", ".join(sources[machine])
        )
        text = json.dumps(costs.to_json(), indent=1) + "\n"
        if args.dry_run:
            print(text)
            continue
        (out_dir / f"{machine}.json").write_text(text)
        print(f"{machine}: {len(recs)} records, {len(costs.coefficients)} rule classes → "
              f"{out_dir / (machine + '.json')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
