import numpy as np
import pytest

from climai.evaluation import compute_metrics, radial_power_spectrum, spectral_ratio
from climai.evaluation.metrics import bias, corr, mae, rmse


def test_scores_by_hand_with_missing_cells():
    truth = np.array([1.0, 2.0, np.nan, 4.0])
    pred = np.array([2.0, 2.0, 9.0, 1.0])
    assert rmse(pred, truth) == pytest.approx(np.sqrt((1 + 0 + 9) / 3))
    assert mae(pred, truth) == pytest.approx((1 + 0 + 3) / 3)
    assert bias(pred, truth) == pytest.approx((1 + 0 - 3) / 3)
    assert corr(2 * truth + 1, truth) == pytest.approx(1.0)


def test_no_shared_valid_cell_is_an_error():
    with pytest.raises(ValueError, match="no valid cell"):
        rmse(np.array([np.nan, 1.0]), np.array([1.0, np.nan]))


@pytest.mark.parametrize("wavelength", [4, 8, 16])
def test_spectrum_of_a_sine_peaks_at_its_wavelength(wavelength):
    x = np.arange(64)
    field = np.sin(2 * np.pi * x / wavelength)[None, :].repeat(64, axis=0)
    wl, p = radial_power_spectrum(field)
    assert wl[np.argmax(p)] == wavelength


def test_spectral_ratio_is_one_for_the_truth_and_a_quarter_at_half_amplitude():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((3, 64, 64))
    bands = [[2, 4], [4, 8], [8, 16]]
    assert spectral_ratio(truth, truth, bands) == {"2-4": 1.0, "4-8": 1.0, "8-16": 1.0}
    half = spectral_ratio(truth * 0.5, truth, bands)
    assert all(v == pytest.approx(0.25) for v in half.values())


def test_compute_metrics_has_the_contract_keys():
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((2, 32, 32))
    m = compute_metrics(truth + 0.1, truth, [[2, 4], [4, 8]])
    assert {"rmse", "mae", "bias", "corr", "spectral_ratio"} <= set(m)
    assert m["bias"] == pytest.approx(0.1)
    assert set(m["spectral_ratio"]) == {"2-4", "4-8"}
