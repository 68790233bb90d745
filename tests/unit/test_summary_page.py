"""The campaign page (summary.html): rounded figures, the figures inline, the config folded."""

from __future__ import annotations

import base64
import math

import pytest

from climai.evaluation.summary import PageFigure, sig3, summary_html


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (0.123456, "0.123"),
        (1.0, "1"),
        (1234.5, "1230"),
        (-0.0045678, "-0.00457"),
        (12.0, "12"),
        (0.0, "0"),
        (1.23456e-5, "1.23e-05"),
        (9.87e7, "9.87e+07"),
        (math.nan, ""),
        (None, ""),
    ],
)
def test_sig3(x, text):
    assert sig3(x) == text


METRICS = {
    "bicubic": {
        "pr": {
            "rmse": 0.523456,
            "mae": 0.21234,
            "bias": -0.0123456,
            "corr": 0.876543,
            "spectral_ratio": {"2-4": 0.0123456, "4-8": 0.51234},
            "quantile_error": {"p99": -1.23456},
            "wet_fraction": 0.41234,
            "wet_fraction_truth": 0.38765,
        }
    },
    "unet-crps": {
        "pr": {
            "rmse": 0.261728,
            "mae": 0.15432,
            "crps": 0.104321,
            "bias": 0.00123,
            "corr": 0.9512,
            "spectral_ratio": {"2-4": 0.912345, "4-8": 1.01234},
            "quantile_error": {"p99": 0.1251},
            "wet_fraction": 0.39,
            "wet_fraction_truth": 0.38765,
        }
    },
}


def test_summary_page_by_hand():
    png = b"\x89PNG\r\n\x1a\nnot really"
    page = summary_html(
        "climai campaign tiny",
        "campaign: tiny\nscale: 8\n",
        METRICS,
        ["pr"],
        {"pr": "mm h-1"},
        [PageFigure("overview.png", "the whole domain & a zoom", png)],
        cell_km=0.5,
    )

    def cells(method: str) -> list[str]:
        row = page.split(f"<th>{method}</th>")[1].split("</tr>")[0]
        return [c.split("</td>")[0] for c in row.split("<td>")[1:]]

    # RMSE, its ratio to bicubic, MAE, bias, corr, CRPS, p99 error, spectral ratios, wet fraction
    expected = ["0.262", "0.50×", "0.154", "0.00123", "0.951", "0.104", "0.125", "0.912"]
    assert cells("unet-crps") == [*expected, "1.01", "0.39 (0.388)"]
    assert cells("bicubic")[5] == "0.212"  # a deterministic method's CRPS: its MAE
    assert "spectral ratio<br>2–4 cells<br>1–2 km" in page
    assert f"src='data:image/png;base64,{base64.b64encode(png).decode()}'" in page
    assert "<figcaption>the whole domain &amp; a zoom</figcaption>" in page
    assert page.index("<details>") < page.index("campaign: tiny") < page.index("</details>")
    assert "<a href='summary.csv'>" in page


def test_summary_csv_rows_carry_each_variables_units():
    """summary.csv had no units anywhere: rmse 0.52 of pr in mm h-1 or of tas in K alike."""
    from climai.evaluation.summary import rows_to_csv, summary_rows

    rows = summary_rows(METRICS, ["pr"], units={"pr": "mm h-1"})
    header, first = rows_to_csv(rows).splitlines()[:2]
    assert header.startswith("method,variable,units,rmse,")
    assert first.startswith("bicubic,pr,mm h-1,0.5235,")
