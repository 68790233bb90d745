import numpy as np
import pytest

from climai.config import ConfigError, validate_config
from climai.evaluation.metrics import (
    METRICS,
    SPECTRUM_BYTES,
    MetricInput,
    SpectralRegion,
    bias,
    block_mean,
    compute_metrics,
    conservation_error,
    corr,
    crps_ensemble,
    crps_fair,
    get_metric,
    largest_valid_rectangle,
    mae,
    quantiles,
    radial_power_spectrum,
    radial_power_sums,
    rank_histogram,
    rmse,
    spectral_ratio,
    spectral_region,
    spread_skill,
    wet_fraction,
    wet_intensity,
)
from climai.testing import random_field
from tests.conftest import load_benchmark


def test_scores_by_hand_with_missing_cells():
    truth = np.array([1.0, 2.0, np.nan, 4.0])
    pred = np.array([2.0, 2.0, 9.0, 1.0])
    assert rmse(pred, truth) == pytest.approx(np.sqrt((1 + 0 + 9) / 3))
    assert mae(pred, truth) == pytest.approx((1 + 0 + 3) / 3)
    assert bias(pred, truth) == pytest.approx((1 + 0 - 3) / 3)
    assert corr(2 * truth + 1, truth) == pytest.approx(1.0)


def test_rmse_of_nan_masked_fields_ignores_cells_missing_in_either():
    truth = np.array([[0.0, np.nan], [1.0, 3.0]])
    pred = np.array([[2.0, 5.0], [np.nan, 3.0]])
    assert rmse(pred, truth) == pytest.approx(np.sqrt((4 + 0) / 2))


def test_no_shared_valid_cell_is_an_error():
    with pytest.raises(ValueError, match="no valid cell"):
        rmse(np.array([np.nan, 1.0]), np.array([1.0, np.nan]))


@pytest.mark.parametrize("wavelength", [4, 8, 16])
def test_spectrum_of_a_sine_peaks_at_its_wavelength(wavelength):
    x = np.arange(64)
    field = np.sin(2 * np.pi * x / wavelength)[None, :].repeat(64, axis=0)
    wl, p = radial_power_spectrum(field)
    assert wl[np.argmax(p)] == wavelength


def test_spectrum_with_missing_cells_uses_the_valid_rectangle_only():
    """A sine with a NaN frame and a NaN corner: the spectrum is taken on the largest valid
    rectangle, still peaks at the wavelength, and no filled value adds power elsewhere."""
    x = np.arange(80)
    field = np.sin(2 * np.pi * x / 8)[None, :].repeat(80, axis=0)[None].repeat(3, axis=0)
    field[:, :8, :] = np.nan
    field[:, :, 72:] = np.nan
    field[:, 70:, :30] = np.nan
    region = spectral_region(field)
    assert (region.rows, region.cols) == (slice(8, 70), slice(0, 72))
    wl, p = radial_power_spectrum(field)
    assert abs(wl[np.argmax(p)] - 8) <= 0.5
    clean = np.sin(2 * np.pi * np.arange(72) / 8)[None, :].repeat(62, axis=0)
    _, p_c = radial_power_spectrum(clean)
    np.testing.assert_allclose(p, p_c, rtol=1e-9)


def test_a_step_with_a_hole_is_left_out_of_the_spectrum():
    field = random_field((4, 32, 32), seed=3).astype(np.float64)
    holed = field.copy()
    holed[2, 10, 10] = np.nan
    region = spectral_region(holed)
    assert region.steps.tolist() == [0, 1, 3]
    _, p = radial_power_spectrum(holed)
    _, p_ref = radial_power_spectrum(field[[0, 1, 3]])
    np.testing.assert_allclose(p, p_ref)


def test_largest_valid_rectangle_by_hand():
    m = np.array(
        [
            [1, 1, 0, 1],
            [1, 1, 1, 1],
            [1, 1, 1, 1],
            [0, 1, 1, 0],
        ],
        bool,
    )
    assert largest_valid_rectangle(m) == (slice(1, 3), slice(0, 4))
    with pytest.raises(ValueError, match="no valid cell"):
        largest_valid_rectangle(np.zeros((3, 3), bool))


@pytest.fixture(scope="module")
def stack_rectangle():
    """The stack loop largest_valid_rectangle replaced (benchmarks/rectangle.py keeps it to time
    against): the reference, ties included."""
    return load_benchmark("rectangle").stack_rectangle


@pytest.mark.parametrize("density", [0.5, 0.75, 0.9, 0.97])
def test_largest_valid_rectangle_matches_the_stack_method_and_brute_force(density, stack_rectangle):
    rng = np.random.default_rng(int(density * 100))
    for _ in range(60):
        ny, nx = rng.integers(1, 9, size=2)
        mask = rng.random((ny, nx)) < density
        if not mask.any():
            continue
        got = largest_valid_rectangle(mask)
        assert got == stack_rectangle(mask)  # the same rectangle, ties included
        assert mask[got].all()
        best = max(  # every rectangle of True cells, by area
            (r1 - r0) * (c1 - c0)
            for r0 in range(ny)
            for r1 in range(r0 + 1, ny + 1)
            for c0 in range(nx)
            for c1 in range(c0 + 1, nx + 1)
            if mask[r0:r1, c0:c1].all()
        )
        assert mask[got].size == best


def test_largest_valid_rectangle_of_a_radar_like_mask(stack_rectangle):
    # discs of coverage (radar ranges) on a wide grid, with a ragged hole: what a composite's
    # valid-cell mask looks like
    yy, xx = np.mgrid[:120, :300]
    mask = np.zeros((120, 300), bool)
    for cy, cx, r in [(60, 60, 50), (50, 140, 45), (70, 220, 55)]:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    mask[40:45, 100:180] = False
    got = largest_valid_rectangle(mask)
    assert got == stack_rectangle(mask) and mask[got].all()
    rows, cols = got
    assert (rows.stop - rows.start) * (cols.stop - cols.start) > 0.3 * mask.sum()


def test_spectra_need_a_large_enough_valid_rectangle():
    field = random_field((2, 32, 32), seed=1, nan_fraction=0.3)
    with pytest.raises(ValueError, match="largest valid rectangle"):
        radial_power_spectrum(field)


def test_spectral_ratio_is_one_for_the_truth_and_a_quarter_at_half_amplitude():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((3, 64, 64))
    bands = [[2, 4], [4, 8], [8, 16]]
    assert spectral_ratio(truth, truth, bands) == {"2-4": 1.0, "4-8": 1.0, "8-16": 1.0}
    half = spectral_ratio(truth * 0.5, truth, bands)
    assert all(v == pytest.approx(0.25) for v in half.values())


def test_quantiles_and_precipitation_scores_by_hand():
    v = np.array([0.0, 0.0, 0.05, 0.1, 0.4, 1.0, np.nan, 2.5, 0.0, 0.0, 0.0])
    q = quantiles(np.arange(101.0))
    assert q == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": pytest.approx(99.9)}
    assert wet_fraction(v, 0.1) == pytest.approx(4 / 10)
    assert wet_intensity(v, 0.1) == pytest.approx((0.1 + 0.4 + 1.0 + 2.5) / 4)
    assert np.isnan(wet_intensity(np.zeros(5), 0.1))


def test_conservation_error_of_block_means():
    lr = np.array([[[1.0, 2.0], [3.0, np.nan]]])
    hr = np.kron(lr, np.ones((2, 2)))
    np.testing.assert_array_equal(block_mean(hr, 2), lr)
    assert conservation_error(hr, lr, 2) == 0.0
    hr[0, 0, 0] += 1.0  # one HR cell of the first block: its block mean moves by 1/4
    assert conservation_error(hr, lr, 2) == pytest.approx(np.sqrt(0.25**2 / 3))
    with pytest.raises(ValueError, match="multiple of scale=3"):
        block_mean(hr, 3)


def test_crps_of_known_ensembles():
    # members 0 and 1, truth 0.5: mean|x - y| = 0.5, sum|x_i - x_j| = 2
    ens = np.array([[0.5], [1.5]]) - 0.5
    y = np.array([0.5])
    assert crps_ensemble(ens, y) == pytest.approx(0.5 - 2 / (2 * 4))
    assert crps_fair(ens, y) == pytest.approx(0.5 - 2 / (2 * 2))
    # members 1, 2, 3, truth 0: mean|x - y| = 2, sum|x_i - x_j| = 8
    ens3 = np.array([1.0, 2.0, 3.0])[:, None]
    assert crps_ensemble(ens3, np.array([0.0])) == pytest.approx(2 - 8 / 18)
    assert crps_fair(ens3, np.array([0.0])) == pytest.approx(2 - 8 / 12)


def test_crps_equals_the_integral_of_the_squared_cdf_difference():
    rng = np.random.default_rng(4)
    ens = rng.normal(size=(7, 1))
    y = np.array([0.3])
    grid = np.linspace(-8, 8, 200_001)
    cdf = (ens[:, 0][None, :] <= grid[:, None]).mean(axis=1)
    integral = np.trapezoid((cdf - (grid >= y[0])) ** 2, grid)
    assert crps_ensemble(ens, y) == pytest.approx(integral, abs=1e-3)


def test_fair_crps_is_unbiased_for_a_reliable_ensemble_and_nan_cells_are_masked():
    rng = np.random.default_rng(5)
    truth = rng.normal(size=20_000)
    ens = rng.normal(size=(3, 20_000))
    # CRPS of N(0, 1) for y ~ N(0, 1) has expectation 1/sqrt(pi)
    assert crps_fair(ens, truth) == pytest.approx(1 / np.sqrt(np.pi), rel=0.03)
    assert crps_ensemble(ens, truth) > crps_fair(ens, truth) + 0.05
    truth[:10] = np.nan
    ens[1, 10:20] = np.nan
    assert np.isfinite(crps_fair(ens, truth))


def test_spread_skill_and_rank_histogram_of_a_reliable_ensemble():
    rng = np.random.default_rng(6)
    truth = rng.normal(size=(40, 50))
    ens = rng.normal(size=(4, 40, 50))
    ss = spread_skill(ens, truth)
    assert ss["ratio"] == pytest.approx(1.0, abs=0.05)
    counts = rank_histogram(ens, truth)
    assert len(counts) == 5 and sum(counts) == 2000
    assert max(counts) / min(counts) < 1.3
    # an under-dispersive ensemble: truth outside the members → U-shaped histogram
    narrow = rank_histogram(0.1 * ens, truth)
    assert narrow[0] + narrow[-1] > 0.8 * 2000
    assert spread_skill(0.1 * ens, truth)["ratio"] < 0.2


def test_rank_histogram_by_hand_and_ties_are_shared():
    ens = np.array([[0.0, 1.0, 5.0], [2.0, 3.0, 6.0]])
    assert rank_histogram(ens, np.array([-1.0, 2.5, 9.0])) == [1, 1, 1]
    dry = np.zeros((3, 3000))
    counts = rank_histogram(dry, np.zeros(3000))
    assert all(600 < c < 900 for c in counts)


def test_metric_registry_lists_valid_names():
    assert get_metric("rmse") is METRICS["rmse"]
    with pytest.raises(KeyError, match=r"unknown metric 'rsme'; valid metrics: .*rmse"):
        get_metric("rsme")
    with pytest.raises(ConfigError, match=r"unknown metric\(s\) \['rsme'\]; valid metrics"):
        validate_config({"evaluate": {"metrics": ["rmse", "rsme"]}})
    with pytest.raises(ConfigError, match="contract metrics"):
        validate_config({"evaluate": {"metrics": ["rmse"]}})


def test_compute_metrics_has_the_contract_keys():
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((2, 32, 32))
    m = compute_metrics(truth + 0.1, truth, [[2, 4], [4, 8]])
    assert {"rmse", "mae", "bias", "corr", "spectral_ratio"} <= set(m)
    assert m["bias"] == pytest.approx(0.1)
    assert set(m["spectral_ratio"]) == {"2-4", "4-8"}
    assert m["quantile_error"]["p50"] == pytest.approx(0.1)
    assert "crps" not in m and "wet_fraction" not in m and "conservation_error" not in m


def test_ensemble_precipitation_input_gets_every_metric():
    rng = np.random.default_rng(2)
    truth = np.clip(rng.gamma(0.5, 1.0, size=(3, 16, 16)) - 0.2, 0, None)
    ens = np.clip(truth[None] + rng.normal(0, 0.3, size=(5, 3, 16, 16)), 0, None)
    lr = block_mean(truth, 4)
    inp = MetricInput(ens, truth, kind="precipitation", lr=lr, scale=4, bands=[[2, 4], [4, 8]])
    m = compute_metrics(inp)
    assert set(m) == set(METRICS.builtins)
    assert m["rmse"] == pytest.approx(rmse(ens.mean(axis=0), truth))
    assert m["crps"] >= m["crps_fair"]
    assert len(m["rank_histogram"]) == 6 and sum(m["rank_histogram"]) == truth.size
    assert m["wet_fraction_truth"] == pytest.approx(np.mean(truth >= 0.1))
    assert 0 < m["conservation_error"] < 0.3
    with pytest.raises(ValueError, match="does not match truth"):
        MetricInput(ens[:, :2], truth)


@pytest.mark.parametrize("shape", [(3, 64, 64), (2, 37, 50), (2, 40, 81), (1, 33, 48)])
def test_summed_power_equals_the_full_plane_fft_of_the_detrended_windowed_fields(shape):
    """radial_power_sums (real FFT, half plane weighted, plane removed by projections, fields
    cut chunk by chunk) against the definition: each field's least-squares plane removed with
    a design matrix, a 2-D Hann window, |FFT|² over the whole plane binned by integer wavenumber."""
    fields = np.stack([random_field(shape[1:], seed=s) for s in range(2 * shape[0])]).reshape(
        2, *shape
    )
    ny, nx = shape[1:]
    yy, xx = np.mgrid[0:ny, 0:nx]
    fields = (fields + 0.05 * yy - 0.02 * xx + 3.0).astype(np.float32)  # a plane to remove
    region = SpectralRegion(slice(0, shape[1]), slice(0, shape[2]), np.arange(shape[0]))
    design = np.column_stack([np.ones(ny * nx), yy.ravel(), xx.ravel()])
    n = min(ny, nx)
    bins = np.rint(
        np.hypot(*np.meshgrid(np.fft.fftfreq(ny), np.fft.fftfreq(nx), indexing="ij")) * n
    )
    expected = np.zeros(n // 2 + 1)
    for f in fields.reshape(-1, ny * nx).astype(np.float64):
        coef, *_ = np.linalg.lstsq(design, f, rcond=None)
        tapered = (f - design @ coef).reshape(ny, nx) * np.outer(np.hanning(ny), np.hanning(nx))
        power = np.abs(np.fft.fft2(tapered)) ** 2
        expected += np.bincount(bins.astype(int).ravel(), power.ravel())[: n // 2 + 1]
    for chunk_bytes in (1, SPECTRUM_BYTES):
        got, used = radial_power_sums(fields, region, chunk_bytes)
        assert used == fields.shape[0] * shape[0]
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * expected.max())


def test_a_band_with_no_wavelength_of_the_region_is_nan_with_a_warning(caplog):
    """[40, 64) on a 64-cell region holds none of its wavelengths (64, 32, 21.3 ...): NaN, which
    summary.md printed as 'nan' with no word in the log."""
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((2, 64, 64))
    with caplog.at_level("WARNING", logger="climai"):
        ratios = spectral_ratio(0.5 * truth, truth, [[2, 4], [40, 64]])
    assert ratios["2-4"] == pytest.approx(0.25) and np.isnan(ratios["40-64"])
    assert "band [40, 64) (evaluate.bands, HR cells) holds no wavelength" in caplog.text
    assert "64×64-cell spectral region (its wavelengths: 64, 32, 21.3, ... 2 cells)" in caplog.text
