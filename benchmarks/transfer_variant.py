"""One variant of a leave-one-source-out emulator (issue 19, deliverable 5), scored on the held-out
source's test split against bicubic in the same run.

    python benchmarks/transfer_variant.py HELD TAG '{"patch": 128, "batch": 4}'
    python benchmarks/transfer_variant.py HELD TAG '{"pooled_patches": 1600}' --method unet-crps

Writes ``results/variants/x-TAG-HELD.yaml``: ``config/campaigns/transfer-HELD.yaml`` with only
``bicubic`` and the method (its keys updated from the JSON, ``"seed"`` included: the method's own),
runs that campaign's evaluation of both with Snakemake, and prints their rows of
``benchmarks/transfer_table.py``'s table (test split) and one line: the training radars'
validation RMSE / bicubic, the calibration (ensembles: spread/skill before it and the noise
factor) and the wall seconds. ``--method unet-crps`` fine-tunes from
``results/transfer-HELD/models/unet`` (run ``benchmarks/transfer_protocol.sh HELD`` first), so only
the ensemble's keys vary. Run from anywhere: it works in the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ROOT / "config" / "campaigns"


def sources() -> list[str]:
    """The held-out sources that have a transfer campaign (``config/campaigns/transfer-*.yaml``)."""
    return sorted(p.stem.removeprefix("transfer-") for p in CAMPAIGNS.glob("transfer-*.yaml"))


def variant_config(held: str, tag: str, method: str, over: dict) -> tuple[str, str]:
    """(campaign name, YAML text) of the variant: the transfer campaign's data keys, this
    method with ``over`` applied, bicubic, and every other method of the defaults switched off."""
    text = (CAMPAIGNS / f"transfer-{held}.yaml").read_text()
    head = text.partition("\nmethods:\n")[0]
    defaults = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["methods"]
    m = dict(yaml.safe_load(text)["methods"][method])
    if method == "unet-crps":
        m["init_from"] = {"campaign": f"transfer-{held}", "method": "unet"}
    m.update(over)
    name = f"x-{tag}-{held}"
    keep = {"bicubic": {}, method: m}
    skip = {k: None for k in defaults if k not in keep}
    cfg_text = "\n".join(
        f"campaign: {name}" if line.startswith("campaign:") else line for line in head.splitlines()
    )
    body = yaml.safe_dump({"methods": {**skip, **keep}}, sort_keys=False)
    return name, cfg_text + "\n" + body


def validation_line(card_file: Path, seconds: float) -> str:
    """The training radars' validation RMSE / bicubic, the calibration (ensembles), the time."""
    card = json.loads(card_file.read_text())
    v = card["variables"]["pr"]
    line = f"val RMSE / bicubic {v['rmse'] / v['bicubic_rmse']:.3f}"
    cal = (card.get("guard") or {}).get("all", {}).get("calibration")
    if cal:
        trials = cal["trials"]  # the spreading rules: per variable
        before = (trials["pr"] if isinstance(trials, dict) else trials)[0]["spread_skill"]
        line += f"; spread/skill {before:.2f} before calibration, noise x{cal['noise_factor']:.3g}"
        if "inflation" in cal:
            f = cal["inflation"]
            line += f", inflation x{f['pr'] if isinstance(f, dict) else f:.3g}"
    return f"{line}; {seconds:.0f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("held", choices=sources())
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
    os.chdir(ROOT)  # the configs' data paths and results/ are relative to the repository root
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
    seconds = time.monotonic() - start
    from transfer_table import rows  # beside this script (its folder is on sys.path when run)

    print("\n".join(rows(results, args.held, campaign=name, methods=["bicubic", args.method])))
    print(validation_line(results / name / "models" / args.method / "validation.json", seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
