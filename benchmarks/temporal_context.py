"""Does the pooled U-Net gain from the LR scans before and after (issue 19 diagnostic)?

A deliberately small trainer, outside the pipeline, that tests an *input* before it is built into
the loaders and the tiled engine (which see one time step per sample): the transfer configs'
pooled U-Net (the project's ``ResidualUNet`` [16, 32, 64, 128], bicubic base, multiplicative
``conserve`` in training, MSE in log1p space, AdamW 7e-4 / wd 1e-4, 30-step warm-up + cosine,
bf16 autocast, 64² patches × 16 with ≥ 5 % wet cells, flips and rotations, grid channel), trained
for ``--steps`` on the train splits of every prepared radar but ``held`` (equal shares; no
validation, no early stopping) and scored on ``held``'s whole test split: RMSE / bicubic.

``--context``: ``none`` (the pipeline's inputs: bicubic and nearest LR of t, grid channel);
``raw`` (+ bicubic LR of t-1 and t+1 as they are); ``aligned`` (+ the same shifted back along the
motion from t to t±1, estimated per patch by ``benchmarks/multiframe.py``'s cross-correlation
over a 256-cell window around it: the network needs not learn the motion itself).

``--scales 1,2,4`` adds every training radar's train split coarsened 2× and 4× as more pairs
(HR = the block mean of the radar's HR, LR = its block mean by the same factor 8, the grid
channel at the coarser spacing), drawn in equal shares within the radar's share: rain is nearly
scale-invariant from 1 to 100 km, so a 250 m radar coarsened 4× is one more 1 km event.

    python benchmarks/temporal_context.py knmi --context aligned --seed 0
    python benchmarks/temporal_context.py knmi --context none --scales 1,2,4
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from climai.models.constraints import conserve
from climai.models.interpolate import upsample
from climai.models.unet import ResidualUNet
from climai.preprocess.coarsen import coarser_pair
from climai.preprocess.splits import SPLITS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multiframe import displacement

RADARS = {"knmi": 1.0, "fmi": 0.25, "bom-melbourne": 0.5, "mrms-conus": 1.0}  # HR km
SCALE, PATCH, BATCH, WINDOW = 8, 64, 16, 256


def load(
    results: Path, name: str, split: str, factor: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical LR ``(T, h, w)``, log1p HR and log1p bicubic ``(T, H, W)`` of one split, the HR
    coarsened ``factor``× (``coarser_pair``, as ``coarsen_sources`` does) where ``factor`` > 1."""
    ds = xr.open_zarr(results / name / "prep" / "dataset.zarr")
    idx = np.flatnonzero(ds["split"].values == SPLITS.index(split))
    steps = slice(idx[0], idx[-1] + 1)
    hr = ds["hr_pr"].isel(time=steps).values.astype(np.float32)
    if factor == 1:
        lr = ds["lr_pr"].isel(time=steps).values.astype(np.float32)
    else:
        hr, lr = coarser_pair(hr, factor, SCALE)
    lr = torch.from_numpy(lr.astype(np.float32))[:, None]
    bic = torch.cat([upsample(lr[i : i + 4], SCALE, "bicubic") for i in range(0, len(lr), 4)])
    return lr[:, 0].numpy(), np.log1p(hr), np.log1p(bic[:, 0].clamp(min=0).numpy())


def shifted(f: np.ndarray, d: tuple[float, float], ys: slice, xs: slice) -> np.ndarray:
    """``f(x + d)`` on HR rows ``ys`` and columns ``xs`` (bilinear, edges replicated).

    Only the cells the samples reach are read (the window plus ``|d| + 2`` each side, clipped to
    the domain): sampling the whole field per patch kept the aligned scoring on MRMS's
    3496 × 7000 grid running past 37 minutes (stopped unfinished)."""
    h, w = f.shape
    my, mx = math.ceil(abs(d[0])) + 2, math.ceil(abs(d[1])) + 2
    y0, y1 = max(ys.start - my, 0), min(ys.stop + my, h)
    x0, x1 = max(xs.start - mx, 0), min(xs.stop + mx, w)
    yy = np.arange(ys.start, ys.stop) + d[0] - y0
    xx = np.arange(xs.start, xs.stop) + d[1] - x0
    gy = torch.from_numpy((2 * (yy + 0.5) / (y1 - y0) - 1).astype(np.float32))
    gx = torch.from_numpy((2 * (xx + 0.5) / (x1 - x0) - 1).astype(np.float32))
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    src = torch.from_numpy(np.nan_to_num(f[y0:y1, x0:x1]))[None, None]
    return F.grid_sample(src, grid, padding_mode="border", align_corners=False)[0, 0].numpy()


def window(cells: slice, n: int) -> slice:
    """The motion window (``WINDOW`` cells, the domain where smaller) centred on ``cells``."""
    size = min(WINDOW, n)
    start = min(max((cells.start + cells.stop) // 2 - size // 2, 0), n - size)
    return slice(start, start + size)


def inputs(context, lr, bic, t, ys, xs, grid_km) -> np.ndarray:
    """``(C, p, p)`` model inputs of time ``t`` over HR rows ``ys``, columns ``xs``."""
    lys, lxs = (
        slice(ys.start // SCALE, ys.stop // SCALE),
        slice(xs.start // SCALE, xs.stop // SCALE),
    )
    near = np.log1p(np.clip(lr[t, lys, lxs], 0, None)).repeat(SCALE, 0).repeat(SCALE, 1)
    channels = [bic[t, ys, xs], near, np.full(near.shape, math.log2(grid_km), np.float32)]
    steps, height, width = bic.shape
    wy, wx = window(ys, height), window(xs, width)
    for k in (max(t - 1, 0), min(t + 1, steps - 1)) if context != "none" else ():
        if context == "raw" or k == t:
            channels.append(bic[k, ys, xs])
        else:
            channels.append(shifted(bic[k], displacement(bic[t, wy, wx], bic[k, wy, wx]), ys, xs))
    return np.nan_to_num(np.stack(channels)).astype(np.float32)


def predict(model, x, base, lr) -> torch.Tensor:
    """log1p rain of the U-Net with the multiplicative conservation, as the pipeline's."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model(x.contiguous(memory_format=torch.channels_last), base)
    rain = torch.expm1(z.float().clamp(max=8)).clamp(min=0)
    return torch.log1p(conserve(rain, lr, SCALE, [True]))


def train(args, rng) -> ResidualUNet:
    radars = [r for r in RADARS if r != args.held]
    data = {(r, c): load(args.results, r, "train", c) for r in radars for c in args.scales}
    data = {k: v for k, v in data.items() if min(v[1].shape[1:]) >= PATCH}  # a patch must fit
    n_in = 3 + (2 if args.context != "none" else 0)
    model = ResidualUNet(n_in, 1, [16, 32, 64, 128]).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=7e-4, weight_decay=1e-4)
    warm, total = 30, args.steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warm
            if s < warm
            else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
        ),
    )
    p, s = PATCH, SCALE
    for _ in range(total):
        xs, bases, lrs, targets = [], [], [], []
        while len(xs) < BATCH:
            r = radars[rng.integers(len(radars))]
            factors = [c for q, c in data if q == r]
            c = factors[rng.integers(len(factors))]
            lr, hr, bic = data[(r, c)]
            steps, height, width = hr.shape
            t = int(rng.integers(steps))
            y0 = int(rng.integers(height // s - p // s + 1)) * s
            x0 = int(rng.integers(width // s - p // s + 1)) * s
            ys, xsl = slice(y0, y0 + p), slice(x0, x0 + p)
            target = hr[t, ys, xsl]
            if (np.nan_to_num(np.expm1(target)) > 0.1).mean() < 0.05:
                continue
            rot, flip = int(rng.integers(4)), bool(rng.integers(2))

            def op(a, rot=rot, flip=flip):
                a = np.rot90(a, rot, axes=(-2, -1))
                return np.ascontiguousarray(a[..., ::-1] if flip else a)

            xs.append(op(inputs(args.context, lr, bic, t, ys, xsl, RADARS[r] * c)))
            bases.append(op(bic[t, ys, xsl])[None])
            lrs.append(op(lr[t, y0 // s : (y0 + p) // s, x0 // s : (x0 + p) // s])[None])
            targets.append(op(target)[None])
        pred = predict(
            model,
            torch.from_numpy(np.stack(xs)),
            torch.from_numpy(np.nan_to_num(np.stack(bases))),
            torch.from_numpy(np.stack(lrs)),
        )
        target = torch.from_numpy(np.stack(targets))
        ok = torch.isfinite(target)
        loss = ((pred - target.nan_to_num()) ** 2)[ok].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model


def score(args, model) -> float:
    """RMSE / bicubic on the held-out radar's whole test split (inputs built per 64² tile)."""
    lr, hr, bic = load(args.results, args.held, "test")
    steps, height, width = hr.shape
    sums = {"bicubic": 0.0, "unet": 0.0}
    model.eval()
    with torch.no_grad():
        for t in range(steps):
            x = np.concatenate(
                [
                    np.concatenate(
                        [
                            inputs(
                                args.context,
                                lr,
                                bic,
                                t,
                                slice(y, min(y + PATCH, height)),
                                slice(c, min(c + PATCH, width)),
                                RADARS[args.held],
                            )
                            for c in range(0, width, PATCH)
                        ],
                        axis=2,
                    )
                    for y in range(0, height, PATCH)
                ],
                axis=1,
            )
            base = torch.from_numpy(np.nan_to_num(bic[t]))[None, None]
            out = predict(
                model, torch.from_numpy(x)[None], base, torch.from_numpy(lr[t])[None, None]
            )
            truth = np.expm1(hr[t])
            ok = np.isfinite(truth) & np.isfinite(bic[t])
            for name, f in (("bicubic", np.expm1(bic[t])), ("unet", np.expm1(out[0, 0].numpy()))):
                sums[name] += float(((f - truth)[ok] ** 2).sum())
    return math.sqrt(sums["unet"] / sums["bicubic"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("held", choices=list(RADARS))
    ap.add_argument("--context", choices=["none", "raw", "aligned"], default="aligned")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument(
        "--scales",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1],
        help="coarsening factors of the training radars (e.g. 1,2,4)",
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = train(args, np.random.default_rng(args.seed))
    trained = time.perf_counter() - start
    ratio = score(args, model)
    print(
        json.dumps(
            {
                "held": args.held,
                "context": args.context,
                "seed": args.seed,
                "steps": args.steps,
                "scales": args.scales,
                "rmse_ratio": round(ratio, 4),
                "train_s": round(trained),
            }
        )
    )


if __name__ == "__main__":
    main()
