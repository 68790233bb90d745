"""The leave-one-source-out table (issue 19) from the transfer campaigns' metrics.

    python benchmarks/transfer_table.py [held-out source ...]   (default: all four)

Reads ``results/transfer-<source>/evaluation/<method>/metrics.json`` (test split of the held-out
source) and ``models/<method>/validation.json`` (the validation flag), prints one markdown row per
held-out source and method: RMSE / bicubic RMSE, CRPS (MAE for deterministic methods) / bicubic
MAE, p99 error, spread/skill (ensembles) and the spectral ratio per band.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SOURCES = ["knmi", "fmi", "mrms-conus", "bom-melbourne"]
METHODS = ["bicubic", "quantile-mapping", "unet", "unet-single", "unet-crps"]


def rows(
    root: Path,
    held: str,
    var: str = "pr",
    campaign: str | None = None,
    methods: list[str] = METHODS,
) -> list[str]:
    """The rows of ``held`` from ``campaign``'s results (default ``transfer-<held>``), one per
    method of ``methods`` that has metrics."""
    camp = root / (campaign or f"transfer-{held}")
    metrics = {}
    for m in methods:
        f = camp / "evaluation" / m / "metrics.json"
        if f.is_file():
            metrics[m] = json.loads(f.read_text())[var]
    if "bicubic" not in metrics:
        return [f"| {held} | (not run) | | | | | |"]
    base = metrics["bicubic"]
    out = []
    for m, s in metrics.items():
        val = camp / "models" / m / "validation.json"
        flag = ""
        if val.is_file():
            rec = json.loads(val.read_text())
            if var in rec.get("worse_than_bicubic", []):
                flag = " ⚠ (fallback)" if var in rec.get("fallback", []) else " ⚠"
        crps = s.get("crps", s["mae"])
        bands = sorted(s["spectral_ratio"], key=lambda b: float(b.split("-")[0]))
        spectral = " / ".join(f"{s['spectral_ratio'][b]:.2f}" for b in bands)
        ss = s.get("spread_skill", {}).get("ratio")
        p99 = s.get("quantile_error", {}).get("p99")
        out.append(
            f"| {held} | {m}{flag} | {s['rmse'] / base['rmse']:.3f} | {crps / base['mae']:.3f} "
            f"| {'' if p99 is None else f'{p99:.3g}'} | {'' if ss is None else f'{ss:.2f}'} "
            f"| {spectral} |"
        )
    return out


def main(held: list[str]) -> None:
    root = Path("results")
    print(
        "| held-out source | method | RMSE / bicubic | CRPS / bicubic MAE | p99 error (mm h-1) "
        "| spread/skill | spectral ratio 2-4 / 4-8 / 8-16 / 16-32 cells |"
    )
    print("|---|---|---|---|---|---|---|")
    for h in held:
        print("\n".join(rows(root, h)))


if __name__ == "__main__":
    main(sys.argv[1:] or SOURCES)
