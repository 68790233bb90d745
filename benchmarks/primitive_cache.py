"""A CPU inference with and without oneDNN's primitive cache: peak RSS and time (session 49).

    python benchmarks/primitive_cache.py                      # the cases below, 3 repeats
    python benchmarks/primitive_cache.py transfer-knmi:unet --repeats 5

For each ``campaign:method`` (default: the leave-one-out protocol's transfer-mrms-conus ``unet``,
whose conserving model computes only the wet parts of its tiles, in many shapes; transfer-knmi's
``unet`` on a small grid; the 16-member ``unet-crps`` of transfer-bom-melbourne and transfer-knmi),
runs that method's ``infer`` as the workflow does (``climai infer --config-json <the rule's
slice>``, in a fresh process) into a scratch campaign ``<campaign>-cachebench`` under ``results/``
(a copy of the trained model; the prepared data read from where it is), two ways alternated
``repeats`` times:

- ``cached``: ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024``, oneDNN's default (climai before
  session 49);
- ``uncached``: the environment left unset, so :func:`climai.malloc.uncache_primitives` turns
  the cache off (climai now).

and prints the medians of the process's peak RSS and wall time and their ratios. The campaigns
must be trained (``bash benchmarks/transfer_protocol.sh``, or their ``models/<method>``); the
scratch campaigns are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from fresh import alternated

REPO = Path(__file__).resolve().parents[1]
CASES = [
    "transfer-mrms-conus:unet",
    "transfer-knmi:unet",
    "transfer-bom-melbourne:unet-crps",
    "transfer-knmi:unet-crps",
]
MODES = {"cached": "1024", "uncached": None}


def child(config_json: str, method: str) -> dict[str, float]:
    """Run the infer stage in this process; its peak RSS and wall time."""
    from climai.cli import main

    t0 = time.perf_counter()
    rc = main(["infer", "--config-json", config_json, "--method", method, "--threads", "2"])
    if rc:
        raise SystemExit(f"climai infer exited {rc}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mb": peak, "wall_s": time.perf_counter() - t0}


def scratch(campaign: str, method: str) -> tuple[str, Path]:
    """The infer slice of ``campaign``'s ``method`` pointed at a scratch copy of its model."""
    from climai.config import load_config
    from climai.config.slices import canonical_json, stage_slice

    cfg = load_config(
        str(REPO / "config/config.yaml"), str(REPO / f"config/campaigns/{campaign}.yaml")
    )
    data = stage_slice(cfg, "infer", method)
    name = f"{campaign}-cachebench"
    root = REPO / cfg.results / name
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / cfg.results / campaign / "models" / method, root / "models" / method)
    data["campaign"] = name
    data["prepared"] = data.get("prepared") or {"campaign": campaign, "folder": "prep"}
    return canonical_json(data), root


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="*", default=CASES)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=2, metavar=("CONFIG_JSON", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    print("| campaign | method | peak RSS MB, cached → uncached | uncached / cached | "
          "wall s, cached → uncached | uncached / cached |")  # fmt: skip
    print("|---|---|---|---:|---|---:|")
    for case in args.cases:
        campaign, method = case.split(":")
        config_json, root = scratch(campaign, method)
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
        envs = {m: env if c is None else env | {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": c}
                for m, c in MODES.items()}  # fmt: skip
        cmd = [sys.executable, __file__, "--child", config_json, method]
        try:
            med = alternated(dict.fromkeys(MODES, cmd), args.repeats, REPO, envs)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        c, u = med["cached"], med["uncached"]
        print(f"| {campaign} | {method} | {c['peak_mb']:.0f} → {u['peak_mb']:.0f} | "
              f"{u['peak_mb'] / c['peak_mb']:.2f} | {c['wall_s']:.1f} → {u['wall_s']:.1f} | "
              f"{u['wall_s'] / c['wall_s']:.2f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
