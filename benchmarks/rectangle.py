"""The spectral region's largest valid rectangle on a continental mask: whole-row steps against
the column-by-column stack they replaced (session 40), same run, same answer.

Every ``evaluate`` and ``compare`` job finds the largest rectangle of cells valid in at least
half of the test steps (:func:`climai.evaluation.metrics.largest_valid_rectangle`), where
spectra are taken. On MRMS's 3496 × 7000 CONUS grid the old stack loop took 12.7 s of each job
(BENCHMARKS.md "Session 40"). This times both on one mask, alternately, ``--repeats`` times, and
checks that they return the same rectangle.

    python benchmarks/rectangle.py                         # a seeded radar-like 3496 × 7000 mask
    python benchmarks/rectangle.py --dataset results/mrms-conus/prep/dataset.zarr
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from climai.evaluation.metrics import largest_valid_rectangle


def stack_rectangle(mask: np.ndarray) -> tuple[slice, slice]:
    """The implementation before session 40: each row's histogram, one column at a time."""
    ny, nx = mask.shape
    heights = np.zeros(nx + 1, dtype=np.int64)
    best = (0, 0, 0, 0, 0)
    for row in range(ny):
        heights[:nx] = np.where(mask[row], heights[:nx] + 1, 0)
        stack: list[int] = []
        for col in range(nx + 1):
            h = heights[col]
            while stack and heights[stack[-1]] >= h:
                top = stack.pop()
                height = int(heights[top])
                left = stack[-1] + 1 if stack else 0
                area = height * (col - left)
                if area > best[0]:
                    best = (area, row + 1 - height, row + 1, left, col)
            stack.append(col)
    return slice(best[1], best[2]), slice(best[3], best[4])


def radar_mask(ny: int, nx: int, seed: int) -> np.ndarray:
    """Valid cells of a seeded composite: 140 radar ranges (discs of 60–130 cells) over the grid,
    like MRMS's CONUS coverage, which leaves ragged edges and gaps between radars."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((ny, nx), bool)
    yy = np.arange(ny)[:, None]
    xx = np.arange(nx)[None, :]
    for cy, cx, r in zip(
        rng.uniform(0, ny, 140), rng.uniform(0, nx, 140), rng.uniform(60, 130, 140), strict=True
    ):
        y0, y1 = max(0, int(cy - r)), min(ny, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(nx, int(cx + r) + 1)
        mask[y0:y1, x0:x1] |= (yy[y0:y1] - cy) ** 2 + (xx[:, x0:x1] - cx) ** 2 < r * r
    return mask


def dataset_mask(path: Path) -> np.ndarray:
    """The spectral mask of a prepared dataset's test split: HR cells valid in at least half of
    its steps (what evaluate uses)."""
    from climai.evaluation.cubes import test_split
    from climai.io import open_store

    test = test_split(open_store(path))
    hr = next(v for v in test.data_vars if v.startswith("hr_"))
    return np.isfinite(test[hr].values).mean(axis=0) >= 0.5


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, help="a prepared dataset.zarr (its test split's mask)")
    ap.add_argument("--shape", type=int, nargs=2, default=[3496, 7000], metavar=("NY", "NX"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    mask = dataset_mask(args.dataset) if args.dataset else radar_mask(*args.shape, args.seed)
    print(f"mask {mask.shape[0]} × {mask.shape[1]}, {mask.mean():.1%} valid")
    times: dict[str, list[float]] = {"stack (before)": [], "whole rows": []}
    found = {}
    for _ in range(args.repeats):
        for name, func in (
            ("stack (before)", stack_rectangle),
            ("whole rows", largest_valid_rectangle),
        ):
            t0 = time.perf_counter()
            found[name] = func(mask)
            times[name].append(time.perf_counter() - t0)
    if found["stack (before)"] != found["whole rows"]:
        raise SystemExit(f"different rectangles: {found}")
    rows, cols = found["whole rows"]
    print(f"rectangle rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop} (both)")
    base = statistics.median(times["stack (before)"])
    print("| implementation | median s | ratio to the stack |")
    print("|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.3f} | {statistics.median(t) / base:.4f} |")


if __name__ == "__main__":
    main()
