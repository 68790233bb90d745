"""Only the wet parts of a tile computed by a conserving rain emulator, on a real radar.

    python benchmarks/wet_parts.py                    # transfer-mrms-conus's unet, rows 1536-2560
    python benchmarks/wet_parts.py --method unet-crps --steps 0 --rows 1536:2048

Under multiplicative conservation an HR block whose LR value is 0 is exactly 0 whatever the
network predicts, so :class:`climai.inference.tiling.TiledPredictor` runs the network only on
the part of each tile around its wet LR cells (``crop_dry``). This runs a trained campaign's
emulator over a band of HR rows of its test split (by default the MRMS CONUS test split, 6 % of
its LR cells wet) with whole tiles (the baseline) and with the parts, alternately ``--repeats``
times, as the ``infer`` rule builds it (the model card's members, spread rule and blur, the
``infer`` defaults: tile 512, overlap 128, batch 4). It prints the medians and their ratio, the
fraction of the tiles' cells the parts hold, how far the two fields are apart (max and RMS of
the difference, against the RMS of the field) and both fields' RMSE against the truth (an
ensemble: its members' mean).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--campaign", default="transfer-mrms-conus")
    ap.add_argument("--prepared", default="mrms-conus", help="the campaign whose prep/ it reads")
    ap.add_argument("--method", default="unet")
    ap.add_argument("--rows", default="1536:2560", help="HR rows y0:y1 (multiples of 8 × scale)")
    ap.add_argument("--steps", default="", help="test-split steps, e.g. 0,3 (default: all)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)

    import pandas as pd
    import torch
    import xarray as xr

    from climai.config.stages import InferConfig
    from climai.data.features import normalised_static
    from climai.data.prepared import PreparedDataset
    from climai.inference.predict import emulator_predictor, load_emulator
    from climai.inference.tiling import TiledPredictor, TileLayout

    root = Path(args.results)
    emulator, spec, card = load_emulator(root / args.campaign / "models" / args.method / "model.pt")
    prep = PreparedDataset(xr.open_zarr(root / args.prepared / "prep" / "dataset.zarr"))
    test = prep.split("test")
    if args.steps:
        test = test.isel(time=[int(s) for s in args.steps.split(",")])
    s = spec.scale
    y0, y1 = (int(v) for v in args.rows.split(":"))
    if y0 % s or y1 % s:
        raise SystemExit(f"--rows {args.rows}: both ends must be multiples of the scale {s}")
    region = test.isel(y=slice(y0, y1), y_lr=slice(y0 // s, y1 // s))
    lr = region.lr_stack(spec.variables)
    truth = region.hr_stack(spec.variables)
    static = normalised_static(spec, region.static_stack(spec.statics))
    times = pd.DatetimeIndex(region.times)
    cfg = InferConfig()
    members = emulator.members if emulator.stochastic else 1
    arch = card.get("architecture", {})
    factors = arch.get("inflation")
    inflation = [float(factors[v]) for v in spec.variables] if factors and members > 1 else None
    predict = emulator_predictor(
        emulator, spec.variables, torch.device("cpu"), cfg.bf16, members, 1,
        float(arch.get("departure_blur", 0.0)),
    )  # fmt: skip
    layout = TileLayout.build(lr.shape[-2:], s, cfg.tile, cfg.overlap, emulator.multiple)

    def run(crop: bool) -> tuple[float, np.ndarray, list[int]]:
        tiled = TiledPredictor(
            predict, spec, layout, cfg.batch, emulator.constraint == "conserve", members,
            inflation=inflation, spread_rule=arch.get("spread_rule", "inflation"), crop_dry=crop,
        )  # fmt: skip
        t0 = time.perf_counter()
        bands = tiled.run(lr, lambda t: static[:, t.y0 : t.y1, t.x0 : t.x1], times, seed=0)
        out = np.concatenate([b[2] for b in bands], axis=-2)
        return time.perf_counter() - t0, out, tiled.cells

    seconds: dict[bool, list[float]] = {False: [], True: []}
    fields: dict[bool, np.ndarray] = {}
    cells: list[int] = []
    for _ in range(args.repeats):
        for crop in (False, True):
            t, out, c = run(crop)
            seconds[crop].append(t)
            fields[crop] = out.mean(axis=1) if members > 1 else out
            cells = c if crop else cells
    whole, part = fields[False], fields[True]
    valid = np.isfinite(truth) & np.isfinite(whole)
    diff = (part - whole)[valid]
    rms = float(np.sqrt(np.mean(whole[valid] ** 2)))

    def rmse(f: np.ndarray) -> float:
        return float(np.sqrt(np.mean((f[valid] - truth[valid]) ** 2)))

    every, parts = statistics.median(seconds[False]), statistics.median(seconds[True])
    wet = float((np.nan_to_num(lr) != 0).mean())
    print(
        f"{args.campaign} {args.method} ({members} member(s)), test steps {len(times)}, HR rows "
        f"{y0}-{y1} × {lr.shape[-1] * s}, tile {cfg.tile}, overlap {cfg.overlap}, "
        f"{torch.get_num_threads()} threads; LR cells wet {wet:.3f}"
    )
    print(f"whole tiles: median {every:.1f} s over {args.repeats} (baseline)")
    print(
        f"wet parts:   median {parts:.1f} s, ratio {parts / every:.3f}; the parts hold "
        f"{cells[0] / max(1, cells[1]):.3f} of the computed tiles' cells"
    )
    print(
        f"difference: max {np.abs(diff).max():.3g}, RMS {np.sqrt(np.mean(diff**2)):.3g} "
        f"(the field's RMS {rms:.3g}); RMSE against the truth: whole {rmse(whole):.5f}, "
        f"parts {rmse(part):.5f}"
    )


if __name__ == "__main__":
    main()
