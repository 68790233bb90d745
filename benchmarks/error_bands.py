"""Where each method's error lives, by wavelength (issue 19 diagnostic).

On a campaign's test split, the squared error of bicubic, conserved bicubic (every LR block's mean
restored, no model) and each downscaled method is split by wavelength band: < 4 (down to the
grid's diagonal √2), 4-8, ..., scale-2·scale and ≥ 2·scale HR cells. The LR grid resolves
wavelengths of 2·scale cells and longer (its Nyquist limit); shorter ones are the sub-block
structure a model has to infer.
Each band is printed as a fraction of bicubic's MSE, so a row's bands add up to its
(RMSE / bicubic)². The last column, *resolved gone*, is the RMSE / bicubic the method would reach
if all its error at resolved wavelengths were removed: no model that keeps the method's
sub-block error can do better.

The split is exact (Parseval over the whole grid): missing cells count as zero error, as they do
in the RMSE, so the bands add up to the campaign's RMSE to rounding; the step to zero at a
radar's range edge puts some error power at short wavelengths. Ensembles are scored by their
members' mean.

    python benchmarks/error_bands.py transfer-knmi --methods unet unet-crps
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from climai.config.loading import load_config
from climai.models.constraints import conserve
from climai.models.interpolate import upsample
from climai.preprocess.splits import SPLITS

REPO = Path(__file__).resolve().parents[1]


def band_edges(scale: int) -> list[float]:
    """Wavelength band edges in HR cells: 0, 4, 8, ..., 2·scale, then ∞ (the first band holds
    every wavelength under 4 cells, down to the grid's diagonal √2)."""
    edges = [0.0, 4.0]
    while edges[-1] < 2 * scale:
        edges.append(edges[-1] * 2)
    return [*edges, math.inf]


def band_sums(error: np.ndarray, edges: list[float]) -> np.ndarray:
    """Sum of squared ``error`` ``(H, W)`` (NaN = no error) per wavelength band ``[lo, hi)``:
    the bands add up to ``nansum(error²)`` (Parseval; the mean, wavelength ∞, is in the last)."""
    e = np.nan_to_num(np.asarray(error, np.float64))
    h, w = e.shape
    k = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    wavelength = np.divide(1.0, k, out=np.full_like(k, math.inf), where=k > 0)
    weight = np.full(k.shape, 2.0)  # the real FFT's half plane counts twice ...
    weight[:, 0] = 1.0  # ... except its own column and the Nyquist column
    if w % 2 == 0:
        weight[:, -1] = 1.0
    power = np.abs(np.fft.rfft2(e)) ** 2 * weight / (h * w)
    return np.array(
        [
            power[(wavelength >= lo) & ((wavelength < hi) | (hi == math.inf))].sum()
            for lo, hi in itertools.pairwise(edges)
        ]
    )


def prep_of(results: Path, campaign: str) -> Path:
    """The prepared dataset a campaign reads: ``prepared:`` of its config (``config/campaigns/``
    or, for ``benchmarks/transfer_variant.py``'s, ``RESULTS/variants/``) merged over
    ``config/config.yaml``; its own ``prep/`` where it has no such file."""
    for path in (REPO / "config" / "campaigns", results / "variants"):
        if (path / f"{campaign}.yaml").is_file():
            cfg = load_config(REPO / "config" / "config.yaml", path / f"{campaign}.yaml")
            other = cfg.prepared.campaign or campaign
            return results / other / cfg.prepared.folder / "dataset.zarr"
    return results / campaign / "prep" / "dataset.zarr"


def score(results: Path, campaign: str, methods: list[str]) -> tuple[list[float], dict]:
    """``(edges, {row: band sums / bicubic's MSE})`` on the campaign's test split."""
    ds = xr.open_zarr(prep_of(results, campaign))
    scale = int(ds.attrs["scale"])
    var = next(v for v in ds.data_vars if v.startswith("hr_"))[3:]
    steps = np.flatnonzero(ds["split"].values == SPLITS.index("test"))
    stores = {
        m: xr.open_zarr(results / campaign / "downscaled" / m / "test.zarr")[var] for m in methods
    }
    edges = band_edges(scale)
    sums = {r: np.zeros(len(edges) - 1) for r in ["bicubic", "conserved bicubic", *methods]}
    for j, t in enumerate(steps):
        lr = torch.from_numpy(ds[f"lr_{var}"].isel(time=t).values.astype(np.float32))[None, None]
        truth = ds[f"hr_{var}"].isel(time=t).values.astype(np.float32)
        bic = upsample(lr, scale, "bicubic").clamp(min=0)
        fields = {
            "bicubic": bic[0, 0].numpy(),
            "conserved bicubic": conserve(bic.nan_to_num(0.0), lr, scale, [True])[0, 0].numpy(),
        }
        for m, da in stores.items():
            step = da.isel(time=j)
            fields[m] = (step.mean("member") if "member" in step.dims else step).values
        ok = np.isfinite(truth) & np.isfinite(fields["bicubic"])
        for row, f in fields.items():
            sums[row] += band_sums(np.where(ok, f - truth, np.nan), edges)
    total = sums["bicubic"].sum()
    return edges, {row: s / total for row, s in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("campaigns", nargs="+", help="campaigns with downscaled test stores")
    ap.add_argument("--methods", nargs="*", default=["unet"])
    ap.add_argument("--results", type=Path, default=Path("results"))
    args = ap.parse_args()
    for campaign in args.campaigns:
        edges, rows = score(args.results, campaign, args.methods)
        names = [
            f"<{hi:g}" if lo == 0 else f"{lo:g}-{hi:g}" if hi < math.inf else f"≥{lo:g}"
            for lo, hi in itertools.pairwise(edges)
        ]
        print(f"\n{campaign}: MSE per wavelength band (HR cells) / bicubic's MSE")
        print(f"| method | RMSE / bicubic | {' | '.join(names)} | resolved gone |")
        print("|---|---|" + "---|" * len(names) + "---|")
        for row, f in rows.items():
            print(
                f"| {row} | {math.sqrt(f.sum()):.3f} | "
                + " | ".join(f"{x:.3f}" for x in f)
                + f" | {math.sqrt(f[:-1].sum()):.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
