"""Tables of every method's metrics: CSV rows, a Markdown methods table, an HTML page."""

from __future__ import annotations

import csv
import html
import io
import math
from typing import Any

# The scalar columns of summary.csv, in order (absent metrics are left empty).
_SCALARS = ("rmse", "mae", "bias", "corr", "crps", "crps_fair", "conservation_error")


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:.{digits}g}"


def band_order(ratios: dict[str, float]) -> list[str]:
    """Band names (``"lo-hi"``) from the shortest wavelengths to the longest."""
    return sorted(ratios, key=lambda b: float(b.split("-")[0]))


def crps_or_mae(m: dict[str, Any]) -> tuple[float | None, bool]:
    """The CRPS of an ensemble, or the MAE of a deterministic method (its CRPS, exactly)."""
    if "crps" in m:
        return m["crps"], True
    return m.get("mae"), False


def summary_rows(
    metrics: dict[str, dict[str, dict[str, Any]]],
    variables: list[str],
    flags: dict[str, list[str]] | None = None,
) -> list[dict[str, str]]:
    """One row per method and variable from ``metrics[method][var]`` (metrics.json contents);
    ``flags[method]``: the variables whose validation RMSE was above bicubic's."""
    rows = []
    for method, per_var in metrics.items():
        for var in variables:
            m = per_var[var]
            row = {"method": method, "variable": var}
            if flags and any(flags.values()):
                row["val_worse_than_bicubic"] = "yes" if var in flags.get(method, []) else ""
            row.update({k: _fmt(m.get(k)) for k in _SCALARS})
            row["crps"] = _fmt(crps_or_mae(m)[0])
            sr = m["spectral_ratio"]
            row.update({f"spectral_ratio_{b}": _fmt(sr[b], 3) for b in band_order(sr)})
            for name, err in m.get("quantile_error", {}).items():
                row[f"{name}_error"] = _fmt(err)
            if "spread_skill" in m:
                row["spread_skill_ratio"] = _fmt(m["spread_skill"]["ratio"], 3)
            for k in ("wet_fraction", "wet_fraction_truth", "wet_intensity", "wet_intensity_truth"):
                if k in m:
                    row[k] = _fmt(m[k])
            rows.append(row)
    return rows


def rows_to_csv(rows: list[dict[str, str]]) -> str:
    """CSV text with the union of the rows' columns (in first-seen order)."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def markdown_table(
    metrics: dict[str, dict[str, dict[str, Any]]],
    variables: list[str],
    units: dict[str, str],
    baseline: str = "bicubic",
    flags: dict[str, list[str]] | None = None,
) -> str:
    """The methods table: per variable RMSE (and its ratio to ``baseline``), CRPS (and its ratio
    to ``baseline``'s MAE), spectral ratio per band and p99 error, one row per method; a method
    in ``flags`` for the variable (validation RMSE above bicubic's) is marked."""
    flags = flags or {}
    lines = []
    for var in variables:
        u = units[var]
        bands = band_order(next(iter(metrics.values()))[var]["spectral_ratio"])
        lines += [
            f"**{var}** ({u})",
            "",
            f"| method | RMSE ({u}) | CRPS ({u}) | spectral ratio {' / '.join(bands)} cells "
            f"| p99 error ({u}) |",
            "|---|---|---|---|---|",
        ]
        base = metrics.get(baseline, {}).get(var, {}).get("rmse")
        base_mae = metrics.get(baseline, {}).get(var, {}).get("mae")
        for method, per_var in metrics.items():
            m = per_var[var]
            rmse = _fmt(m["rmse"], 3)
            if base and method != baseline:
                rmse += f" ({m['rmse'] / base:.2f}×)"
            crps, is_ens = crps_or_mae(m)
            crps_s = _fmt(crps, 3) + ("" if is_ens else "*")
            if base_mae and crps is not None and method != baseline:
                crps_s += f" ({crps / base_mae:.2f}×)"
            ratio = " / ".join(f"{m['spectral_ratio'][b]:.2f}" for b in bands)
            p99 = _fmt(m.get("quantile_error", {}).get("p99"), 3)
            name = method + (" ⚠ val RMSE > bicubic" if var in flags.get(method, []) else "")
            lines.append(f"| {name} | {rmse} | {crps_s} | {ratio} | {p99} |")
        lines.append("")
    lines.append(
        f"\\* deterministic method: its CRPS equals its MAE. RMSE ratios are against {baseline}, "
        f"CRPS ratios against {baseline}'s MAE; ⚠: validation RMSE above bicubic's (model card); "
        "spectral ratio is method power / truth power per wavelength band (1 is right)."
    )
    return "\n".join(lines) + "\n"


def summary_html(title: str, config_yaml: str, rows: list[dict[str, str]]) -> str:
    """A self-contained HTML page: the campaign's metrics table and its config."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    head = "".join(f"<th>{html.escape(f)}</th>" for f in fields)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r.get(f, ''))}</td>" for f in fields) + "</tr>"
        for r in rows
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:2px 6px;text-align:right}</style></head><body>"
        f"<h2>{html.escape(title)}</h2><h3>Metrics on the test split</h3>"
        f"<table id='metrics'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<h3>Configuration</h3><pre id='config'>{html.escape(config_yaml)}</pre>"
        "</body></html>\n"
    )
