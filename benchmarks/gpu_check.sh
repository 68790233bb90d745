#!/usr/bin/env bash
# The prepared GPU check (issue 17, item 7): one run on one GPU, at most 8 minutes, one JSON summary.
#
#   bash benchmarks/gpu_check.sh               # on a GPU machine
#   bash benchmarks/gpu_check.sh --cpu-smoke   # tiny and on the CPU (~130 s on a 2-core AMD EPYC; tests/unit/test_gpu_check.py)
#
# Parts, each timed and guarded (a failure is recorded in the JSON and the next part still runs):
#   gpu_benchmark  benchmarks/gpu.py: samples/s, MFU against the bf16 peak, peak GPU memory; plus a
#                  bf16 matmul peak measured in the same run
#   campaign       the toy campaign (config/config.yaml; methods bicubic and unet) through the climai
#                  CLI: ingest, preprocess, train --method unet, infer (unet on cuda, bicubic),
#                  evaluate; train samples/s, wall times, RMSE of the unet against bicubic
#   downscale      `climai downscale` of a 4096² HR domain (512² LR, scale 8, from climai.testing's
#                  lr_inputs) with the campaign's unet: HR Mpixel/s and peak GPU memory, read by
#                  torch.cuda.max_memory_allocated inside the process that runs climai.cli.main
#   verify         `climai verify --device gpu` against the campaign part's folder: Snakemake reruns
#                  the campaign and every artifact is compared (skipped when snakemake is missing)
#
# The summary is the last thing printed, and is written to $OUT/gpu_check.json when OUT is set.
# climai needs no install: the script puts the checkout first on PYTHONPATH and a `climai` shim
# (python -m climai.cli) on PATH for Snakemake's rules. PYTHON picks the interpreter (python3).
# GPU_CHECK_BUDGET (seconds, default 420) bounds the whole run; GPU_CHECK_WORK keeps the work folder.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
read -r -d '' DRIVER <<'PYEOF'
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(sys.argv[1])
SMOKE = "--cpu-smoke" in sys.argv[2:]
START = time.monotonic()
BUDGET = float(os.environ.get("GPU_CHECK_BUDGET", "420"))
THREADS = os.cpu_count() or 1
# per-part caps in seconds (GPU mode); every part also stops at the global budget
CAPS = {"gpu_benchmark": 100, "campaign": 150, "downscale": 110, "verify": 200}
SIZES = (
    {
        "nx": 32,
        "steps": 24,
        "unet": {
            "epochs": 1,
            "patch": 32,
            "batch": 8,
            "channels": [8, 16],
            "patches_per_step": 1,
            "bf16": False,
        },
        "hr": 256,
        "ds_steps": 2,
        "ds_repeat": 1,
        "device": "cpu",
        "variants": [{}],
    }
    if SMOKE
    else {
        "nx": 128,
        "steps": 480,
        "unet": {},
        "hr": 4096,
        "ds_steps": 4,
        "ds_repeat": 2,
        "device": "cuda",
        "variants": [{}, {"tile": 2048, "batch": 4}],
    }
)


def log(msg):
    print(f"[gpu_check {time.monotonic() - START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def left():
    return BUDGET - (time.monotonic() - START)


def sig(x, n=4):
    return None if x is None else float(f"{x:.{n}g}")


class PartError(RuntimeError):
    pass


def run(argv, name, cap, cwd, env=None, logdir=None):
    """Run ``argv`` in its own process group, killed at ``cap`` s or the budget; log to a file."""
    timeout = max(1.0, min(cap, left() - 5))
    logfile = Path(logdir) / f"{name}.log"
    t0 = time.monotonic()
    with open(logfile, "w") as fh:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise PartError(
                f"{name}: killed after {timeout:.0f} s (time limit); log tail: " + tail(logfile)
            ) from None
    seconds = time.monotonic() - t0
    if rc != 0:
        raise PartError(f"{name}: exit {rc} after {seconds:.1f} s; log tail: {tail(logfile)}")
    return seconds, logfile.read_text(errors="replace")


def tail(path, n=1500):
    text = Path(path).read_text(errors="replace")
    return text[-n:]


def part(name, func, summary):
    """Run one part: its result, ``status`` ok/failed/skipped, ``seconds`` and any ``error``."""
    log(f"{name}: start ({left():.0f} s of the budget left)")
    t0 = time.monotonic()
    out = {"status": "ok"}
    try:
        out.update(func())
    except Skip as err:
        out = {"status": "skipped", "reason": str(err)}
    except Exception as err:  # a failed part is recorded and the next part runs
        out.update({"status": "failed", "error": f"{type(err).__name__}: {err}"[-3000:]})
        if not isinstance(err, PartError):
            out["traceback"] = traceback.format_exc()[-2000:]
    out["seconds"] = round(time.monotonic() - t0, 1)
    summary["parts"][name] = out
    log(f"{name}: {out['status']} in {out['seconds']} s")


class Skip(Exception):
    pass


def gpu_benchmark(work):
    argv = [sys.executable, str(REPO / "benchmarks" / "gpu.py")] + (
        ["--cpu-smoke"] if SMOKE else []
    )
    seconds, text = run(argv, "gpu_benchmark", CAPS["gpu_benchmark"], work, logdir=work / "logs")
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line.strip() == "{")
    report = json.loads("\n".join(lines[start:]))
    out = {"wall_seconds": round(seconds, 1), "result": report}
    if not SMOKE:  # the bf16 matmul rate of this card, the same way KINDS.md measured it
        code = (
            "import torch,json,time\n"
            "a=torch.randn(8192,8192,device='cuda',dtype=torch.bfloat16);b=torch.randn_like(a)\n"
            "for _ in range(3): a@b\n"
            "torch.cuda.synchronize();t=time.perf_counter()\n"
            "for _ in range(10): a@b\n"
            "torch.cuda.synchronize();dt=(time.perf_counter()-t)/10\n"
            "print(json.dumps({'tflops':2*8192**3/dt/1e12}))\n"
        )
        _, mm = run([sys.executable, "-c", code], "matmul_peak", 60, work, logdir=work / "logs")
        peak = json.loads(mm.strip().splitlines()[-1])["tflops"]
        out["measured_bf16_matmul_tflops"] = sig(peak)
        out["mfu_vs_measured_matmul"] = sig(report["achieved_tflops"] / peak)
    return out


def campaign_config(work):
    import yaml

    cfg = {
        "results": str(work / "results"),
        "data": {
            "target": {
                "source": "synthetic",
                "nx": SIZES["nx"],
                "ny": SIZES["nx"],
                "steps": SIZES["steps"],
            }
        },
        "methods": {
            "bicubic": {},
            "quantile-mapping": None,
            "unet": SIZES["unet"] or {},
            "unet-crps": None,
        },
        "infer": {"device": SIZES["device"], "progress": False},
        "preprocess": {"progress": False},
        # GPU training is reproducible (and verify can pass) only with deterministic kernels
        "compute": {"deterministic": True},
    }
    if SMOKE:  # one test step in the maps: the figures were half of a 32² evaluate's time
        cfg["evaluate"] = {"figure_steps": 1}
    path = work / "gpu_check.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return [str(REPO / "config" / "config.yaml"), str(path)]


def climai_argv(*args):
    return [sys.executable, "-m", "climai.cli", *args]


def campaign(work, state):
    files = campaign_config(work)
    conf = [a for f in files for a in ("--configfile", f)]
    walls = {}

    def stage(name, *args):
        argv = climai_argv(*args, *conf, "--threads", str(THREADS))
        walls[name] = round(run(argv, name, CAPS["campaign"], work, logdir=work / "logs")[0], 1)

    def bicubic():
        stage("infer_bicubic", "infer", "--method", "bicubic")
        stage("evaluate_bicubic", "evaluate", "--method", "bicubic")

    stage("ingest", "ingest")
    stage("preprocess", "preprocess")
    # the GPU run keeps the stages apart for clean timings; the smoke overlaps bicubic's CPU
    # stages with the unet's (on a small CPU machine the stages are mostly process starts)
    with ThreadPoolExecutor(1) as pool:
        side = pool.submit(bicubic) if SMOKE else None
        stage("train_unet", "train", "--method", "unet")
        stage("infer_unet", "infer", "--method", "unet")
        stage("evaluate_unet", "evaluate", "--method", "unet")
        side.result() if side else bicubic()
    root = work / "results" / "toy"
    state["configfiles"], state["campaign_dir"] = files, root
    model = root / "models" / "unet" / "model.pt"
    state["model"] = model
    import csv

    with open(root / "models" / "unet" / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    sps = [float(r["samples_per_s"]) for r in rows]
    train_s = sum(float(r["seconds"]) for r in rows)
    metrics = {
        m: json.loads((root / "evaluation" / m / "metrics.json").read_text())
        for m in ("unet", "bicubic")
    }
    rmse = {v: {m: sig(metrics[m][v]["rmse"]) for m in metrics} for v in metrics["unet"]}
    ratio = {
        v: sig(metrics["unet"][v]["rmse"] / metrics["bicubic"][v]["rmse"], 3)
        for v in metrics["unet"]
    }
    return {
        "config": "config/config.yaml + methods {bicubic, unet}, infer.device "
        + SIZES["device"]
        + f", toy world {SIZES['nx']}² × {SIZES['steps']} steps",
        "stage_wall_seconds": walls,
        "train_epochs": len(rows),
        "train_samples_per_s_per_epoch": [sig(s) for s in sps],
        "train_samples_per_s_median": sig(sorted(sps)[len(sps) // 2]),
        "train_loop_seconds": sig(train_s),
        "train_wall_seconds": walls["train_unet"],
        "infer_wall_seconds": walls["infer_unet"],
        "rmse_test": rmse,
        "unet_rmse_over_bicubic": ratio,
    }


DOWNSCALE_WRAPPER = """
import json, sys, time
import torch
from climai.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[1:])
dt = time.perf_counter() - t0
gpu = torch.cuda.is_available()
print("GPU_CHECK_RESULT " + json.dumps({
    "rc": rc, "seconds": dt,
    "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
    "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if gpu else None,
}))
sys.exit(rc)
"""


def downscale_inputs(work, state):
    """LR input (lr_inputs: block means of a toy world) and HR static fields, as zarr stores."""
    code = (
        "import sys, time, numpy as np, pandas as pd, xarray as xr\n"
        "from climai.testing import lr_inputs\n"
        "hr, steps, repeat, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]\n"
        "t = time.perf_counter()\n"
        "lr, static = lr_inputs(hr, hr, steps)\n"
        "if repeat > 1:  # the same fields again, on later hours (throughput only)\n"
        "    parts = [lr[['tas', 'pr']].assign_coords(time=lr.time.values + np.timedelta64(k * steps, 'h'))\n"
        "             for k in range(repeat)]\n"
        "    rep = xr.concat(parts, 'time')\n"
        "    rep['crs'] = lr['crs']\n"
        "    lr = rep\n"
        "lr.to_zarr(out + '/lr.zarr', mode='w')\n"
        "static.to_zarr(out + '/static.zarr', mode='w')\n"
        "print(f'{time.perf_counter() - t:.1f}', lr.sizes['time'])\n"
    )
    argv = [
        sys.executable,
        "-c",
        code,
        str(SIZES["hr"]),
        str(SIZES["ds_steps"]),
        str(SIZES["ds_repeat"]),
        str(work),
    ]
    _, text = run(argv, "downscale_inputs", 120, work, logdir=work / "logs")
    seconds, steps = text.strip().splitlines()[-1].split()
    return float(seconds), int(steps)


def downscale(work, state):
    model = state.get("model")
    source = "the campaign part's unet (models/unet/model.pt)"
    if model is None or not Path(model).exists():
        model = work / "random_unet.pt"
        source = "a seeded random U-Net [16, 32, 64] (the campaign part wrote no model)"
        code = (
            "import sys\n"
            "from climai.io.checkpoints import save_model\n"
            "from climai.testing import model_card_for, toy_feature_spec, trained_like_unet\n"
            "spec = toy_feature_spec()\n"
            "save_model(sys.argv[1], trained_like_unet(spec).state_dict(), "
            "model_card_for(spec, [16, 32, 64]))\n"
        )
        run([sys.executable, "-c", code, str(model)], "random_unet", 60, work, logdir=work / "logs")
    gen_s, steps = downscale_inputs(work, state)
    out = {
        "model": source,
        "hr_size": SIZES["hr"],
        "lr_size": SIZES["hr"] // 8,
        "scale": 8,
        "steps": steps,
        "variables": 2,
        "input_seconds": gen_s,
        "runs": [],
    }
    for i, variant in enumerate(SIZES["variants"]):
        if i and left() < 60:
            out["runs"].append({"variant": variant, "status": "skipped", "reason": "budget"})
            continue
        target = work / f"hr_{i}.zarr"
        args = [
            "downscale",
            "--model",
            str(model),
            "--input",
            str(work / "lr.zarr"),
            "--static",
            str(work / "static.zarr"),
            "--output",
            str(target),
            "--device",
            SIZES["device"],
            "--no-progress",
            "--threads",
            str(THREADS),
        ]
        for k, v in variant.items():
            args += [f"--{k}", str(v)]
        wall, text = run(
            [sys.executable, "-c", DOWNSCALE_WRAPPER, *args],
            f"downscale_{i}",
            CAPS["downscale"],
            work,
            logdir=work / "logs",
        )
        res = json.loads(text.split("GPU_CHECK_RESULT ")[-1].splitlines()[0])
        cells = SIZES["hr"] ** 2 * steps
        from climai.io import open_store

        hr = open_store(target)  # the last step of each variable has values
        finite = all(bool(hr[v].isel(time=-1).notnull().any().compute()) for v in ("tas", "pr"))
        shape = dict(hr.sizes)
        out["runs"].append(
            {
                "variant": variant or "infer defaults (tile 512, overlap 128, batch 4)",
                "seconds_in_process": sig(res["seconds"]),
                "wall_seconds": round(wall, 1),
                "hr_mpixel_per_s": sig(cells / res["seconds"] / 1e6),
                "peak_gpu_memory_gib": sig(res["peak_gpu_memory_gib"]),
                "peak_gpu_reserved_gib": sig(res["peak_gpu_reserved_gib"]),
                "output_sizes": shape,
                "output_has_values": finite,
            }
        )
        shutil.rmtree(target, ignore_errors=True)
        if not finite:
            raise PartError(f"downscale run {i} wrote no finite values")
    return out


def verify(work, state):
    try:
        import snakemake  # noqa: F401
    except ImportError as err:
        raise Skip(
            f"snakemake is not importable here ({err}); climai verify reruns the "
            "campaign through Snakemake"
        ) from None
    if "campaign_dir" not in state:
        raise Skip("the campaign part failed, so there is no reference campaign to verify")
    if left() < 60:
        raise Skip(f"only {left():.0f} s of the budget left")
    conf = [a for f in state["configfiles"] for a in ("--configfile", f)]
    argv = climai_argv(
        "verify",
        *conf,
        "--reference",
        str(state["campaign_dir"]),
        "--device",
        "gpu",
        "--threads",
        str(max(THREADS, 4) if SMOKE else THREADS),
    )
    env = dict(os.environ, TMPDIR=str(work / "tmp"))
    (work / "tmp").mkdir(exist_ok=True)
    try:
        seconds, text = run(argv, "verify", CAPS["verify"], work, env=env, logdir=work / "logs")
    except PartError as err:
        text = (work / "logs" / "verify.log").read_text(errors="replace")
        fails = [line for line in text.splitlines() if line.startswith("FAIL")]
        if fails:
            raise PartError(f"{len(fails)} artifact(s) differ: {fails[:12]}") from None
        raise err
    lines = [line for line in text.splitlines() if line.startswith(("OK  ", "FAIL"))]
    return {
        "command": "climai verify --device gpu (tolerance set)",
        "artifacts": len(lines),
        "wall_seconds": round(seconds, 1),
        "results": [line.strip() for line in lines],
        "summary": text.strip().splitlines()[-1],
    }


def device_info():
    info = {"python": sys.version.split()[0]}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
    except Exception as err:
        info["torch"] = f"unavailable: {err}"
    if shutil.which("nvidia-smi"):
        q = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    try:
        git = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["git_commit"] = git.stdout.strip() or None
    except OSError:
        info["git_commit"] = None
    return info


def main():
    keep = os.environ.get("GPU_CHECK_WORK")
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="climai-gpu-check-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "bin").mkdir(exist_ok=True)
    shim = work / "bin" / "climai"  # Snakemake's rules call `climai`: no install needed
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m climai.cli "$@"\n')
    shim.chmod(0o755)
    os.environ["PATH"] = f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}"
    summary = {
        "mode": "cpu-smoke" if SMOKE else "gpu",
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threads": THREADS,
        "budget_seconds": BUDGET,
        "parts": {},
    }
    try:
        summary.update(device_info())
    except Exception as err:
        summary["device_info_error"] = str(err)
    if not SMOKE and not summary.get("cuda_available"):
        summary["error"] = "no CUDA device: run with --cpu-smoke"
    state = {}
    summary["parts"] = dict.fromkeys(("gpu_benchmark", "campaign", "downscale", "verify"))
    if SMOKE:  # on a small CPU machine verify's Snakemake rerun overlaps the other parts
        part("campaign", lambda: campaign(work, state), summary)
        with ThreadPoolExecutor(1) as pool:
            side = pool.submit(part, "verify", lambda: verify(work, state), summary)
            part("gpu_benchmark", lambda: gpu_benchmark(work), summary)
            part("downscale", lambda: downscale(work, state), summary)
            side.result()
    else:  # one part after another on the GPU: clean timings
        part("gpu_benchmark", lambda: gpu_benchmark(work), summary)
        part("campaign", lambda: campaign(work, state), summary)
        part("downscale", lambda: downscale(work, state), summary)
        part("verify", lambda: verify(work, state), summary)
    summary["ok"] = all(p["status"] == "ok" for p in summary["parts"].values())
    summary["total_seconds"] = round(time.monotonic() - START, 1)
    summary["work"] = str(work) if keep else None
    text = json.dumps(summary, indent=1)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text + "\n")
        with open(Path(os.environ["OUT"], "gpu_check_logs.txt"), "w") as fh:
            for src in sorted((work / "logs").glob("*.log")):  # the end of every part's log
                fh.write(f"==> {src.name} <==\n{src.read_text(errors='replace')[-100_000:]}\n")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    return 0 if summary["ok"] else 1


sys.exit(main())
PYEOF
exec "$PY" -c "$DRIVER" "$REPO" "$@"
