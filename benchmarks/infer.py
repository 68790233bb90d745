"""The inference engine in bounded memory: peak RSS, throughput and FLOP/s on 1× and 16× the area.

Each size runs ``climai downscale`` end to end (zarr in, zarr out) in a fresh subprocess, which
reports its peak RSS and wall time; in the same subprocess the bare model forward is then timed on
the same tile batches (same shapes, same count, same members, threads and autocast), and a large
channels_last 3×3 conv2d in the same precision gives this machine's attainable peak
(:func:`climai.training.perf.conv_peak_flops`, as benchmarks/train.py). Printed: medians over
``--repeats`` runs, the engine / bare-forward ratio and achieved FLOP/s (conv and matmul FLOPs of
the forward passes the run made, counted by torch's FlopCounterMode) over the peak.

    python benchmarks/infer.py          # 512² and 2048² HR cells, tile 256, 4 steps, 3 repeats
    python benchmarks/infer.py --sizes 256 1024 --tile 128 --overlap 32 --steps 1
    python benchmarks/infer.py --members 4 --conserve   # a conserving ensemble (unet-crps-like)
    python benchmarks/infer.py --fp32 --writer-thread   # variants: fp32, writes on a thread

Variants (each measured against its own bare forward and conv peak in the same subprocess):
``--batch`` (samples per forward), ``--fp32`` (no bf16 autocast: fp32 forward, fp32 peak),
``--writer-thread`` (zarr writes on a thread of their own, overlapping the next band's compute,
instead of in the compute loop),
``--compile`` (the networks wrapped in ``torch.compile``, the engine and the bare forward alike;
the compilation happens in a warm-up run on a copy of the inputs, not timed),
``--vs-glibc-malloc`` (each repeat also runs with glibc's default malloc settings, without
:func:`climai.malloc.keep_freed_buffers`, and the ratios of the two are printed).

The model is a freshly initialised residual U-Net (weights seeded, head non-zero so that it does
real work) on the toy campaign's features, with noise channels and ``--members`` members when
``--members`` > 1; the LR input and the DEM are synthetic fields written to zarr stores before any
timing.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_inputs(
    root: Path,
    size: int,
    steps: int,
    channels: list[int],
    members: int = 1,
    conserve: bool = False,
    scale: int = 8,
) -> None:
    """Model file, LR store and static store for a ``size``² HR domain (not timed); with
    ``members`` > 1 the model draws noise (2 channels per level) and that many members."""
    import pandas as pd
    import torch
    import xarray as xr

    from climai.grids import crs_variable
    from climai.io import write_store
    from climai.io.checkpoints import save_model
    from climai.models.interpolate import upsample
    from climai.models.unet import ResidualUNet
    from climai.synthetic import TOY_CRS
    from climai.testing import model_card_for, toy_feature_spec, trained_like_unet

    spec = toy_feature_spec(scale)
    model = trained_like_unet(spec, channels)
    card = model_card_for(spec, channels)
    if members > 1:
        noisy = ResidualUNet(spec.in_channels, spec.out_channels, channels, noise_channels=2)
        noisy.load_state_dict(model.state_dict(), strict=False)  # noise projections: fresh
        model = noisy
        card["architecture"].update(noise_channels=2, members=members)
    if conserve:
        card["architecture"]["constraint"] = "conserve"
    save_model(root / "model.pt", model.state_dict(), card)
    rng = np.random.default_rng(size)
    n = size // scale
    dx = 500.0
    x_lr = (np.arange(n) + 0.5) * dx * scale
    lr = xr.Dataset(
        {
            "tas": (
                ("time", "y", "x"),
                285 + 5 * rng.standard_normal((steps, n, n)),
                {"units": "K"},
            ),
            "pr": (("time", "y", "x"), rng.gamma(0.3, 1.0, (steps, n, n)), {"units": "mm h-1"}),
        },
        coords={
            "time": pd.date_range("2020-06-01", periods=steps, freq="h"),
            "y": ("y", x_lr, {"units": "m", "axis": "Y"}),
            "x": ("x", x_lr, {"units": "m", "axis": "X"}),
        },
    ).astype(np.float32)
    lr["crs"] = crs_variable(TOY_CRS)
    write_store(lr.chunk({"time": 1}), root / "lr.zarr")
    x_hr = (np.arange(size) + 0.5) * dx
    oro = upsample(torch.from_numpy(rng.random((1, 1, n, n), dtype=np.float32)) * 2000, scale)[0, 0]
    static = xr.Dataset(
        {
            "orography": (("y", "x"), oro.numpy(), {"units": "m"}),
            "lsm": (("y", "x"), (oro.numpy() > 200).astype(np.float32), {"units": "1"}),
        },
        coords={"y": x_hr, "x": x_hr},
    )
    write_store(static.chunk({"y": 512, "x": 512}), root / "static.zarr")


def child(args: argparse.Namespace) -> None:
    """One measured run: downscale, then the bare forward on the recorded batch shapes and the
    conv2d peak."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import climai.inference.downscale as stage
    import climai.inference.engine as engine
    from climai.config import InferConfig
    from climai.inference.predict import emulator_predictor, resolve_device
    from climai.training.perf import conv_peak_flops

    torch.set_num_threads(args.threads)
    if args.glibc_malloc:  # the baseline: every large buffer a fresh mmap, as before
        import climai.inference.predict as predict_module

        predict_module.keep_freed_buffers = lambda: False
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    real = stage.emulator_predictor

    def recording(*a, **k):  # the predictor the run uses, noting each batch's shapes
        predict = real(*a, **k)

        def wrapped(x, base, seed):
            shapes.append((tuple(x.shape), tuple(base.shape)))
            return predict(x, base, seed)

        return wrapped

    if args.compile:  # the networks compiled, in the engine and the bare forward alike
        real_load = stage.load_emulator

        def compiled_load(*a, **k):
            emulator, spec, card = real_load(*a, **k)
            emulator.nets = {g: torch.compile(n, dynamic=False) for g, n in emulator.nets.items()}
            return emulator, spec, card

        stage.load_emulator = compiled_load
    stage.emulator_predictor = recording
    engine.BACKGROUND_WRITES = args.writer_thread
    root = Path(args.root)
    cfg = InferConfig(
        tile=args.tile, overlap=args.overlap, batch=args.batch, device=args.device,
        progress=False, bf16=not args.fp32,
    )  # fmt: skip
    if args.compile:  # compile (and warm up) on a copy of the run, untimed
        stage.run_downscale(
            root / "model.pt", root / "lr.zarr", root / "warm.zarr", root / "static.zarr", cfg,
            args.threads,
        )  # fmt: skip
        shapes.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    stage.run_downscale(
        root / "model.pt",
        root / "lr.zarr",
        root / "out.zarr",
        root / "static.zarr",
        cfg,
        args.threads,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emulator, spec, _ = stage.load_emulator(root / "model.pt")
    device = resolve_device(args.device)
    predict = emulator_predictor(emulator, spec.variables, device, cfg.bf16)
    gen = torch.Generator().manual_seed(0)
    predict(torch.randn(shapes[0][0]), torch.randn(shapes[0][1]), 0)  # warm-up
    batches = [(torch.randn(s, generator=gen), torch.randn(b, generator=gen)) for s, b in shapes]
    t0, c0 = time.perf_counter(), time.process_time()
    for i, (x, base) in enumerate(batches):
        predict(x, base, i)
    bare, bare_cpu = time.perf_counter() - t0, time.process_time() - c0
    net = next(iter(emulator.nets.values()))
    net = getattr(net, "_orig_mod", net)  # FLOPs of the eager network
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, *shapes[0][0][1:]), torch.zeros(1, *shapes[0][1][1:]))
    flop_per_cell = counter.get_total_flops() / (shapes[0][0][-2] * shapes[0][0][-1])
    members = emulator.members if emulator.stochastic else 1
    tile_cells = sum(s[0] * s[-2] * s[-1] for s, _ in shapes) * members
    peak = conv_peak_flops(device, cfg.bf16 and stage_bf16(device))
    steps = len(__import__("xarray").open_zarr(root / "lr.zarr")["time"])
    print(json.dumps({"wall_s": wall, "bare_s": bare, "cpu_s": cpu, "bare_cpu_s": bare_cpu,
                      "rss_mb": rss_mb, "batches": len(shapes), "members": members,
                      "hr_mpix": args.size**2 * steps / 1e6,
                      "gflop": flop_per_cell * tile_cells / 1e9, "peak_gflops": peak / 1e9,
                      "bf16": float(cfg.bf16 and stage_bf16(device))}))  # fmt: skip


def stage_bf16(device) -> bool:
    """Whether the engine runs bf16 autocast on ``device`` (as the peak must)."""
    from climai.training.loop import bf16_supported

    return bool(bf16_supported(device))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[512, 2048], help="HR edges: 1× and 16×")
    p.add_argument("--steps", type=int, default=4, help="time steps downscaled")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="engine and forward")
    p.add_argument("--members", type=int, default=1, help="ensemble members (noise channels)")
    p.add_argument("--conserve", action="store_true", help="constraint: conserve")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast (fp32 forward and peak)")
    p.add_argument("--writer-thread", action="store_true", help="zarr writes on a thread")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks")
    p.add_argument("--vs-glibc-malloc", action="store_true",
                   help="also run each repeat with glibc's default malloc settings")  # fmt: skip
    p.add_argument("--glibc-malloc", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    results: dict[int, list[dict[str, float]]] = {}
    glibc: dict[int, list[dict[str, float]]] = {s: [] for s in args.sizes}
    with tempfile.TemporaryDirectory(prefix="climai-bench-") as tmp:
        for size in args.sizes:
            root = Path(tmp) / str(size)
            root.mkdir()
            make_inputs(root, size, args.steps, args.channels, args.members, args.conserve)
            results[size] = []
        for rep in range(args.repeats):
            for size in args.sizes:
                cmd = [sys.executable, __file__, "--child", "--root", str(Path(tmp) / str(size)),
                       "--size", str(size), "--tile", str(args.tile), "--overlap", str(args.overlap),
                       "--batch", str(args.batch), "--threads", str(args.threads),
                       "--device", args.device]  # fmt: skip
                cmd += [f"--{k.replace('_', '-')}" for k in ("fp32", "writer_thread", "compile")
                        if getattr(args, k)]  # fmt: skip
                runs = [(results, cmd)]
                if args.vs_glibc_malloc:
                    runs.append((glibc, [*cmd, "--glibc-malloc"]))
                for store, command in runs:
                    shutil.rmtree(Path(tmp) / str(size) / "warm.zarr", ignore_errors=True)
                    shutil.rmtree(Path(tmp) / str(size) / "out.zarr", ignore_errors=True)
                    out = subprocess.run(command, capture_output=True, text=True, check=False)
                    if out.returncode:
                        sys.exit(f"benchmark run failed:\n{out.stderr[-3000:]}")
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    store[size].append(row)
                    tag = " (glibc malloc defaults)" if store is glibc else ""
                    print(f"repeat {rep + 1} size {size}²{tag}: {row}", flush=True)
    med = {
        s: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        for s, rows in results.items()
    }
    small, big = args.sizes
    print(f"\nmedians over {args.repeats} runs (tile {args.tile}, overlap {args.overlap}, batch "
          f"{args.batch}, U-Net {args.channels}, {args.steps} steps, {args.threads} threads, "
          f"{args.members} member(s){', conserving' if args.conserve else ''}"
          f"{', bf16 autocast' if med[args.sizes[0]]['bf16'] else ', fp32'}{', writer thread' if args.writer_thread else ''}"
          f"{', torch.compile' if args.compile else ''}):")  # fmt: skip
    for s in args.sizes:
        m = med[s]
        print(f"  {s}²: peak RSS {m['rss_mb']:.0f} MiB, {m['hr_mpix'] / m['wall_s']:.3f} HR Mpix/s "
              f"(bare forward {m['hr_mpix'] / m['bare_s']:.3f}), per CPU-s "
              f"{m['hr_mpix'] / m['cpu_s']:.3f} (bare {m['hr_mpix'] / m['bare_cpu_s']:.3f}), "
              f"{m['batches']:.0f} batches")  # fmt: skip
    ratios = {
        s: statistics.median(r["bare_s"] / r["wall_s"] for r in results[s]) for s in args.sizes
    }
    cpu_ratios = {
        s: statistics.median(r["bare_cpu_s"] / r["cpu_s"] for r in results[s]) for s in args.sizes
    }
    print(f"  output area ratio {big**2 / small**2:.0f}×; peak RSS ratio "
          f"{med[big]['rss_mb'] / med[small]['rss_mb']:.3f} (acceptance ≤ 1.3)")  # fmt: skip
    for s in args.sizes:
        m = med[s]
        print(f"  {s}²: throughput / bare forward: wall {ratios[s]:.3f}, CPU time "
              f"{cpu_ratios[s]:.3f} (acceptance ≥ 0.8)")  # fmt: skip
        print(f"  {s}²: achieved {m['gflop'] / m['wall_s']:.2f} GFLOP/s engine, "
              f"{m['gflop'] / m['bare_s']:.2f} bare forward, conv2d peak "
              f"{m['peak_gflops']:.1f} GFLOP/s: engine/peak {m['gflop'] / m['wall_s'] / m['peak_gflops']:.3f}"
              f" ({m['members']:.0f} member(s))")  # fmt: skip
    for s in args.sizes if args.vs_glibc_malloc else []:
        pairs = list(zip(results[s], glibc[s], strict=True))
        wall = statistics.median(k["wall_s"] / g["wall_s"] for k, g in pairs)
        bare = statistics.median(k["bare_s"] / g["bare_s"] for k, g in pairs)
        rss = statistics.median(k["rss_mb"] / g["rss_mb"] for k, g in pairs)
        print(f"  {s}²: freed buffers kept / glibc defaults: wall {wall:.3f}, bare forward "
              f"{bare:.3f}, peak RSS {rss:.3f} (glibc defaults: wall "
              f"{statistics.median(g['wall_s'] for g in glibc[s]):.1f} s, peak RSS "
              f"{statistics.median(g['rss_mb'] for g in glibc[s]):.0f} MiB)")  # fmt: skip


if __name__ == "__main__":
    main()
