"""One variant of a leave-one-source-out emulator (issue 19, deliverable 5), scored on the held-out
source's test split against bicubic in the same run.

    python benchmarks/transfer_variant.py HELD TAG '{"patch": 128, "batch": 4}'
    python benchmarks/transfer_variant.py HELD TAG '{"pooled_patches": 1600}' --method unet-crps

Writes ``results/variants/x-TAG-HELD.yaml``: ``config/campaigns/transfer-HELD.yaml`` with only
``bicubic`` and the method (its keys updated from the JSON; ``"seed"`` sets the campaign's seed),
runs that campaign's evaluation of both with Snakemake, and prints one tab-separated row: test
RMSE / bicubic, MAE (or CRPS) / bicubic MAE, the training radars' validation RMSE / bicubic,
spread/skill and the calibration's noise factor (ensembles), p99 error, spectral ratio per band,
wall seconds. ``--method unet-crps`` fine-tunes from ``results/transfer-HELD/models/unet`` (run
``benchmarks/transfer_protocol.sh HELD`` first), so only the ensemble's keys vary.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

SOURCES = ["knmi", "fmi", "mrms-conus", "bom-melbourne"]


def variant_config(held: str, tag: str, method: str, over: dict) -> tuple[str, str]:
    """(campaign name, YAML text) of the variant."""
    text = Path(f"config/campaigns/transfer-{held}.yaml").read_text()
    head = text.partition("\nmethods:\n")[0]
    cfg = yaml.safe_load(text)
    over = dict(over)
    seed = over.pop("seed", None)
    m = dict(cfg["methods"][method])
    if method == "unet-crps":
        m["init_from"] = {"campaign": f"transfer-{held}", "method": "unet"}
    m.update(over)
    name = f"x-{tag}-{held}"
    keep = {"bicubic": {}, method: m}
    skip = {k: None for k in ("nearest", "quantile-mapping", "unet", "unet-crps") if k not in keep}
    cfg_text = "\n".join(
        f"campaign: {name}" if line.startswith("campaign:") else line for line in head.splitlines()
    )
    extra = {"seed": int(seed)} if seed is not None else {}
    body = yaml.safe_dump({**extra, "methods": {**skip, **keep}}, sort_keys=False)
    return name, cfg_text + "\n" + body


def row(results: Path, name: str, tag: str, held: str, method: str, seconds: float) -> str:
    camp = results / name
    s = json.loads((camp / "evaluation" / method / "metrics.json").read_text())["pr"]
    b = json.loads((camp / "evaluation" / "bicubic" / "metrics.json").read_text())["pr"]
    card = json.loads((camp / "models" / method / "validation.json").read_text())
    v = card["variables"]["pr"]
    cal = (card.get("guard") or {}).get("all", {}).get("calibration") or {}
    bands = sorted(s["spectral_ratio"], key=lambda k: float(k.split("-")[0]))
    spectral = "/".join(f"{s['spectral_ratio'][k]:.2f}" for k in bands)
    ss = s.get("spread_skill", {}).get("ratio")
    native = cal.get("trials", [{}])[0].get("spread_skill")
    ens = "" if ss is None else f"ss {ss:.2f} (native {native:.2f}, x{cal['noise_factor']:.3g})"
    p99 = s.get("quantile_error", {}).get("p99", float("nan"))
    return "\t".join(
        [
            tag,
            held,
            method,
            f"test {s['rmse'] / b['rmse']:.3f}",
            f"crps {s.get('crps', s['mae']) / b['mae']:.3f}",
            f"val {v['rmse'] / v['bicubic_rmse']:.3f}",
            ens,
            f"p99 {p99:.3g}",
            f"spec {spectral}",
            f"{seconds:.0f} s",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("held", choices=SOURCES)
    ap.add_argument("tag", help="letters, digits and '-' (the campaign is x-TAG-HELD)")
    ap.add_argument("overrides", nargs="?", default="{}", help="JSON object of method keys")
    ap.add_argument("--method", choices=["unet", "unet-crps"], default="unet")
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    if not args.tag.replace("-", "").isalnum():
        ap.error(f"tag {args.tag!r}: letters, digits and '-' only")
    over = json.loads(args.overrides)
    if not isinstance(over, dict):
        ap.error(f"overrides {args.overrides!r}: a JSON object of method keys")
    name, text = variant_config(args.held, args.tag, args.method, over)
    results = Path("results")
    cfg = results / "variants" / f"{name}.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(cfg)
    targets = [f"results/{name}/evaluation/{m}/metrics.json" for m in (args.method, "bicubic")]
    start = time.monotonic()
    cmd = ["snakemake", *targets, "--cores", str(args.cores), "--configfile", str(cfg)]
    done = subprocess.run(cmd, check=False)
    if done.returncode:
        print(f"snakemake failed ({done.returncode}) for {cfg}", file=sys.stderr)
        return done.returncode
    print(row(results, name, args.tag, args.held, args.method, time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
