"""Benchmark of ``climai preprocess`` against the naive xarray path and a plain copy (I/O limit).

Builds a synthetic HR target store (two float32 variables on a 1024² grid, smooth fields with
weather-like noise, Blosc lz4 as ingest writes it) of ``--size-gb`` GB, then times, each run in a
fresh subprocess and each followed by an fsync of every file it wrote:

  climai  the preprocess stage (HR copy + LR block means + train statistics, one pass)
  naive   open_zarr → .coarsen(y=8, x=8).mean() → to_zarr with defaults (what a user writes first)
  copy    read the HR variables shard by shard (climai's fast shard reader), write them with the
          same layout and codec (decode + encode + write: the I/O limit of a preprocess that
          rewrites HR)

It prints each run, the medians, the ratios climai/naive and climai/copy, the peak RSS of the
climai runs at ``--size-gb`` and at twice that size, and a codec comparison of the dataset
layout on a sample. Temporary data go under ``--workdir`` and are deleted at the end.

    python benchmarks/preprocess.py --size-gb 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NY = NX = 1024
SCALE = 8
STEP_BYTES = NY * NX * 4


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_input(root: Path, size_gb: float) -> int:
    """Synthetic target + static stores under ``root/bench/ingest``; returns the HR input bytes."""
    import pandas as pd
    import xarray as xr

    from climai.io import write_store
    from climai.preprocess.dataset import with_hr_layout

    steps = round(size_gb * 1e9 / (2 * STEP_BYTES))
    rng = np.random.default_rng(0)
    y = np.arange(NY) * 500.0
    x = np.arange(NX) * 500.0
    yy, xx = np.meshgrid(np.linspace(0, 6, NY), np.linspace(0, 6, NX), indexing="ij")
    pattern = (np.sin(yy) * np.cos(1.3 * xx) + 0.3 * np.sin(3.1 * xx + yy)).astype(np.float32)
    noise = rng.standard_normal((8, NY, NX)).astype(np.float32)
    import dask.array as da

    def tas_block(block_id: tuple[int, ...], chunk: int = 24) -> np.ndarray:
        t0 = block_id[0] * chunk
        n = min(chunk, steps - t0)
        out = np.empty((n, NY, NX), np.float32)
        for i in range(n):
            t = t0 + i
            out[i] = 285 + 8 * pattern + 3 * np.sin(2 * np.pi * t / 24) + 0.4 * noise[t % 8]
        return out

    def pr_block(block_id: tuple[int, ...], chunk: int = 24) -> np.ndarray:
        t0 = block_id[0] * chunk
        n = min(chunk, steps - t0)
        out = np.empty((n, NY, NX), np.float32)
        for i in range(n):
            t = t0 + i
            field = np.roll(pattern, 7 * t, axis=1) + 0.3 * noise[(t + 3) % 8] - 0.4
            out[i] = np.maximum(field, 0) * 3
        return out

    chunks = ((24,) * (steps // 24) + ((steps % 24,) if steps % 24 else ()), (NY,), (NX,))
    dims = ("time", "y", "x")
    time_ = pd.date_range("2020-01-01", periods=steps, freq="h")
    target = xr.Dataset(
        {
            "tas": (
                dims,
                da.map_blocks(tas_block, chunks=chunks, dtype=np.float32),
                {"units": "K"},
            ),
            "pr": (
                dims,
                da.map_blocks(pr_block, chunks=chunks, dtype=np.float32),
                {"units": "mm h-1"},
            ),
        },
        coords={"time": time_, "y": y, "x": x},
    )
    static = xr.Dataset(
        {
            "orography": (("y", "x"), 1000 * (pattern + 1), {"units": "m"}),
            "lsm": (("y", "x"), (pattern > -0.5).astype(np.float32), {"units": "1"}),
        },
        coords={"y": y, "x": x},
    )
    ingest = root / "bench" / "ingest"
    write_store(static, ingest / "static.zarr")
    # written as climai's ingest writes it: the dataset's HR layout (shards of 8 steps × the
    # whole grid, inner chunks 1 × 256², Blosc lz4 bitshuffle)
    write_store(with_hr_layout(target, ["tas", "pr"]), ingest / "target.zarr")
    _fsync_tree(ingest)
    return 2 * steps * STEP_BYTES


def _config(root: Path):
    from climai.config import validate_config

    return validate_config(
        {
            "campaign": "bench",
            "results": str(root),
            "scale": SCALE,
            "data": {"target": {"nx": NX, "ny": NY}},
            "preprocess": {"progress": False},
        }
    )


def run_one(mode: str, root: Path, threads: int) -> dict[str, float]:
    """One timed run (in this fresh process): wall seconds and peak RSS in MB."""
    import dask
    import xarray as xr

    target = root / "bench" / "ingest" / "target.zarr"
    out = root / f"out-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    if mode == "climai":
        from climai.config import config_sha256, stage_slice
        from climai.stages import StageContext
        from climai.stages.preprocess import run as run_preprocess

        cfg = _config(root)
        ctx = StageContext(cfg, config_sha256(stage_slice(cfg, "preprocess")), "bench", threads)
        run_preprocess(ctx)
        out = ctx.paths.root / "prep"
    elif mode == "naive":
        with dask.config.set(scheduler="threads", num_workers=threads):
            ds = xr.open_zarr(target, consolidated=False)
            lr = ds[["tas", "pr"]].coarsen(y=SCALE, x=SCALE).mean()
            for v in lr.variables.values():  # the source's shard encoding does not fit the LR
                v.encoding = {}  # arrays (to_zarr raises); the user drops it: zarr's defaults
            lr.to_zarr(out)
    elif mode == "copy":
        from climai.io import open_store
        from climai.io.shards import with_fast_reads
        from climai.preprocess.dataset import Layout

        with dask.config.set(scheduler="threads", num_workers=threads):
            # one task per shard file, decoded as fast as climai reads it (climai.io.shards)
            ds = with_fast_reads(open_store(target)[["tas", "pr"]], target)
            enc = {v: Layout().hr_encoding(8, NY, NX) for v in ds.data_vars}
            for v in ds.variables.values():
                v.encoding = {}
            ds.to_zarr(out, zarr_format=3, encoding=enc, consolidated=False)
    else:
        raise ValueError(mode)
    _fsync_tree(out)
    seconds = time.perf_counter() - start
    rss_mb = _peak_rss_mb()
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "rss_mb": rss_mb}


def _subprocess(mode: str, root: Path, threads: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        __file__,
        "--run",
        mode,
        "--workdir",
        str(root),
        "--threads",
        str(threads),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"{mode} run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def codec_sweep(root: Path) -> list[dict[str, float]]:
    """Write 32 HR steps of tas and pr in the dataset layout with each codec; speed and ratio."""
    import xarray as xr
    from zarr.codecs import BloscCodec

    from climai.preprocess.dataset import Layout

    src = xr.open_zarr(root / "bench" / "ingest" / "target.zarr", consolidated=False)[
        ["tas", "pr"]
    ].isel(time=slice(0, 32))
    src = src.compute()
    raw = sum(v.nbytes for v in src.data_vars.values())
    rows = []
    for cname, level in (("lz4", 5), ("zstd", 1), ("zstd", 3)):
        layout = Layout(time_chunk=8, codec=cname, clevel=level)
        ds = src.chunk({"time": 8, "y": -1, "x": -1})
        enc = {v: layout.hr_encoding(8, NY, NX) for v in ds.data_vars}
        for v in ds.variables.values():
            v.encoding = {}
        out = root / f"codec-{cname}{level}"
        t0 = time.perf_counter()
        ds.to_zarr(out, zarr_format=3, encoding=enc, consolidated=False)
        _fsync_tree(out)
        seconds = time.perf_counter() - t0
        stored = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        t0 = time.perf_counter()
        xr.open_zarr(out, consolidated=False).compute()
        read_s = time.perf_counter() - t0
        shutil.rmtree(out)
        assert isinstance(layout.compressor, BloscCodec)
        rows.append(
            {
                "codec": f"blosc-{cname} clevel {level}, bitshuffle, sharded",
                "write_MBps": raw / seconds / 1e6,
                "read_MBps": raw / read_s / 1e6,
                "ratio": raw / stored,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=2.0, help="HR input size (≥ 2 for the issue)")
    p.add_argument("--repeats", type=int, default=3, help="runs of climai and copy (median)")
    p.add_argument(
        "--naive-repeats", type=int, default=1, help="runs of the (slow) naive path (median)"
    )
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--workdir", type=Path, default=None, help="parent of the temporary data")
    p.add_argument("--no-doubling", action="store_true", help="skip the 2× size RSS run")
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args.workdir, args.threads)))
        return

    sys.path.insert(0, str(REPO))
    base = Path(tempfile.mkdtemp(prefix="climai-prep-bench-", dir=args.workdir))
    try:
        root = base / "single"
        t0 = time.perf_counter()
        nbytes = make_input(root, args.size_gb)
        mb = nbytes / 1e6
        print(
            f"input: {mb:.0f} MB of HR float32 (tas, pr; {NY}×{NX}), built in "
            f"{time.perf_counter() - t0:.1f} s; threads={args.threads}; scale={SCALE}"
        )
        runs: dict[str, list[dict[str, float]]] = {"climai": [], "naive": [], "copy": []}
        for r in range(args.repeats):
            for mode in runs:  # interleaved, so machine noise hits every mode alike
                if mode == "naive" and r >= args.naive_repeats:
                    continue
                res = _subprocess(mode, root, args.threads)
                runs[mode].append(res)
                print(
                    f"  run {r + 1} {mode:6s}: {res['seconds']:6.2f} s  "
                    f"{mb / res['seconds']:7.0f} MB/s  peak RSS {res['rss_mb']:5.0f} MB"
                )
        med = {m: statistics.median(x["seconds"] for x in v) for m, v in runs.items()}
        rss = statistics.median(x["rss_mb"] for x in runs["climai"])
        print("medians (MB of HR input per second):")
        for m, s in med.items():
            print(f"  {m:6s} {mb / s:7.0f} MB/s  ({s:.2f} s)")
        print(f"climai / naive = {med['naive'] / med['climai']:.2f}×  (target ≥ 3)")
        print(f"climai / copy  = {med['copy'] / med['climai']:.2f}×  (target ≥ 0.6)")
        print(f"climai peak RSS {rss:.0f} MB = {100 * rss / mb:.1f} % of the input (target < 25 %)")
        print("codecs (dataset layout: shards of 8 steps × whole grid, inner chunks 1×256²):")
        for row in codec_sweep(root):
            print(
                f"  {row['codec']:42s} write {row['write_MBps']:6.0f} MB/s  "
                f"read {row['read_MBps']:6.0f} MB/s  ratio {row['ratio']:.2f}"
            )
        shutil.rmtree(root)
        if not args.no_doubling:
            root2 = base / "double"
            make_input(root2, 2 * args.size_gb)
            res = _subprocess("climai", root2, args.threads)
            shutil.rmtree(root2)
            print(
                f"climai at {2 * mb:.0f} MB: {2 * mb / res['seconds']:.0f} MB/s, peak RSS "
                f"{res['rss_mb']:.0f} MB = {res['rss_mb'] / rss:.2f}× the RSS at {mb:.0f} MB "
                "(target < 1.3)"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
