"""How much the LR *sequence* knows about the HR field: model-free multi-frame back-projection
(issue 19 diagnostic; no emulator is trained).

Rain moves between radar scans. Where it is carried by the wind more than it changes, the LR
blocks of the scans before and after, aligned along the motion, sample the field at time t at
other sub-block offsets than its own blocks do: the classic multi-frame super-resolution setting.
This script measures that information on a prepared campaign's test split, with no learning:

1. motion: for every window of ``--window`` HR cells (stepped by half a window), the displacement
   of the bicubic-interpolated LR field from t to t+k by plain cross-correlation (log1p, mean
   removed, Hann window, parabolic sub-cell peak), interpolated bilinearly to every HR cell;
   ``--oracle`` takes it from the HR truth instead (an upper bound: the truth is not known);
2. back-projection (Irani & Peleg's iterative scheme): start from the conserved bicubic field
   of t, warp it to t+k, compare its block means with the LR of t+k and spread the residual back
   along the motion, ``--iters`` times with step ``--step``; every iterate keeps the block means
   of t exactly (``climai.models.constraints.conserve``, as the U-Net's constraint does).

Prints RMSE / bicubic for conserved bicubic and the back-projection (LR motion, and with
``--oracle`` the truth's motion), in the same run, per campaign:

    python benchmarks/multiframe.py knmi bom-melbourne fmi [--context 1] [--oracle]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from climai.models.constraints import block_mean, conserve
from climai.models.interpolate import upsample
from climai.preprocess.splits import SPLITS


def displacement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(dy, dx)`` in cells with ``b(x) ≈ a(x - d)``: the peak of the plain cross-correlation of
    the mean-free, Hann-windowed fields, refined by a parabola through its neighbours (±1 cell).
    Phase correlation (whitened) locks onto the LR block grid of interpolated fields; the plain
    one follows the rain. A window with no valid cell in either field gives no motion: (0, 0)."""
    if not (np.isfinite(a).any() and np.isfinite(b).any()):
        return 0.0, 0.0
    h, w = a.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    a = (np.nan_to_num(a) - np.nanmean(a)) * win
    b = (np.nan_to_num(b) - np.nanmean(b)) * win
    r = np.fft.irfft2(np.fft.rfft2(b) * np.conj(np.fft.rfft2(a)), s=(h, w))
    iy, ix = np.unravel_index(int(np.argmax(r)), r.shape)

    def vertex(m: float, c: float, p: float) -> float:
        den = m - 2 * c + p
        return 0.0 if abs(den) < 1e-12 else float(np.clip(0.5 * (m - p) / den, -1.0, 1.0))

    dy = iy + vertex(r[(iy - 1) % h, ix], r[iy, ix], r[(iy + 1) % h, ix])
    dx = ix + vertex(r[iy, (ix - 1) % w], r[iy, ix], r[iy, (ix + 1) % w])
    return (dy - h if dy > h / 2 else dy), (dx - w if dx > w / 2 else dx)


def starts(n: int, win: int) -> list[int]:
    """Window starts every half window, the last ending at ``n``."""
    if n <= win:
        return [0]
    return sorted({*range(0, n - win, win // 2), n - win})


def flow(a: np.ndarray, b: np.ndarray, win: int) -> torch.Tensor:
    """``(2, H, W)`` displacement from ``a`` to ``b`` (HR fields): one per window of ``win``
    cells, bilinear between the windows' centres (constant beyond the outer ones)."""
    h, w = a.shape
    ys, xs = starts(h, min(win, h)), starts(w, min(win, w))
    wy, wx = min(win, h), min(win, w)
    d = np.array(
        [
            [displacement(a[y : y + wy, x : x + wx], b[y : y + wy, x : x + wx]) for x in xs]
            for y in ys
        ],
        np.float32,
    )  # (ny, nx, 2)
    grid = torch.from_numpy(d).permute(2, 0, 1)[None]  # (1, 2, ny, nx)
    if grid.shape[-2:] == (1, 1):
        return grid[0, :, :1, :1].expand(2, h, w).clone()
    cy = np.array(ys) + wy / 2
    cx = np.array(xs) + wx / 2
    gy = np.interp(np.arange(h) + 0.5, cy, np.arange(len(ys)))
    gx = np.interp(np.arange(w) + 0.5, cx, np.arange(len(xs)))
    # sample the coarse grid at fractional indices (align_corners: index 0 ↔ -1, n-1 ↔ +1)
    ny, nx = len(ys), len(xs)
    ny_ = torch.from_numpy((2 * gy / max(ny - 1, 1) - 1).astype(np.float32))
    nx_ = torch.from_numpy((2 * gx / max(nx - 1, 1) - 1).astype(np.float32))
    sample = torch.stack(torch.meshgrid(ny_, nx_, indexing="ij")[::-1], -1)[None]
    return F.grid_sample(grid, sample, mode="bilinear", align_corners=True)[0]


def warp(f: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``f(x - d(x))`` for ``f`` ``(N, C, H, W)`` and ``d`` ``(2, H, W)``; edges replicated."""
    h, w = f.shape[-2:]
    yy = torch.arange(h, dtype=torch.float32)[:, None] - d[0]
    xx = torch.arange(w, dtype=torch.float32)[None, :] - d[1]
    grid = torch.stack([2 * (xx + 0.5) / w - 1, 2 * (yy + 0.5) / h - 1], -1)[None]
    grid = grid.expand(f.shape[0], -1, -1, -1)
    return F.grid_sample(f, grid, mode="bilinear", padding_mode="border", align_corners=False)


def back_project(
    lr: torch.Tensor,
    neighbours: list[tuple[torch.Tensor, torch.Tensor]],
    scale: int,
    iters: int = 20,
    step: float = 0.2,
) -> torch.Tensor:
    """HR field ``(1, 1, H, W)`` whose block means are ``lr`` ``(1, 1, h, w)`` and whose warps
    along each ``(lr_k, d_k)`` best match ``lr_k``'s block means (iterative back-projection)."""
    start = upsample(lr, scale, "bicubic").clamp(min=0).nan_to_num(0.0)
    f = conserve(start, lr, scale, [True])
    for _ in range(iters):
        update = torch.zeros_like(f)
        for lr_k, d in neighbours:
            residual = (lr_k - block_mean(warp(f, d), scale)).nan_to_num(0.0)
            update += warp(upsample(residual, scale, "bilinear"), -d)
        f = (f + step * update / max(1, len(neighbours))).clamp(min=0)
        # additive block-mean correction inside the loop (a multiplicative one amplifies the
        # iterate's near-empty blocks), the exact constraint at the end
        gap = torch.where(torch.isfinite(lr), lr - block_mean(f, scale), 0.0)
        f = (f + F.interpolate(gap, scale_factor=scale)).clamp(min=0)
    return conserve(f, lr, scale, [True])


def score(
    campaign: str, results: Path, context: int, oracle: bool, window: int, iters: int, step: float
) -> dict[str, float]:
    """RMSE / bicubic of conserved bicubic and the back-projection on the test split."""
    ds = xr.open_zarr(results / campaign / "prep" / "dataset.zarr")
    scale = int(ds.attrs["scale"])
    var = next(v for v in ds.data_vars if v.startswith("hr_"))[3:]
    steps = np.flatnonzero(ds["split"].values == SPLITS.index("test"))
    lo, hi = max(0, steps[0] - context), min(ds.sizes["time"], steps[-1] + context + 1)
    lr_all = torch.from_numpy(ds[f"lr_{var}"].isel(time=slice(lo, hi)).values.astype(np.float32))
    hr_all = ds[f"hr_{var}"].isel(time=slice(lo, hi)).values.astype(np.float32)

    def log_field(a: np.ndarray | torch.Tensor) -> np.ndarray:
        return np.log1p(np.clip(np.nan_to_num(np.asarray(a)), 0, None))

    motions = {"multiframe": "lr", **({"oracle": "hr"} if oracle else {})}
    sums = dict.fromkeys(["bicubic", "conserved bicubic", *motions], 0.0)
    count = 0
    for t in steps - lo:
        lr = lr_all[t][None, None]
        bic = upsample(lr, scale, "bicubic").clamp(min=0)
        truth = hr_all[t]
        fields = {
            "bicubic": bic,
            "conserved bicubic": conserve(bic.nan_to_num(0.0), lr, scale, [True]),
        }
        ks = [t + k for k in range(-context, context + 1) if k and 0 <= t + k < len(lr_all)]
        for name, motion_of in motions.items():
            a = log_field(bic[0, 0] if motion_of == "lr" else truth)
            neighbours = []
            for k in ks:
                if motion_of == "lr":
                    b = log_field(upsample(lr_all[k][None, None], scale, "bicubic")[0, 0])
                else:
                    b = log_field(hr_all[k])
                neighbours.append((lr_all[k][None, None], flow(a, b, window)))
            fields[name] = back_project(lr, neighbours, scale, iters, step)
        ok = np.isfinite(truth) & np.isfinite(bic[0, 0].numpy())
        for name, f in fields.items():
            sums[name] += float(((f[0, 0].numpy() - truth)[ok] ** 2).sum())
        count += int(ok.sum())
    rmse = {k: math.sqrt(v / max(count, 1)) for k, v in sums.items()}
    return {k: v / rmse["bicubic"] for k, v in rmse.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("campaigns", nargs="+", help="prepared campaigns (results/<name>/prep)")
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--context", type=int, default=1, help="LR steps on each side")
    ap.add_argument("--window", type=int, default=256, help="HR cells per motion window")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--step", type=float, default=0.2)
    ap.add_argument("--oracle", action="store_true", help="also with the truth's motion")
    args = ap.parse_args()
    print("| campaign | conserved bicubic | multiframe (LR motion) | multiframe (truth's motion) |")
    print("|---|---|---|---|")
    for c in args.campaigns:
        r = score(c, args.results, args.context, args.oracle, args.window, args.iters, args.step)
        oracle = f"{r['oracle']:.3f}" if "oracle" in r else "–"
        print(
            f"| {c} | {r['conserved bicubic']:.3f} | {r['multiframe']:.3f} | {oracle} |", flush=True
        )


if __name__ == "__main__":
    main()
