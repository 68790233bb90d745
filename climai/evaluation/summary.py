"""Tables of every method's metrics: CSV rows, a Markdown methods table, the campaign page."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climai.paths import CampaignPaths

# The scalar columns of summary.csv, in order (absent metrics are left empty).
_SCALARS = ("rmse", "mae", "bias", "corr", "crps", "crps_fair", "conservation_error")


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:.{digits}g}"


def band_order(ratios: dict[str, float]) -> list[str]:
    """Band names (``"lo-hi"``) from the shortest wavelengths to the longest."""
    return sorted(ratios, key=lambda b: float(b.split("-")[0]))


def crps_or_mae(m: dict[str, Any], ensemble: bool = False) -> tuple[float | None, bool]:
    """The CRPS of an ensemble, or the MAE of a deterministic method (its CRPS, exactly), and
    whether the method is an ensemble. An ``ensemble`` scored without ``crps`` (not in
    ``evaluate.metrics``) has no CRPS here: its ``mae`` is its ensemble mean's, not its CRPS."""
    if "crps" in m:
        return m["crps"], True
    if ensemble:
        return None, True
    return m.get("mae"), False


def summary_rows(
    metrics: dict[str, dict[str, dict[str, Any]]],
    variables: list[str],
    flags: dict[str, list[str]] | None = None,
    units: dict[str, str] | None = None,
    ensembles: Collection[str] = (),
) -> list[dict[str, str]]:
    """One row per method and variable from ``metrics[method][var]`` (metrics.json contents);
    ``flags[method]``: the variables whose validation RMSE was above bicubic's; ``units[var]``:
    the variable's units (a ``units`` column: those of every value with units in its row);
    ``ensembles``: the methods with members (see :func:`crps_or_mae`)."""
    rows = []
    for method, per_var in metrics.items():
        for var in variables:
            m = per_var[var]
            row = {"method": method, "variable": var}
            if units is not None:
                row["units"] = units[var]
            if flags and any(flags.values()):
                row["val_worse_than_bicubic"] = "yes" if var in flags.get(method, []) else ""
            row.update({k: _fmt(m.get(k)) for k in _SCALARS})
            row["crps"] = _fmt(crps_or_mae(m, method in ensembles)[0])
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
    ensembles: Collection[str] = (),
) -> str:
    """The methods table: per variable RMSE (and its ratio to ``baseline``), CRPS (and its ratio
    to ``baseline``'s MAE), spectral ratio per band and p99 error, one row per method; a method
    in ``flags`` for the variable (validation RMSE above bicubic's) is marked; ``ensembles``:
    the methods with members (see :func:`crps_or_mae`)."""
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
            crps, is_ens = crps_or_mae(m, method in ensembles)
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


def sig3(x: Any) -> str:
    """``x`` to 3 significant digits, in positional notation from 0.001 to 10⁶ (``1230``,
    ``0.0457``), else scientific; empty for a missing or non-finite value."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    v = float(f"{float(x):.3g}")
    if v == 0 or 1e-3 <= abs(v) < 1e6:
        return np.format_float_positional(v, trim="-")
    return f"{v:.2e}"


def page_figures(paths: CampaignPaths) -> list[tuple[Path, str]]:
    """The comparison figures of the campaign page, in order, with their captions."""
    return [
        (
            paths.overview,
            "The truth over the whole domain at the shown test step with the largest values (block "
            "means on large domains), the red box around its largest-value region, and that box at "
            "full resolution for the LR input, the truth and every method (ensembles: member 0).",
        ),
        (
            paths.comparison,
            "Maps of the shown test steps: LR input, truth and every method on one colour scale, "
            "and every method's error (method − truth) on one symmetric scale; north up, in the "
            "data's coordinates.",
        ),
        (
            paths.comparison_spectra,
            "Radially averaged power spectra against wavelength in km (on a lat/lon grid at the "
            "domain's mean latitude), the truth in black: below it at short wavelengths means too "
            "smooth.",
        ),
        (
            paths.comparison_qq,
            "Quantiles (1 % to 99.95 %) of every method against the truth's; on the 1:1 line the "
            "distribution, extremes included, is right.",
        ),
        (
            paths.rank_histograms,
            "Rank histograms of the ensembles: flat is reliable, U-shaped under-dispersed.",
        ),
        (
            paths.learning_curves,
            "Learning curves of the emulators (history.csv): training and validation loss, "
            "learning rate and training samples/s per epoch.",
        ),
    ]


@dataclass(frozen=True)
class PageFigure:
    """A figure of the campaign page: its file name, caption and PNG bytes (embedded)."""

    name: str
    caption: str
    png: bytes


def _variable_table(
    var: str,
    metrics: dict[str, dict[str, dict[str, Any]]],
    units: str,
    baseline: str,
    cell_km: float | None,
    ensembles: Collection[str] = (),
) -> str:
    """One variable's table: a row per method, 3 significant digits."""
    first = next(iter(metrics.values()))[var]
    bands = band_order(first["spectral_ratio"])
    base = metrics.get(baseline, {}).get(var, {}).get("rmse")
    u = html.escape(units)
    heads = [f"RMSE ({u})", *([f"RMSE / {html.escape(baseline)}"] if base else [])]
    heads += [f"MAE ({u})", f"bias ({u})", "corr", f"CRPS ({u})", f"p99 error ({u})"]
    for b in bands:
        lo, hi = (float(e) for e in b.split("-"))
        km = f"<br>{sig3(lo * cell_km)}–{sig3(hi * cell_km)} km" if cell_km else ""
        heads.append(f"spectral ratio<br>{sig3(lo)}–{sig3(hi)} cells{km}")
    wet = "wet_fraction" in first
    heads += ["wet fraction (truth)"] if wet else []
    heads += [f"conservation error ({u})"] if "conservation_error" in first else []
    body = []
    for method, per_var in metrics.items():
        m = per_var[var]
        values = [sig3(m.get("rmse")), *([f"{m['rmse'] / base:.2f}×"] if base else [])]
        values += [sig3(m.get(k)) for k in ("mae", "bias", "corr")]
        values += [
            sig3(crps_or_mae(m, method in ensembles)[0]),
            sig3(m.get("quantile_error", {}).get("p99")),
        ]
        values += [sig3(m["spectral_ratio"].get(b)) for b in bands]
        if wet:
            values.append(f"{sig3(m.get('wet_fraction'))} ({sig3(m.get('wet_fraction_truth'))})")
        if "conservation_error" in first:
            values.append(sig3(m.get("conservation_error")))
        cells = "".join(f"<td>{v}</td>" for v in values)
        body.append(f"<tr><th>{html.escape(method)}</th>{cells}</tr>")
    head = "<th>method</th>" + "".join(f"<th>{h}</th>" for h in heads)
    return (
        f"<h3>{html.escape(var)} ({u})</h3>"
        f"<table class='metrics' id='metrics-{html.escape(var)}'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


_STYLE = (
    "body{font-family:sans-serif;font-size:14px;max-width:1400px;margin:1em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
    "thead th{background:#eee;text-align:center;font-weight:normal}tbody th{text-align:left}"
    "figure{margin:1em 0 2em}figure img{max-width:100%;height:auto;border:1px solid #ddd}"
    "figcaption{color:#444;max-width:60em}details{margin:2em 0}summary{cursor:pointer}"
    "pre{background:#f6f6f6;padding:1em;overflow:auto}p.note{color:#444;max-width:60em}"
)


def summary_html(
    title: str,
    config_yaml: str,
    metrics: dict[str, dict[str, dict[str, Any]]],
    variables: list[str],
    units: dict[str, str],
    figures: list[PageFigure],
    cell_km: float | None = None,
    baseline: str = "bicubic",
    ensembles: Collection[str] = (),
) -> str:
    """The campaign page: per variable a table of every method's test-split metrics to 3
    significant digits (RMSE also as a ratio to ``baseline``; spectral bands in cells and, with
    ``cell_km``, in km), the ``figures`` inline (embedded PNG, so the page works alone, from disk
    or in the Snakemake report), and the configuration folded away. All digits: summary.csv."""
    tables = "".join(
        _variable_table(v, metrics, units[v], baseline, cell_km, ensembles) for v in variables
    )
    figs = "".join(
        f"<figure id='{html.escape(f.name)}'>"
        f"<img alt='{html.escape(f.name)}' src='data:image/png;base64,"
        f"{base64.b64encode(f.png).decode()}'>"
        f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
        for f in figures
    )
    note = (
        "Every method scored the same way against the HR truth on the test split (time steps "
        "never seen in training), NaN-masked, in each variable's units; rounded to 3 significant "
        "digits (all digits: <a href='summary.csv'>summary.csv</a>). Lower is better for RMSE, "
        "MAE, CRPS and |bias| (a deterministic method's CRPS is its MAE); a spectral ratio (method power / truth power in a wavelength band) "
        "of 1 is right, below 1 too smooth. The wet fraction is the method's, the truth's in "
        "brackets."
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h2>{html.escape(title)}</h2><p class='note'>{note}</p>{tables}"
        f"<h2>Figures</h2>{figs}"
        "<details><summary>Configuration (the validated config of this campaign)</summary>"
        f"<pre id='config'>{html.escape(config_yaml)}</pre></details>"
        "</body></html>\n"
    )
