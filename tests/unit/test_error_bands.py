"""benchmarks/error_bands.py (issue 19): the squared error split by wavelength band."""

from __future__ import annotations

import math

import numpy as np
import pytest

from climai.testing import random_field
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def eb():
    return load_benchmark("error_bands")


def test_band_edges_end_at_the_lr_nyquist_wavelength(eb):
    assert eb.band_edges(8) == [0.0, 4.0, 8.0, 16.0, math.inf]
    assert eb.band_edges(4) == [0.0, 4.0, 8.0, math.inf]


def test_bands_add_up_to_the_squared_error_with_missing_cells(eb):
    for shape in [(48, 64), (33, 50)]:  # even and odd widths: the real FFT's Nyquist column
        e = random_field(shape, seed=3, nan_fraction=0.2)
        sums = eb.band_sums(e, eb.band_edges(8))
        assert sums.sum() == pytest.approx(float(np.nansum(e.astype(np.float64) ** 2)), rel=1e-9)


def test_a_wave_lands_in_its_own_band(eb):
    y, x = np.mgrid[0:64, 0:64]
    edges = eb.band_edges(8)  # bands: <4, 4-8, 8-16, ≥16
    # waves of 32, 10.7, 6.4 (diagonal) and 3.2 cells, periodic on the grid
    for (cx, cy), band in [((2, 0), 3), ((6, 0), 2), ((6, 8), 1), ((0, 20), 0)]:
        wave = np.cos(2 * np.pi * (cx * x + cy * y) / 64)
        sums = eb.band_sums(wave + 0.5, edges)
        others = np.delete(sums, [band, 3])
        assert sums[band] >= float((wave**2).sum()) - 1e-6, (cx, cy, sums)
        assert np.all(others < 1e-6), (cx, cy, sums)
        assert sums[3] >= 0.25 * 64 * 64 - 1e-6  # the mean 0.5 is the ≥ 16-cell band's


def test_the_prepared_data_of_a_campaign_follows_its_merged_config(eb, tmp_path):
    results = tmp_path / "results"
    (results / "variants").mkdir(parents=True)
    # a committed campaign that reuses another's prep/, and a transfer variant written by the script
    assert eb.prep_of(results, "transfer-knmi") == results / "knmi" / "prep" / "dataset.zarr"
    (results / "variants" / "x-t-knmi.yaml").write_text(
        "campaign: x-t-knmi\nprepared: {campaign: knmi, folder: prep-bc}\n"
    )
    assert eb.prep_of(results, "x-t-knmi") == results / "knmi" / "prep-bc" / "dataset.zarr"
    # a campaign with no config file here: its own prep/
    assert eb.prep_of(results, "elsewhere") == results / "elsewhere" / "prep" / "dataset.zarr"
