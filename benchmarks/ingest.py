"""Peak memory of ``climai ingest`` on a multi-file NetCDF series: short vs 4× longer.

Ingest streams (dask, zarr written by time chunks), so peak RSS must not grow with the length of
the series. The script writes a short series (``--files`` files) and one 4× longer, both by
repeating one day of the toy world (``--nx``² cells, hourly) with shifted times, then ingests each
in a fresh process under ``/usr/bin/time -v`` (alternating, ``--repeats`` times) and prints the
median peak RSS of each and their ratio.

    python benchmarks/ingest.py            # defaults: 6 vs 24 files of 24 steps at 256×256
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from climai.synthetic import TOY_CRS, toy_world
from climai.testing import write_cf_netcdf


def write_series(folder: Path, n_files: int, day: dict, x, y) -> None:
    folder.mkdir(parents=True)
    for i in range(n_files):
        times = pd.date_range("2020-06-01", periods=24, freq="h") + pd.Timedelta(days=i)
        write_cf_netcdf(folder / f"day_{i:04d}.nc", day, x, y, crs=TOY_CRS, times=times)


def peak_rss_mb(config: Path, workdir: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one ``climai ingest`` in a fresh process."""
    start = time.perf_counter()
    out = subprocess.run(
        [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "climai.cli",
            "ingest",
            "--configfile",
            str(config),
            "--threads",
            "2",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)[1])
    return rss_kb / 1024, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=6, help="files (days) of the short series")
    p.add_argument("--nx", type=int, default=256, help="cells per side")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    target, _ = toy_world(seed=0, nx=args.nx, ny=args.nx, steps=24)
    day = {n: (target[n].values, target[n].attrs["units"]) for n in ("pr", "tas")}
    x, y = target["x"].values, target["y"].values
    with tempfile.TemporaryDirectory(prefix="climai-bench-ingest-") as tmp:
        root = Path(tmp)
        sizes = {"short": args.files, "long": 4 * args.files}
        configs = {}
        for name, n in sizes.items():
            write_series(root / name, n, day, x, y)
            cfg = {
                "campaign": f"bench_{name}",
                "data": {
                    "target": {"source": "netcdf", "path": str(root / name / "day_*.nc")},
                    "static": {"x_km": {"source": "derived", "field": "x"}},
                },
            }
            configs[name] = root / f"{name}.yaml"
            configs[name].write_text(yaml.safe_dump(cfg))
        rss: dict[str, list[float]] = {k: [] for k in sizes}
        wall: dict[str, list[float]] = {k: [] for k in sizes}
        for _ in range(args.repeats):
            for name in sizes:
                mb, sec = peak_rss_mb(configs[name], root)
                rss[name].append(mb)
                wall[name].append(sec)
        cells = args.nx * args.nx
        for name, n in sizes.items():
            gb = n * 24 * cells * 4 * 2 / 1e9
            print(
                f"{name:5s}: {n:3d} files, {n * 24:4d} steps × {args.nx}² × 2 vars ({gb:.2f} GB "
                f"float32): peak RSS median {statistics.median(rss[name]):.0f} MB "
                f"{[round(v) for v in rss[name]]}, wall median {statistics.median(wall[name]):.1f} s"
            )
        ratio = statistics.median(rss["long"]) / statistics.median(rss["short"])
        print(f"peak RSS ratio long/short (4× the steps): {ratio:.3f}  (bound: < 1.3)")


if __name__ == "__main__":
    main()
