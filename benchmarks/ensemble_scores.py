"""evaluate's two heaviest kernels on a continental ensemble, against the code of a baseline
commit in the same run: the members' summed power spectra (``radial_power_sums``) and the
ensemble sums (``EnsembleSums``: CRPS, spread/skill, rank counts).

    python benchmarks/ensemble_scores.py [--members 16] [--size 3496 7000] [--repeats 3]
                                         [--baseline cadd7dd]

One block as evaluate streams it on MRMS CONUS: one test step of ``--members`` members and the
truth, float32, rain-like (seeded gamma rain with dry cells, a 64-cell strip without data). The
data are written once to a temporary .npy; each (kernel, way, repeat) runs in a fresh process
(alternating baseline and this tree, so both see the same machine load) that loads them and
times the kernel alone, and its peak of NumPy buffers (``tracemalloc``, the data not counted).
The baseline's ``climai/evaluation/metrics.py`` and
``accumulators.py`` come from ``git show <baseline>:...``. Printed: per kernel and way the
median seconds and the kernel's peak memory (MB), the ratios, and the
largest relative difference of the results (rank counts: equal or not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def baseline_modules(commit: str, folder: Path) -> None:
    """``base_metrics.py`` and ``base_accumulators.py`` of ``commit`` in ``folder`` (the latter
    importing the former)."""
    for name in ("metrics", "accumulators"):
        text = subprocess.run(
            ["git", "show", f"{commit}:climai/evaluation/{name}.py"],
            cwd=REPO, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        text = text.replace("from climai.evaluation.metrics import", "from base_metrics import")
        (folder / f"base_{name}.py").write_text(text)


def child(data: Path, kernel: str, way: str) -> None:
    if way == "base":
        sys.path.insert(0, str(data.parent))
        import base_accumulators as acc
        import base_metrics as met
    else:
        from climai.evaluation import accumulators as acc
        from climai.evaluation import metrics as met
    ens = np.load(data)
    truth = np.load(data.with_name("truth.npy"))
    ny, nx = truth.shape[1:]
    tracemalloc.start()  # NumPy reports its buffers to it: the kernel's own peak
    start = time.perf_counter()
    if kernel == "spectra":
        region = met.SpectralRegion(slice(64, ny), slice(0, nx), np.arange(truth.shape[0]))
        power, used = met.radial_power_sums(ens, region)
        result = {"power": power.tolist(), "used": used}
    else:
        sums = acc.EnsembleSums()
        block = met.MetricInput(
            ens, truth, kind="precipitation", scale=8, bands=[[2, 4]], wet_threshold=0.1, seed=0
        )
        block.draws_before = 0
        sums.update(block)
        result = sums.result()
    seconds = time.perf_counter() - start
    added = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps({"seconds": seconds, "added_mb": added, "result": result}))


def rel_diff(a: object, b: object) -> float:
    if isinstance(a, dict) and isinstance(b, dict):
        return max((rel_diff(a[k], b[k]) for k in a if k != "rank_histogram"), default=0.0)
    x, y = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--size", type=int, nargs=2, default=[3496, 7000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", default="cadd7dd")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.child[2])
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        baseline_modules(args.baseline, folder)
        rng = np.random.default_rng(0)
        ny, nx = args.size
        coarse = rng.gamma(0.4, 2.0, (args.members, 1, ny // 8 + 1, nx // 8 + 1))
        ens = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)[..., :ny, :nx]
        ens = (ens * rng.gamma(4.0, 0.25, ens.shape)).astype(np.float32)
        ens[ens < 0.3] = 0.0
        ens[:, :, :64] = np.nan
        truth = np.where(np.isnan(ens[0]), np.nan, ens.mean(axis=0) * 1.1).astype(np.float32)
        np.save(folder / "ens.npy", ens)
        np.save(folder / "truth.npy", truth)
        del ens, coarse
        print(f"{args.members} members × {ny} × {nx} cells, one step: "
              f"{args.members * ny * nx * 4 / 2**30:.2f} GiB float32; baseline {args.baseline}")  # fmt: skip
        for kernel in ("spectra", "ensemble"):
            runs: dict[str, list[dict]] = {"base": [], "new": []}
            for _ in range(args.repeats):
                for way in runs:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", str(folder / "ens.npy"), kernel, way],
                        check=True, capture_output=True, text=True,
                    ).stdout  # fmt: skip
                    runs[way].append(json.loads(out.strip().splitlines()[-1]))
            med = {
                w: (
                    statistics.median(r["seconds"] for r in rs),
                    statistics.median(r["added_mb"] for r in rs),
                )
                for w, rs in runs.items()
            }
            base, new = runs["base"][0]["result"], runs["new"][0]["result"]
            same_ranks = base.get("rank_histogram") == new.get("rank_histogram")
            print(f"{kernel}: baseline {med['base'][0]:.2f} s +{med['base'][1]:.0f} MB, "
                  f"this tree {med['new'][0]:.2f} s +{med['new'][1]:.0f} MB; ratio time "
                  f"{med['new'][0] / med['base'][0]:.3f}, memory "
                  f"{med['new'][1] / max(med['base'][1], 1):.3f}; largest relative difference "
                  f"{rel_diff(new, base):.1e}"
                  + ("" if kernel == "spectra" else f"; rank counts equal: {same_ranks}"))  # fmt: skip


if __name__ == "__main__":
    main()
