"""How well a spreading rule's factor transfers between radars, without any model (issue 19,
BENCHMARKS.md "Session 42").

    python benchmarks/spread_rules.py [source ...]     (default: knmi fmi mrms-conus bom-melbourne)

Reads each source's prepared test split (``results/<source>/prep/dataset.zarr``: run its campaign's
``preprocess`` first) and stands in for an ensemble's mean with bicubic, clipped at 0 and with
every LR block's mean conserved (the pooled U-Net is within 0.90–0.94 of bicubic's RMSE, so its
errors are nearly these). For each rule, a cell's spread is ``k × g``: ``intensity`` g = mean **
0.75 (``calibrate_by: intensity``), ``roughness`` g = mean × the coefficient of variation of the
3 × 3 LR cells around the cell's block (``calibrate_by: roughness``,
:func:`climai.models.constraints.lr_roughness`). Prints per source:

- ``k``: the factor that makes spread/skill exactly 1 on that source (an oracle), and the ratio of
  the largest to the smallest over the sources: 1 would mean a factor found on any radar fits all;
- ``loo``: the spread/skill a factor found on the other sources gives this one (their factors'
  geometric mean / this source's; the pipeline calibrates on the training radars' pooled
  validation patches instead, so this says where a rule leaves a held-out radar, not the figure);
- ``crps``: the CRPS of a Gaussian with that mean and spread at the oracle factor, over bicubic's
  MAE: how well the rule puts the spread where the error is (the calibration aside);
- the mean coefficient of variation of the HR cells inside a wet LR block and of the LR cells in
  2 × 2 LR windows, the scale invariance the roughness rule rests on.

Cells are sampled (at most ~3 M per source, seeded) so that the CONUS grid fits in memory.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from scipy.stats import norm

from climai.models.constraints import INTENSITY_POWER, lr_roughness
from climai.preprocess.interp import bicubic_at

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["knmi", "fmi", "mrms-conus", "bom-melbourne"]
CELLS = 3_000_000
RULES = {
    "intensity": lambda d: d["mean"] ** INTENSITY_POWER,
    "roughness": lambda d: d["mean"] * d["rough"],
}


def up(a: np.ndarray, s: int) -> np.ndarray:
    return a.repeat(s, -2).repeat(s, -1)


def block_mean(a: np.ndarray, s: int) -> np.ndarray:
    h, w = a.shape[-2] // s, a.shape[-1] // s
    return a.reshape(*a.shape[:-2], h, s, w, s).mean(axis=(-3, -1))


def window_cv(a: np.ndarray, s: int, threshold: float = 0.1) -> float:
    """Mean coefficient of variation of ``a`` inside ``s`` × ``s`` windows whose mean is wet."""
    h, w = a.shape[-2] // s * s, a.shape[-1] // s * s
    b = a[..., :h, :w].reshape(*a.shape[:-2], h // s, s, w // s, s)
    with warnings.catch_warnings():  # windows outside a radar's range are all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        m, sd = np.nanmean(b, axis=(-3, -1)), np.nanstd(b, axis=(-3, -1))
    wet = m > threshold
    return float(np.mean(sd[wet] / m[wet]))


def sample(source: str, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Sampled test-split cells of ``source``: truth, bicubic, the conserved mean, the roughness;
    and its sub-block and LR coefficients of variation."""
    ds = xr.open_zarr(ROOT / "results" / source / "prep" / "dataset.zarr")
    s = int(ds.attrs["scale"])
    steps = np.flatnonzero(ds["split"].values == 2)  # flag_meanings: unused train val test
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("truth", "bicubic", "mean", "rough")}
    cvs: dict[str, list[float]] = {"sub-block": [], "lr 2x2": []}
    for t in steps:
        hr = ds["hr_pr"].isel(time=int(t)).values.astype(np.float32)
        lr = ds["lr_pr"].isel(time=int(t)).values.astype(np.float32)
        bic = np.clip(bicubic_at(lr, s), 0, None)
        bm = block_mean(np.nan_to_num(bic), s)
        low = np.nan_to_num(lr)
        gain = np.where(bm > 0, low / np.where(bm > 0, bm, 1), 1)
        mean = np.where(up(bm, s) > 0, bic * up(gain, s), up(low, s))  # conserved, as inference
        rough = up(lr_roughness(torch.from_numpy(lr)).numpy(), s)
        ok = np.flatnonzero(np.isfinite(hr) & np.isfinite(bic))  # LR present
        ok = ok[rng.random(ok.size) < min(1.0, CELLS / len(steps) / max(ok.size, 1))]
        for k, v in (("truth", hr), ("bicubic", bic), ("mean", mean), ("rough", rough)):
            cols[k].append(v.ravel()[ok].astype(np.float64))
        cvs["sub-block"].append(window_cv(hr, s))
        cvs["lr 2x2"].append(window_cv(lr, 2))
    return {k: np.concatenate(v) for k, v in cols.items()}, {
        k: float(np.nanmean(v)) for k, v in cvs.items()
    }


def gaussian_crps(mu: np.ndarray, sd: np.ndarray, y: np.ndarray) -> float:
    sd = np.maximum(sd, 1e-9)
    z = (y - mu) / sd
    return float(np.mean(sd * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="*", default=SOURCES)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    data, cv = {}, {}
    for src in args.sources:
        data[src], cv[src] = sample(src, rng)
        print(f"{src}: {data[src]['truth'].size} cells; mean CV inside wet LR blocks "
              f"{cv[src]['sub-block']:.2f}, of the LR in 2 x 2 windows {cv[src]['lr 2x2']:.2f}")  # fmt: skip
    for rule, g in RULES.items():
        k = {s: float(np.sqrt(((d["truth"] - d["mean"]) ** 2).sum() / (g(d) ** 2).sum()))
             for s, d in data.items()}  # fmt: skip
        print(
            f"\n{rule}: oracle factor max / min over the sources {max(k.values()) / min(k.values()):.2f}"
        )
        print("| source | k | loo spread/skill | Gaussian CRPS / bicubic MAE |")
        print("|---|---|---|---|")
        for s, d in data.items():
            others = [np.log(k[o]) for o in k if o != s]
            loo = float(np.exp(np.mean(others))) / k[s] if others else float("nan")
            mae = float(np.mean(np.abs(d["truth"] - d["bicubic"])))
            crps = gaussian_crps(d["mean"], k[s] * g(d), d["truth"]) / mae
            print(f"| {s} | {k[s]:.3f} | {loo:.2f} | {crps:.3f} |")


if __name__ == "__main__":
    main()
