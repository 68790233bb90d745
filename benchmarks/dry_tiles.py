"""Dry tile steps skipped by a conserving rain ensemble: time with and without the skip, same run.

A conserving emulator of precipitation alone writes exactly 0 wherever the LR is 0 (the
multiplicative constraint), so :class:`climai.inference.tiling.TiledPredictor` does not compute a
tile step whose own LR cells are all 0 or missing. This times the tiled prediction of the toy
world's rain (block means at ``--scale``, plus 0.1 mm h-1 so that every cell is wet) with its
first ``--dry`` fraction of LR rows set to 0, computing every tile (the baseline) and skipping
the dry ones, alternately, ``--repeats`` times; it prints the tile steps skipped, the medians
and their ratio, and checks that a deterministic model writes the same values both ways
(bitwise).

    python benchmarks/dry_tiles.py                    # 512² HR, 4 steps, 4 members, dry 0.5
    python benchmarks/dry_tiles.py --dry 0.3 --members 1
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
    ap.add_argument("--size", type=int, default=512, help="HR cells per side")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--dry", type=float, default=0.5, help="fraction of LR rows set to 0")
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--scale", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from climai.data.features import normalised_static
    from climai.inference.predict import model_predictor
    from climai.inference.tiling import TiledPredictor, TileLayout
    from climai.models.unet import ResidualUNet
    from climai.testing import lr_inputs, toy_feature_spec, trained_like_unet

    spec = toy_feature_spec(args.scale).subset(["pr"])
    channels = [16, 32, 64]
    base = trained_like_unet(spec, channels)
    model = base
    if args.members > 1:
        model = ResidualUNet(spec.in_channels, spec.out_channels, channels, noise_channels=2)
        model.load_state_dict(base.state_dict(), strict=False)
        model.eval()
    lr, static = lr_inputs(args.size, args.size, args.steps, args.scale)
    values = lr["pr"].values[:, None].astype(np.float32) + 0.1  # wet everywhere...
    rows = values.shape[-2]
    values[:, :, : round(args.dry * rows)] = 0.0  # ...but the first rows: dry
    st = np.stack([static[s].values for s in spec.statics])
    times = pd.DatetimeIndex(lr["time"].values)
    layout = TileLayout.build(values.shape[-2:], args.scale, args.tile, args.overlap, 8)

    def run(skip: bool, net: torch.nn.Module, members: int) -> tuple[float, np.ndarray, int]:
        predict = model_predictor(net, torch.device("cpu"), True, members)
        tiled = TiledPredictor(predict, spec, layout, args.batch, True, members, skip_missing=skip)
        t0 = time.perf_counter()
        bands = tiled.run(
            values, lambda t: normalised_static(spec, st[:, t.y0 : t.y1, t.x0 : t.x1]), times
        )
        out = np.concatenate([b[2] for b in bands], axis=-2)
        return time.perf_counter() - t0, out, tiled.skipped

    full_det, part_det = run(False, base, 1)[1], run(True, base, 1)[1]
    same = np.array_equal(full_det, part_det, equal_nan=True)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    skipped = 0
    for _ in range(args.repeats):
        for skip in (False, True):
            t, _, n = run(skip, model, args.members)
            seconds[skip].append(t)
            skipped = max(skipped, n)
    total = len(layout) * args.steps
    every, dry = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(
        f"{args.size}² HR, {args.steps} steps, {args.members} member(s), tile {args.tile}, "
        f"overlap {args.overlap}, {torch.get_num_threads()} threads: {skipped} of {total} tile "
        f"steps dry ({skipped / total:.2f})"
    )
    print(f"every tile computed: median {every:.2f} s over {args.repeats} (baseline)")
    print(f"dry tiles skipped:   median {dry:.2f} s, ratio {dry / every:.2f}")
    print(f"deterministic model, same values both ways (bitwise): {same}")
    if not same:
        raise SystemExit("the skipped run differs from the full one")


if __name__ == "__main__":
    main()
