"""The rules that threads share (issue 24): evaluate's and compare's scoring, export, 1 vs N threads.

    python benchmarks/threads.py                 # 384² HR cells, 240 steps, 1 and 2 threads
    python benchmarks/threads.py --size 256 --steps 120 --threads 1 2 4

Writes seeded synthetic zarr stores once (truth, LR, four predictions, time chunks of 8 steps,
float32), then runs :func:`climai.evaluation.stream.stream_scores` in a fresh subprocess per
(case, threads, repeat), alternating the thread counts, each reporting its wall time and peak RSS:

- ``evaluate``: one prediction against the truth with the LR input, the default metrics
  (``precipitation``: every built-in metric applies but the ensemble ones);
- ``compare``: four predictions at once, no metric but the shared spectra and quantile
  histograms (what compare's scoring pass computes);
- ``export``: one prediction written as NetCDF-4 the way the export rule writes it
  (:func:`climai.io.netcdf.write_netcdf`: float32, ``_FillValue``, shuffle + zlib level 4,
  chunks of 1 × 256 × 256), its chunks compressed in the threads.

Printed: per case and thread count the median wall and CPU seconds (the whole process, imports
included) and peak RSS, the speed-up against one
thread measured in the same run, the RSS added per extra thread, and the largest relative
difference of any metric from the one-thread values (the acceptance: 1e-9; rank counts exact;
export: the sum of the file's values read back).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREDICTIONS = 4


def make_stores(folder: Path, size: int, steps: int) -> None:
    import numpy as np
    import xarray as xr

    rng = np.random.default_rng(0)
    scale = 8
    truth = rng.gamma(0.5, 2.0, (steps, size, size)).astype(np.float32)
    truth[truth < 0.3] = 0.0
    truth[:, : size // 16] = np.nan  # a strip without data (NaN in every store)
    lr = truth.reshape(steps, size // scale, scale, size // scale, scale).mean(axis=(2, 4))
    enc = {"chunks": (8, size, size)}
    xr.DataArray(truth, dims=("time", "y", "x"), name="v").to_dataset().to_zarr(
        folder / "truth.zarr", encoding={"v": enc}
    )
    xr.DataArray(lr, dims=("time", "y", "x"), name="v").to_dataset().to_zarr(
        folder / "lr.zarr", encoding={"v": {"chunks": (8, size // scale, size // scale)}}
    )
    for i in range(PREDICTIONS):
        noise = rng.normal(0.0, 0.5, truth.shape).astype(np.float32)
        pred = np.clip(truth + noise, 0.0, None)
        xr.DataArray(pred, dims=("time", "y", "x"), name="v").to_dataset().to_zarr(
            folder / f"pred{i}.zarr", encoding={"v": enc}
        )


def child(folder: Path, case: str, threads: int) -> None:
    """One timed scoring pass; prints a JSON line (seconds, peak RSS, metrics)."""
    import xarray as xr

    from climai.evaluation.metrics import METRICS
    from climai.evaluation.stream import stream_scores

    def open_(name: str) -> xr.DataArray:
        return xr.open_zarr(folder / f"{name}.zarr")["v"]

    context = {"kind": "precipitation", "scale": 8, "bands": [[2, 4], [4, 8], [8, 16]],
               "wet_threshold": 0.1, "seed": 0}  # fmt: skip
    truth = open_("truth")
    if case == "export":
        import numpy as np

        from climai.io.netcdf import write_netcdf

        ds = open_("pred0").to_dataset()
        enc = {"v": {"dtype": "float32", "zlib": True, "complevel": 4, "shuffle": True,
                     "chunksizes": (1, 256, 256), "_FillValue": 1e20}}  # fmt: skip
        t0 = time.perf_counter()
        write_netcdf(ds, folder / f"export_{threads}.nc", enc, threads=threads)
        seconds = time.perf_counter() - t0
        with xr.open_dataset(folder / f"export_{threads}.nc") as back:
            total = float(np.nansum(back["v"].values, dtype=np.float64))
        print(json.dumps({"seconds": seconds, **_usage(), "metrics": {"sum": total}}))
        return
    if case == "evaluate":
        preds, lr = {"pred": open_("pred0")}, open_("lr")
        names = {"pred": [n for n, m in METRICS.builtins.items() if not m.ensemble_only]}
    else:
        preds, lr, names = {f"p{i}": open_(f"pred{i}") for i in range(PREDICTIONS)}, None, {}
    t0 = time.perf_counter()
    scores = stream_scores(truth, preds, lr, names, context, threads=threads)
    seconds = time.perf_counter() - t0
    flat = {}
    for label, s in scores.items():
        for name, value in s.metrics.items():
            if isinstance(value, dict):
                flat.update({f"{label}.{name}.{k}": v for k, v in value.items()})
            elif isinstance(value, float):
                flat[f"{label}.{name}"] = value
        pair = s.streams.get("spectra", dict).result()  # type: ignore[arg-type]
        flat[f"{label}.power_sum"] = float(pair.pred.sum())
    print(json.dumps({"seconds": seconds, **_usage(), "metrics": flat}))


def _usage() -> dict[str, float]:
    """This process's peak RSS (MB) and CPU seconds (user + system, every thread)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"rss_mb": ru.ru_maxrss / 1024, "cpu_s": ru.ru_utime + ru.ru_stime}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=384, help="HR cells per side")
    p.add_argument("--steps", type=int, default=240, help="time steps of the split")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--make", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], int(args.child[2]))
        return
    if args.make:
        make_stores(Path(args.make), args.size, args.steps)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # in a subprocess: Linux keeps a process's peak RSS across fork and exec, so the
        # children's would otherwise start at the stores' arrays
        make = [sys.executable, __file__, "--make", tmp, "--size", str(args.size),
                "--steps", str(args.steps)]  # fmt: skip
        subprocess.run(make, check=True, capture_output=True, cwd=REPO)
        gb = 4 * args.size**2 * args.steps * (PREDICTIONS + 1) / 1e9
        print(f"{args.size}² cells × {args.steps} steps, {gb:.2f} GB of float32 stores")
        for case in ("evaluate", "compare", "export"):
            runs: dict[int, list[dict]] = {t: [] for t in args.threads}
            for _ in range(args.repeats):
                for t in args.threads:
                    cmd = [sys.executable, __file__, "--child", str(folder), case, str(t)]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
                    runs[t].append(json.loads(out.stdout.strip().splitlines()[-1]))
            base = statistics.median(r["seconds"] for r in runs[args.threads[0]])
            ref = runs[args.threads[0]][0]["metrics"]
            rss0 = max(r["rss_mb"] for r in runs[args.threads[0]])
            for t in args.threads:
                sec = statistics.median(r["seconds"] for r in runs[t])
                cpu = statistics.median(r["cpu_s"] for r in runs[t])
                rss = max(r["rss_mb"] for r in runs[t])
                diff = max(
                    abs(r["metrics"][k] - v) / max(abs(v), 1e-300)
                    for r in runs[t]
                    for k, v in ref.items()
                    if v == v
                )
                per = (rss - rss0) / (t - args.threads[0]) if t != args.threads[0] else 0.0
                print(f"{case:8s} threads {t}: {sec:6.2f} s (median of {args.repeats}; CPU "
                      f"{cpu:.2f} s), speed-up {base / sec:.2f}, peak RSS {rss:.0f} MB "
                      f"(+{per:.0f} MB per thread), max rel. diff {diff:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
