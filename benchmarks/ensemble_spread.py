"""Where an ensemble's CRPS is lost (issue 19): ways of spreading one set of members, compared on
a held-out radar's test split (BENCHMARKS.md "Session 35").

    python benchmarks/transfer_variant.py knmi crpsraw '{"calibrate": false}' --method unet-crps
    python benchmarks/ensemble_spread.py knmi results/x-crpsraw-knmi/downscaled/unet-crps/test.zarr \
        --unet results/transfer-knmi/downscaled/unet/test.zarr

Reads the uncalibrated members (``(member, time, y, x)`` of ``pr``), the truth of
``results/<held>/prep`` and bicubic's test store of ``results/transfer-<held>``, all in memory
(meant for knmi, fmi and bom-melbourne, not the CONUS grid). Each way is given the factor that
makes spread/skill exactly 1 **on this test split** (an oracle, found by bisection), so the rows
compare ideas with each other, never with a calibrated campaign's figures: a way that wins here
still has to be calibrated on validation and win there. Every way clips at 0 and then conserves
each member's block means to the LR input, as inference does. Prints one row per way: the
factor, CRPS / bicubic MAE, spread/skill and the members' spectral ratio per band (evaluate's
``spectral_ratio``). ``--as-calibrated`` scores a calibrated store's members as they are, with
their departures scaled around the calibration's factor and (``--unet``) recentred on the
deterministic U-Net (BENCHMARKS.md "Session 40"):

    python benchmarks/ensemble_spread.py knmi results/transfer-knmi/downscaled/unet-crps/test.zarr \
        --unet results/transfer-knmi/downscaled/unet/test.zarr --as-calibrated
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from climai.evaluation.cubes import test_split
from climai.evaluation.metrics import crps_ensemble, crps_fair, spectral_ratio, spread_skill
from climai.io import open_store
from climai.models.constraints import conserve

ROOT = Path(__file__).resolve().parents[1]
BANDS = [[2, 4], [4, 8], [8, 16], [16, 32]]  # evaluate's default bands (HR cells)


def conserved(fields: np.ndarray, lr: np.ndarray, s: int) -> np.ndarray:
    """``(M, T, H, W)`` rain fields with every member's block means set to ``lr`` ``(T, h, w)``:
    the engine's own constraint (:func:`climai.models.constraints.conserve`)."""
    m = fields.shape[0]
    y = torch.from_numpy(fields).reshape(-1, 1, *fields.shape[-2:])
    low = torch.from_numpy(np.broadcast_to(lr, (m, *lr.shape)).reshape(-1, 1, *lr.shape[-2:]))
    return conserve(y, low, s, [True]).reshape(fields.shape).numpy()


def oracle_factor(make: Callable[[float], np.ndarray], truth: np.ndarray) -> float:
    """The factor at which ``make(factor)`` has spread/skill 1 on ``truth`` (geometric bisection)."""
    lo, hi = 1e-3, 1e3
    for _ in range(30):
        mid = float(np.sqrt(lo * hi))
        lo, hi = (mid, hi) if spread_skill(make(mid), truth)["ratio"] < 1 else (lo, mid)
    return mid


def standardised(dep: np.ndarray) -> np.ndarray:
    """Departures ``(M, ...)`` re-centred and scaled to mean 0 and std 1 over the members at
    every cell (0 where the members agree): a pattern with no amplitude of its own."""
    dep = dep - dep.mean(0, keepdims=True)
    sd = dep.std(0, keepdims=True)
    return dep / np.where(sd > 1e-6, sd, np.inf)


def ways(ens: np.ndarray, lr: np.ndarray, unet: np.ndarray | None, s: int, seed: int) -> dict:
    """name → factor ↦ members, every way of spreading ``ens`` compared."""
    mean = ens.mean(0, keepdims=True)
    dep = ens - mean
    z = standardised(dep)  # standardised departures: the network's pattern
    log = np.log1p(ens)
    log_mean = log.mean(0, keepdims=True)
    gy, gx = np.gradient(lr, axis=(1, 2))
    grad = np.repeat(np.repeat(np.hypot(gy, gx), s, -2), s, -1)[None]

    def fix(a: np.ndarray) -> np.ndarray:
        return conserved(np.clip(a, 0, None), lr, s)

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(ens.shape)
    textures = {}
    for sigma in (0.0, 1.0, 2.0):
        g = gaussian_filter(noise, (0, 0, sigma, sigma)) if sigma else noise
        textures[sigma] = g / g.std()

    out = {
        "inflation (calibrate_by: inflation)": lambda f: fix(mean + f * dep),
        "inflation in log1p space": lambda f: fix(np.expm1(log_mean + f * (log - log_mean))),
    }
    if unet is not None:
        out["recentred on the deterministic U-Net"] = lambda f: fix(unet[None] + f * dep)
    for name, p in (
        ("spread ∝ members' mean", mean),
        ("spread ∝ members' mean^0.75", mean**0.75),
        ("spread ∝ √(mean × LR gradient)", np.sqrt(mean * grad)),
    ):
        out[name] = lambda f, p=p: fix(mean + f * p * z)
    # the same per-cell spread, other spatial patterns: the network's departures blurred (then
    # standardised again, so only where the power sits changes), or blurred white noise
    rate = mean**0.75
    for sigma in (0.7, 1.0, 2.0):
        zs = standardised(gaussian_filter(dep, (0, 0, sigma, sigma)))
        out[f"… ∝ mean^0.75, the departures blurred {sigma:g} cells"] = lambda f, zs=zs: fix(
            mean + f * rate * zs
        )
    zr = standardised(gaussian_filter(noise, (0, 0, 1.0, 1.0)))
    out["… ∝ mean^0.75, white noise blurred 1 cell"] = lambda f: fix(mean + f * rate * zr)
    for sigma, g in textures.items():
        what = "white" if not sigma else f"smoothed {sigma:g} cells"
        out[f"lognormal texture on the mean, {what}"] = lambda f, g=g: fix(
            mean * np.exp(f * g - f * f / 2)
        )
    return out


def as_calibrated(ens: np.ndarray, lr: np.ndarray, unet: np.ndarray | None, s: int) -> dict:
    """name → members: the stored (calibrated) ensemble itself, its departures scaled by a few
    factors around the calibration's (is spread/skill 1 where the CRPS is lowest?) and, with
    ``unet``, the same departures added to the deterministic U-Net instead of the members'
    mean (CorrDiff's regression + residual); clipped at 0 and conserved like every way."""
    mean = ens.mean(0, keepdims=True)
    dep = ens - mean
    out = {"as calibrated": ens}
    for lam in (0.7, 0.85, 1.2, 1.5):
        out[f"departures ×{lam:g}"] = conserved(np.clip(mean + lam * dep, 0, None), lr, s)
    if unet is not None:
        out["recentred on the deterministic U-Net"] = conserved(
            np.clip(unet[None] + dep, 0, None), lr, s
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("held", help="the held-out campaign (its prep/ and transfer-<held>'s bicubic)")
    ap.add_argument(
        "members",
        type=Path,
        help="the members' test store (re-spread by every way; scored as stored: --as-calibrated)",
    )
    ap.add_argument("--unet", type=Path, help="the deterministic U-Net's test store (recentring)")
    ap.add_argument("--scale", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--as-calibrated",
        action="store_true",
        help="score the stored members as they are (no oracle): see as_calibrated",
    )
    args = ap.parse_args()
    results = ROOT / "results"
    prep = test_split(open_store(results / args.held / "prep" / "dataset.zarr"))
    truth = prep["hr_pr"].values.astype(np.float64)
    lr = prep["lr_pr"].values.astype(np.float64)
    ens = open_store(args.members)["pr"].values.astype(np.float64)
    if ens.ndim != 4 or ens.shape[1:] != truth.shape:
        raise SystemExit(
            f"{args.members}: pr has shape {ens.shape}, expected (member, {', '.join(map(str, truth.shape))})"
        )
    bic_store = results / f"transfer-{args.held}" / "downscaled" / "bicubic" / "test.zarr"
    bicubic = open_store(bic_store)["pr"].values.astype(np.float64)
    unet = open_store(args.unet)["pr"].values.astype(np.float64) if args.unet else None
    ok = np.isfinite(truth)
    bic_mae = np.abs(bicubic - truth)[ok].mean()
    mean_mae = np.abs(ens.mean(0) - truth)[ok].mean()
    print(
        f"{args.held}: {ens.shape[0]} members; their mean's MAE / bicubic's {mean_mae / bic_mae:.3f}"
    )
    if unet is not None:
        print(
            f"deterministic U-Net's MAE / bicubic's {np.abs(unet - truth)[ok].mean() / bic_mae:.3f}"
        )
    if args.as_calibrated:
        print(
            "| members | mean RMSE / bicubic | CRPS / bicubic MAE | fair CRPS / bicubic MAE | "
            "spread/skill | spectral ratio 2-4 / 4-8 / 8-16 / 16-32 |"
        )
        print("|---|---|---|---|---|---|")
        bic_rmse = np.sqrt(((bicubic - truth)[ok] ** 2).mean())
        for name, e in as_calibrated(ens, lr, unet, args.scale).items():
            rmse = np.sqrt(((e.mean(0) - truth)[ok] ** 2).mean())
            spec = " / ".join(f"{r:.2f}" for r in spectral_ratio(e, truth, BANDS).values())
            print(
                f"| {name} | {rmse / bic_rmse:.3f} | {crps_ensemble(e, truth) / bic_mae:.3f} | "
                f"{crps_fair(e, truth) / bic_mae:.3f} | {spread_skill(e, truth)['ratio']:.2f} | "
                f"{spec} |",
                flush=True,
            )
        return
    print(
        "| way | oracle factor | CRPS / bicubic MAE | spread/skill | spectral ratio 2-4 / 4-8 / 8-16 / 16-32 |"
    )
    print("|---|---|---|---|---|")
    for name, make in ways(ens, lr, unet, args.scale, args.seed).items():
        f = oracle_factor(make, truth)
        e = make(f)
        spec = " / ".join(f"{r:.2f}" for r in spectral_ratio(e, truth, BANDS).values())
        print(
            f"| {name} | {f:.3g} | {crps_ensemble(e, truth) / bic_mae:.3f} | "
            f"{spread_skill(e, truth)['ratio']:.2f} | {spec} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
