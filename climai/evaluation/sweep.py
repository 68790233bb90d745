"""Sweep summary: the variants of a swept method ranked on the validation split, never on test.

Each trained variant wrote ``models/<variant>/validation.json`` (RMSE and MAE in physical units
on the fixed validation patches, and the bicubic RMSE on the same cells). A variant's score is
the mean over variables of its RMSE relative to bicubic: dimensionless, so temperature and
precipitation count alike, and below 1 when it beats the interpolation baseline.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from climai.evaluation.figures import figure_style
from climai.io.atomic import read_values

# Settings that never define a variant (bookkeeping, or differ only by how a run was launched).
_NOT_SETTINGS = ("type", "sweep", "threads", "workers", "progress")


def swept_settings(records: dict[str, dict[str, Any]]) -> list[str]:
    """The method settings whose values differ between the variants, in config order."""
    configs = [r["config"] for r in records.values()]
    keys = [k for k in configs[0] if k not in _NOT_SETTINGS] if configs else []
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def sweep_table(records: dict[str, dict[str, Any]], variables: list[str]) -> pd.DataFrame:
    """One row per variant, best first: swept settings, per-variable val RMSE, score, rank."""
    settings = swept_settings(records)
    rows = []
    for method, rec in records.items():
        row: dict[str, Any] = {"method": method}
        row.update({k: _cell(rec["config"].get(k)) for k in settings})
        ratios = []
        for v in variables:
            s = rec["variables"][v]
            row[f"{v}_val_rmse"] = s["rmse"]
            row[f"{v}_val_rmse_ratio"] = s["rmse"] / s["bicubic_rmse"]
            ratios.append(row[f"{v}_val_rmse_ratio"])
        row["score"] = sum(ratios) / len(ratios)
        row["epochs_run"] = rec.get("epochs_run")
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["score", "method"], kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def _cell(value: Any) -> Any:
    return "x".join(map(str, value)) if isinstance(value, list) else value


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "" if not math.isfinite(x) else f"{x:.4g}"
    return "" if x is None else str(x)


def sweep_markdown(
    table: pd.DataFrame, name: str, variables: list[str], units: dict[str, str]
) -> str:
    """The ranking as a Markdown table, with what the score means."""
    settings = [c for c in table.columns if c not in _fixed_columns(variables)]
    head = ["rank", "method", *settings]
    head += [f"{v} val RMSE ({units[v]})" for v in variables]
    head += [f"{v} / bicubic" for v in variables]
    head += ["score", "epochs"]
    lines = [f"**sweep {name}** (ranked on the validation split)", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        cells = [row["rank"], row["method"], *(row[s] for s in settings)]
        cells += [row[f"{v}_val_rmse"] for v in variables]
        cells += [row[f"{v}_val_rmse_ratio"] for v in variables]
        cells += [row["score"], row["epochs_run"]]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    lines += [
        "",
        "Score: mean over variables of val RMSE / bicubic val RMSE on the same cells (fixed "
        "validation patches, best epoch's weights); lower is better, below 1 beats bicubic. "
        "The test split is not used.",
        "",
    ]
    return "\n".join(lines)


def sweep_html(table: pd.DataFrame, name: str) -> str:
    """The ranking as a small HTML page (the Snakemake report shows it)."""
    body = table.to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sweep {html.escape(name)}"
        f"</title></head><body><h2>sweep {html.escape(name)}: ranked on the validation split"
        f"</h2>{body}<p>score: mean over variables of val RMSE / bicubic val RMSE on the same "
        "cells; lower is better, below 1 beats bicubic. The test split is not used.</p>"
        "</body></html>\n"
    )


def lineage_html(records: dict[str, dict[str, Any]]) -> str:
    """Each fine-tuned method with the chain of models it descends from, nearest first."""
    rows = []
    for method, rec in records.items():
        chain = rec.get("lineage", [])
        if not chain:
            continue
        steps = " ← ".join(
            f"{html.escape(p['campaign'])}/{html.escape(p['method'])} "
            f"(<code>{html.escape(p['path'])}</code>, sha256 {p['sha256'][:12]})"
            for p in chain
        )
        frozen = ", ".join(rec["config"].get("freeze") or []) or "nothing"
        rows.append(f"<tr><td>{html.escape(method)}</td><td>{steps}</td><td>{frozen}</td></tr>")
    table = (
        "<table><tr><th>method</th><th>fine-tuned from (nearest first)</th><th>frozen</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>No method of this campaign is fine-tuned (no init_from).</p>"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>lineage</title></head><body>"
        f"<h2>Lineage of the trained models</h2>{table}</body></html>\n"
    )


def _fixed_columns(variables: list[str]) -> set[str]:
    cols = {"rank", "method", "score", "epochs_run"}
    return cols | {f"{v}_val_rmse" for v in variables} | {f"{v}_val_rmse_ratio" for v in variables}


@figure_style
def sweep_figure(table: pd.DataFrame, name: str, variables: list[str]) -> plt.Figure:
    """Horizontal bars of the score per variant (best at the top), one marker per variable."""
    n = len(table)
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.45 * n))
    y = list(range(n))[::-1]
    ax.barh(y, table["score"], color="#9ecae1", label="score (mean ratio)")
    for v, marker in zip(variables, "os^Dv", strict=False):
        ax.plot(table[f"{v}_val_rmse_ratio"], y, marker, color="k", label=v, ms=5, ls="none")
    ax.axvline(1.0, color="grey", ls="--", lw=1, label="bicubic")
    ax.set_yticks(y, [f"{r}. {m}" for r, m in zip(table["rank"], table["method"], strict=True)])
    ax.set_xlabel("val RMSE / bicubic val RMSE (lower is better)")
    ax.set_title(f"sweep {name}: variants ranked on the validation split")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # off the markers
    return fig


def read_records(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``validation.json`` of each variant, with an error naming a missing one."""
    records = {}
    for method, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(
                f"sweep variant {method!r} has no validation scores at {str(path)!r}; train it first"
            )
        records[method] = read_values(path)
    return records
