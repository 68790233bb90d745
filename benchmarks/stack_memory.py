"""Reading a prepared split into RAM: peak memory of the stack (issue 19, session 49).

    python benchmarks/stack_memory.py [CAMPAIGN ...] [--split train] [--repeats 3]

For each campaign (default: knmi, fmi, bom-melbourne, mrms-conus; its ``results/<campaign>/prep/
dataset.zarr`` must exist, e.g. after ``snakemake results/<c>/prep/dataset.zarr --cores 2
--configfile config/campaigns/<c>.yaml``), reads the split's HR and LR fields of every variable
into ``(time, variable, y, x)`` arrays in a fresh process, two ways alternated ``repeats`` times:

- ``concat``: ``np.stack([da.values ...], axis=1)``, the reader before session 49: dask
  concatenates the store's chunks into one array, which ``np.stack`` then copies;
- ``into``: :func:`climai.data.prepared.stack_into`, each chunk written straight into its slot of
  the result (what ``PreparedDataset.hr_stack``/``lr_stack`` do now).

and prints the high-water mark the read added (``VmHWM`` minus the RSS before it), the arrays'
bytes, the wall time, the medians and the ratios ``into / concat``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from fresh import alternated, status_mb

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["knmi", "fmi", "bom-melbourne", "mrms-conus"]


def measure(campaign: str, split: str, mode: str) -> dict[str, float]:
    """One process's figures (run in a child: the heap starts clean)."""
    from climai.data.prepared import PreparedDataset
    from climai.io.stores import open_store

    prep = PreparedDataset(open_store(REPO / "results" / campaign / "prep" / "dataset.zarr"))
    sub = prep.split(split)
    variables = prep.variables
    one = sub.isel(time=slice(0, 1))  # dask, zarr and codecs warmed up outside the figure
    one.hr_stack(variables), one.lr_stack(variables), [one.hr(v).values for v in variables]
    before, t0 = status_mb("VmRSS"), time.perf_counter()
    if mode == "concat":
        hr = np.stack([sub.hr(v).values for v in variables], axis=1)
        lr = np.stack([sub.lr(v).values for v in variables], axis=1)
    else:
        hr, lr = sub.hr_stack(variables), sub.lr_stack(variables)
    wall = time.perf_counter() - t0
    arrays = (hr.nbytes + lr.nbytes) / 2**20
    return {"arrays_mb": arrays, "peak_mb": status_mb("VmHWM") - before, "wall_s": wall}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("campaigns", nargs="*", default=SOURCES)
    p.add_argument("--split", default="train")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=2, metavar=("CAMPAIGN", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.split, args.child[1])))
        return 0
    print("| campaign | split | arrays MB | peak added MB, concat → into | peak / arrays, concat → "
          "into | into / concat, peak | wall s, concat → into |")  # fmt: skip
    print("|---|---|---:|---|---|---:|---|")
    for campaign in args.campaigns:
        cmd = [sys.executable, __file__, "--split", args.split, "--child", campaign]
        med = alternated({mode: [*cmd, mode] for mode in ("concat", "into")}, args.repeats, REPO)
        c, i = med["concat"], med["into"]
        print(f"| {campaign} | {args.split} | {i['arrays_mb']:.0f} | {c['peak_mb']:.0f} → "
              f"{i['peak_mb']:.0f} | {c['peak_mb'] / c['arrays_mb']:.2f} → "
              f"{i['peak_mb'] / i['arrays_mb']:.2f} | {i['peak_mb'] / c['peak_mb']:.2f} | "
              f"{c['wall_s']:.2f} → {i['wall_s']:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
