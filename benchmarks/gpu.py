"""GPU training benchmark: a fixed number of climai training steps on a synthetic campaign sized
for one H100/A100; prints samples/s, MFU (bf16) and peak GPU memory.

    python benchmarks/gpu.py                 # on a GPU machine (the run takes a few minutes)
    python benchmarks/gpu.py --cpu-smoke     # tiny and on CPU: keeps the script working in CI

MFU is the achieved training FLOP/s (matmul/conv FLOPs of forward + backward, counted by
``torch.utils.flop_counter``) over the GPU's dense bf16 peak (H100 SXM 989 TFLOP/s, A100 312);
the ratio to a conv2d peak measured in the same run is printed as well.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from climai.config import UNetConfig
from climai.data.dataset import Collate, PatchDataset
from climai.testing import tiny_sources
from climai.training.distributed import DistContext
from climai.training.loop import Loaders, bf16_supported, build_model, fit
from climai.training.perf import conv_peak_flops, train_step_flops

# Dense bf16 peaks (no sparsity), FLOP/s, by a substring of torch.cuda.get_device_name().
NOMINAL_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}

GPU = {"size": 512, "steps_data": 24, "patch": 256, "batch": 32, "channels": [64, 128, 256, 512]}
SMOKE = {"size": 32, "steps_data": 12, "patch": 16, "batch": 2, "channels": [8, 16]}


def _sig(x: float) -> float:
    """``x`` to four significant digits (tiny CPU-smoke values stay non-zero)."""
    return float(f"{x:.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny run on CPU (for CI)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (60 on GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (8 on GPU)")
    args = parser.parse_args()
    gpu = torch.cuda.is_available() and not args.cpu_smoke
    if not gpu and not args.cpu_smoke:
        parser.error("no GPU here: run with --cpu-smoke")
    size = GPU if gpu else SMOKE
    steps = args.steps or (60 if gpu else 3)
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    ctx = DistContext(device=device)
    t0 = time.perf_counter()
    spec, train, val, _ = tiny_sources(steps=size["steps_data"], size=size["size"])
    data_s = time.perf_counter() - t0
    cfg = UNetConfig(
        epochs=1,
        patch=size["patch"],
        batch=size["batch"],
        channels=size["channels"],
        bf16=True,
        compile=args.compile,
        workers=args.workers if args.workers is not None else (8 if gpu else 0),
        warmup_steps=5,
        checkpoint_every=10**6,
    )
    loaders = Loaders(
        PatchDataset(train, cfg.patch, 8, steps * cfg.batch, 0),
        PatchDataset(val, cfg.patch, 8, cfg.batch, 1),
        Collate(spec),
        cfg.batch,
        cfg.workers,
        0,
    )
    autocast = bf16_supported(device)
    model = build_model(cfg, spec).to(device=device, memory_format=torch.channels_last)
    batch = next(iter(loaders.loader(loaders.train, 0, ctx))).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        flops_per_step = train_step_flops(model, batch.x, batch.base.nan_to_num(0.0))
    del model
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    result = fit(cfg, spec, loaders, ctx, log=print)
    row = result.history[0]
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if gpu else float("nan")
    conv_peak = conv_peak_flops(
        device, autocast, channels=512 if gpu else 64, size=64, batch=32 if gpu else 4
    )
    achieved = flops_per_step / cfg.batch * row["samples_per_s"]
    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    nominal = next((v for k, v in NOMINAL_BF16_PEAK.items() if k in name), float("nan"))
    report = {
        "device": name,
        "precision": "bf16" if autocast else "fp32",
        "steps": steps,
        "batch": cfg.batch,
        "patch": cfg.patch,
        "channels": cfg.channels,
        "data_seconds": _sig(data_s),
        "samples_per_s": _sig(row["samples_per_s"]),
        "gflop_per_sample": _sig(flops_per_step / cfg.batch / 1e9),
        "achieved_tflops": _sig(achieved / 1e12),
        "mfu_bf16_nominal": _sig(achieved / nominal) if nominal == nominal else None,
        "fraction_of_measured_conv_peak": _sig(achieved / conv_peak),
        "measured_conv_peak_tflops": _sig(conv_peak / 1e12),
        "peak_gpu_memory_gib": _sig(peak_mem) if gpu else None,
        "train_loss": round(row["train_loss"], 5),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
