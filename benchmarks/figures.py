"""Figures on a continental domain: the whole-domain overview with its zoom (compare's
``overview.png``) and one map panel, on the MRMS CONUS grid (3496×7000 lat/lon cells, latitude
decreasing), timed against the same panel drawn at full resolution (no block means) in the same run.

    python benchmarks/figures.py [--dataset results/mrms-conus/prep/dataset.zarr] [--out DIR]

Without ``--dataset`` (or when it does not exist) a synthetic field on the MRMS grid is used.
Prints seconds per part, the ratio to the full-resolution panel, and the peak RSS (MB) before
and after that baseline.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from climai.data.prepared import PreparedDataset
from climai.evaluation.figures import draw_map, save_figure
from climai.evaluation.mapgrid import MapGrid
from climai.evaluation.overview import overview_figure, zoom_box, zoom_panels, zoom_size
from climai.io import open_store


def _synthetic(scale: int = 8) -> xr.Dataset:
    """A rain-like field on the MRMS grid (0.01°, 54.995°N..20.045°N, 130°W..60°W)."""
    y, x = 54.995 - 0.01 * np.arange(3496), -129.995 + 0.01 * np.arange(7000)
    rng = np.random.default_rng(0)
    coarse = rng.gamma(0.3, 2.0, (1, 3496 // 64 + 1, 7000 // 64 + 1)).astype(np.float32)
    hr = np.kron(coarse, np.ones((1, 64, 64), np.float32))[:, :3496, :7000]
    lr = hr.reshape(1, 3496 // scale, scale, 7000 // scale, scale).mean(axis=(2, 4))
    return xr.Dataset(
        {"hr_pr": (("time", "y", "x"), hr), "lr_pr": (("time", "y_lr", "x_lr"), lr)},
        coords={
            "y": ("y", y, {"units": "degrees_north"}),
            "x": ("x", x, {"units": "degrees_east"}),
        },
        attrs={"scale": scale},
    ).chunk({"time": 1, "y": 256, "x": 256})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="results/mrms-conus/prep/dataset.zarr")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: a temp one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="climai-figures-"))
    out.mkdir(parents=True, exist_ok=True)
    real = Path(args.dataset).exists()
    ds = open_store(args.dataset) if real else _synthetic()
    prep = PreparedDataset(ds)
    truth = prep.hr("pr")
    grid = MapGrid.of(ds)
    # the last step (in mrms-conus's test split)
    step = truth.sizes["time"] - 1
    times = {}

    t0 = time.perf_counter()
    whole = truth.isel(time=step).values  # what compare's maps read: one step
    times["read one step"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    box = zoom_box(whole, zoom_size(whole.shape, prep.scale), prep.scale)
    zooms = zoom_panels(prep.lr("pr"), whole, {"stand-in method": truth}, step, box, prep.scale)
    times["zoom box and its panels"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    overview_figure(whole, grid, box, zooms, "mm h-1", "MRMS overview", out / "overview.png")
    times["overview figure"] = time.perf_counter() - t0

    rss = {}
    for name, cells in (("map panel (block means)", 600), ("map panel, full resolution", 10**6)):
        t0 = time.perf_counter()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        draw_map(ax, whole, grid, max_cells=cells, vmin=0, vmax=10, cmap="Blues")
        save_figure(fig, out / f"panel_{cells}.png")
        times[name] = time.perf_counter() - t0
        rss[f"after the {name}"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

    base = times["map panel, full resolution"]
    print(
        json.dumps(
            {
                "data": str(args.dataset) if real else "synthetic field on the MRMS grid",
                "shape": list(whole.shape),
                "zoom": [box[0].start, box[0].stop, box[1].start, box[1].stop],
                "seconds": {k: round(v, 2) for k, v in times.items()},
                "ratio to the full-resolution panel": {
                    k: round(v / base, 3) for k, v in times.items()
                },
                "peak_rss_mb": rss,
                "figures": str(out),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
