"""Training throughput of climai's loop, from one run, against baselines measured in the same run.

1. climai's loop (``climai.training.fit``: patch Dataset + DataLoader, EMA, clipping, schedule,
   signal checks) against a bare PyTorch loop over the same batches pre-built in memory, with the
   same model, batch, optimiser and precision (target ≥ 0.85×);
2. the loader alone (DataLoader + collate) against training consumption (target ≥ 3×);
3. achieved FLOP/s of training against this machine's measured conv2d peak in the same precision
   (a large channels_last 3×3 convolution; target ≥ 0.35).

    python benchmarks/train.py [--repeats 3] [--steps 8] [--threads 2] [--channels 32 64 128]
    python benchmarks/train.py --vs-glibc-malloc   # with and without keep_freed_buffers()

``--vs-glibc-malloc`` runs the measurement twice in fresh processes, once after
:func:`climai.malloc.keep_freed_buffers` (freed memory kept in the heap, as a CPU inference does)
and once with glibc's defaults, and prints the ratios of the two (training does not call it:
this measures whether it should).

Medians over ``--repeats`` (after one warm-up repetition) are printed; record them in
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from climai.config import UNetConfig
from climai.data.dataset import Collate, PatchDataset
from climai.testing import tiny_sources
from climai.training.distributed import DistContext
from climai.training.loop import Loaders, bf16_supported, build_model, fit
from climai.training.losses import masked_mse
from climai.training.perf import conv_peak_flops, train_step_flops


def make_loaders(spec, train, val, cfg: UNetConfig, steps: int, seed: int) -> Loaders:
    return Loaders(
        PatchDataset(train, cfg.patch, 8, steps * cfg.batch, seed),
        PatchDataset(val, cfg.patch, 8, cfg.batch, seed + 1),
        Collate(spec),
        cfg.batch,
        cfg.workers,
        seed,
    )


def climai_loop(spec, loaders: Loaders, cfg: UNetConfig) -> float:
    """samples/s of climai's training loop (one epoch; validation excluded)."""
    result = fit(cfg, spec, loaders, DistContext(), log=lambda _m: None)
    return result.history[0]["samples_per_s"]


def bare_loop(spec, batches, cfg: UNetConfig, autocast: bool) -> float:
    """samples/s of a bare PyTorch loop over in-memory batches with the same model and batch."""
    torch.manual_seed(0)
    model = build_model(cfg, spec).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    data = [
        (b.x.contiguous(memory_format=torch.channels_last), b.base.nan_to_num(0.0), b.target)
        for b in batches
    ]
    t0 = time.perf_counter()
    for x, base, target in data:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            pred = model(x, base)
        loss = masked_mse(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(data) * cfg.batch / (time.perf_counter() - t0)


def loader_alone(loaders: Loaders, epoch: int) -> float:
    """samples/s of the DataLoader with the loop's settings, consuming nothing."""
    t0, n = time.perf_counter(), 0
    for batch in loaders.loader(loaders.train, epoch, DistContext()):
        n += batch.x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--vs-glibc-malloc", action="store_true",
                        help="run with and without keep_freed_buffers() and print the ratios")  # fmt: skip
    parser.add_argument("--keep-freed-buffers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vs_glibc_malloc:
        compare_malloc()
        return
    if args.keep_freed_buffers:
        from climai.malloc import keep_freed_buffers

        keep_freed_buffers()
    torch.set_num_threads(args.threads)
    spec, train, val, _ = tiny_sources(steps=40, size=128)
    cfg = UNetConfig(
        epochs=1,
        patch=args.patch,
        batch=args.batch,
        channels=args.channels,
        bf16=not args.no_bf16,
        workers=args.workers,
        warmup_steps=2,
        checkpoint_every=10**6,
    )
    autocast = cfg.bf16 and bf16_supported(torch.device("cpu"))
    loaders = make_loaders(spec, train, val, cfg, args.steps, seed=0)
    batches = list(loaders.loader(loaders.train, 0, DistContext()))
    model = build_model(cfg, spec).to(memory_format=torch.channels_last)
    b = batches[0]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        flops_per_step = train_step_flops(
            model, b.x.contiguous(memory_format=torch.channels_last), b.base
        )
    peak = conv_peak_flops(torch.device("cpu"), autocast)

    rows: dict[str, list[float]] = {"climai": [], "bare": [], "loader": []}
    for rep in range(args.repeats + 1):  # repetition 0 warms up kernels and allocator
        order = [("climai", lambda: climai_loop(spec, loaders, cfg))]
        order.append(("bare", lambda: bare_loop(spec, batches, cfg, autocast)))
        if rep % 2:
            order.reverse()
        for name, fn in order:
            value = fn()
            if rep:
                rows[name].append(value)
        value = loader_alone(loaders, rep)
        if rep:
            rows["loader"].append(value)
    med = {k: statistics.median(v) for k, v in rows.items()}
    achieved = flops_per_step / cfg.batch * med["climai"]
    precision = "bf16" if autocast else "fp32"
    if args.json:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({**med, "rss_mb": rss}))
        return
    print(
        f"model channels {cfg.channels}, batch {cfg.batch} × {cfg.patch}², {precision}, "
        f"{args.threads} threads, {args.steps} steps × {args.repeats} repeats (medians)"
    )
    print(f"climai loop        {med['climai']:8.2f} samples/s   {rows['climai']}")
    print(f"bare PyTorch loop  {med['bare']:8.2f} samples/s   {rows['bare']}")
    print(f"loader alone       {med['loader']:8.2f} samples/s   {rows['loader']}")
    print(f"training FLOPs     {flops_per_step / cfg.batch / 1e9:8.3f} GFLOP/sample (fwd+bwd)")
    print(f"achieved           {achieved / 1e9:8.2f} GFLOP/s")
    print(f"conv2d peak        {peak / 1e9:8.2f} GFLOP/s ({precision}, channels_last 3x3, 256 ch)")
    print(f"RATIO climai/bare      {med['climai'] / med['bare']:.3f}  (target >= 0.85)")
    print(f"RATIO loader/training  {med['loader'] / med['climai']:.3f}  (target >= 3)")
    print(f"RATIO achieved/peak    {achieved / peak:.3f}  (target >= 0.35)")


def compare_malloc() -> None:
    """The same measurement in fresh processes with and without keep_freed_buffers(), the
    ratios of their medians (samples/s: > 1 is faster with the buffers kept)."""
    argv = [a for a in sys.argv[1:] if a != "--vs-glibc-malloc"]
    runs = {}
    for name, extra in (("kept", ["--keep-freed-buffers"]), ("glibc", [])):
        out = subprocess.run([sys.executable, __file__, *argv, *extra, "--json"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:6s} {runs[name]}", flush=True)
    kept, glibc = runs["kept"], runs["glibc"]
    for key in ("climai", "bare"):
        print(f"RATIO {key} loop samples/s, kept / glibc  {kept[key] / glibc[key]:.3f}")
    print(f"RATIO peak RSS, kept / glibc            {kept['rss_mb'] / glibc['rss_mb']:.3f}")


if __name__ == "__main__":
    main()
