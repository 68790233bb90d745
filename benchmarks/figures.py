"""Figures on a continental domain: the whole-domain overview with its zoom (compare's
``overview.png``) and one map panel, on the MRMS CONUS grid (3496×7000 lat/lon cells, latitude
decreasing), timed against the same panel drawn at full resolution (no block means) in the same run.

    python benchmarks/figures.py [--dataset results/mrms-conus/prep/dataset.zarr] [--out DIR]
    python benchmarks/figures.py --maps [--repeats 7]

Without ``--dataset`` (or when it does not exist) a synthetic field on the MRMS grid is used.
Prints seconds per part, the ratio to the full-resolution panel, and the peak RSS (MB) before
and after that baseline.

``--maps`` times the figure every campaign draws most of, compare's comparison maps of a small
grid (one test step, tas and pr, LR input + truth + 3 methods: 20 panels, 32² cells), drawn
with climai's figure settings (``FIGURE_RC``, ``MAP_TICKS``) and, alternately in the same run,
with matplotlib's defaults (automatic title heights and tick counts, the baseline); prints the
median seconds of each and their ratio.
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


def small_maps(out: Path, repeats: int) -> None:
    """Median seconds of compare's comparison maps on a 32² grid, climai's settings against
    matplotlib's defaults (alternating, so that both see the same machine load)."""
    from climai.evaluation import figures

    rng = np.random.default_rng(0)
    coords = {c: (c, 4300.0 + 0.5 * np.arange(32), {"units": "km"}) for c in ("y", "x")}
    grid = MapGrid.of(xr.Dataset(coords=coords))
    labels = ["LR input", "truth", "bicubic", "quantile-mapping", "unet"]
    steps = [{v: {k: rng.random((32, 32)) for k in labels} for v in ("tas", "pr")}]
    units = {"tas": "K", "pr": "mm h-1"}
    ours = (dict(figures.FIGURE_RC), figures.MAP_TICKS)
    defaults = ({"axes.titley": None}, "auto")  # matplotlib's: auto title height, auto ticks
    times: dict[str, list[float]] = {"climai": [], "matplotlib defaults": []}
    try:
        for i in range(repeats + 1):  # the first pair warms the caches (fonts, colormaps)
            for name, (rc, ticks) in (("climai", ours), ("matplotlib defaults", defaults)):
                figures.FIGURE_RC.update(rc)  # figure_style enters rc_context(FIGURE_RC) per call
                figures.MAP_TICKS = ticks
                t0 = time.perf_counter()
                figures.maps_figure(steps, ["t"], units, "maps", out / f"maps_{i}.png", grid)
                if i:
                    times[name].append(time.perf_counter() - t0)
    finally:
        figures.FIGURE_RC.update(ours[0])
        figures.MAP_TICKS = ours[1]
    median = {k: float(np.median(v)) for k, v in times.items()}
    print(
        json.dumps(
            {
                "figure": "comparison maps, 20 panels of 32² cells",
                "repeats": repeats,
                "median_seconds": {k: round(v, 3) for k, v in median.items()},
                "ratio climai / matplotlib defaults": round(
                    median["climai"] / median["matplotlib defaults"], 3
                ),
            },
            indent=2,
            ensure_ascii=False,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="results/mrms-conus/prep/dataset.zarr")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: a temp one)")
    parser.add_argument("--maps", action="store_true", help="time the small comparison maps")
    parser.add_argument("--repeats", type=int, default=7, help="--maps: draws of each")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="climai-figures-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.maps:
        small_maps(out, args.repeats)
        return
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
