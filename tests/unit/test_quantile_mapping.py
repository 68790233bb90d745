import numpy as np
import pytest

from climai.config import validate_config
from climai.data.prepared import PreparedDataset
from climai.inference import baselines
from climai.inference.predict import bicubic_prediction, quantile_mapped_prediction
from climai.models import quantile_mapping
from climai.models.quantile_mapping import (
    PairSample,
    apply_quantile_mapping,
    fit_quantile_mapping,
)
from climai.registry import method_kind
from climai.testing import TINY_CAMPAIGN, create_prepared_test_data


def test_quantile_mapping_recovers_a_known_monotone_transform():
    rng = np.random.default_rng(0)
    source = rng.standard_normal(200_000)
    target = np.exp(0.5 * rng.standard_normal(200_000) + 1.0)  # same ranks as exp(0.5 s + 1)
    src_q, tgt_q = fit_quantile_mapping(source, target, n_quantiles=1001)
    x = np.linspace(-2.5, 2.5, 41)
    np.testing.assert_allclose(
        apply_quantile_mapping(x, src_q, tgt_q), np.exp(0.5 * x + 1), rtol=0.03
    )


def test_quantile_mapping_extrapolates_additively_and_keeps_nan():
    src_q, tgt_q = np.array([0.0, 1.0, 2.0]), np.array([10.0, 20.0, 40.0])
    out = apply_quantile_mapping(np.array([-1.0, 0.5, 1.5, 3.0, np.nan]), src_q, tgt_q)
    np.testing.assert_allclose(out, [9.0, 15.0, 30.0, 41.0, np.nan])


def test_tied_source_quantiles_map_to_the_mean_of_their_targets():
    # half the source is dry, a third of the target: dry source maps to the mean over the tie
    src_q = np.array([0.0, 0.0, 0.0, 1.0])
    tgt_q = np.array([0.0, 0.0, 3.0, 5.0])
    assert apply_quantile_mapping(np.array([0.0]), src_q, tgt_q)[0] == pytest.approx(1.0)


def test_fit_uses_paired_valid_cells_and_a_seeded_subsample():
    rng = np.random.default_rng(1)
    s = rng.standard_normal(5000)
    t = 2 * s
    s[:10] = np.nan
    a = fit_quantile_mapping(s, t, 101, max_samples=2000, seed=3)
    b = fit_quantile_mapping(s, t, 101, max_samples=2000, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], 2 * a[0])
    with pytest.raises(ValueError, match="differs from target"):
        fit_quantile_mapping(s, t[:-1])


def test_quantile_mapped_prediction_corrects_a_biased_smooth_field():
    """Train LR is the HR truth coarsened; the HR truth has a heavier tail than bicubic of LR.
    Quantile mapping fitted on train brings the test p99 nearer the truth than bicubic does."""
    rng = np.random.default_rng(2)
    hr = np.clip(rng.gamma(0.4, 2.0, size=(40, 1, 16, 16)) - 0.3, 0, None)
    lr = hr.reshape(40, 1, 4, 4, 4, 4).mean(axis=(3, 5))
    source = bicubic_prediction(lr[:30], 4, ["precipitation"])[:, 0]
    sample = PairSample(PairSample.valid_pairs(source, hr[:30, 0]), 10_000, seed=0)
    for t in range(30):  # the train steps one by one
        sample.add(source[t : t + 1], hr[t : t + 1, 0])
    src_q, tgt_q = (q[None] for q in sample.fit(201))
    pred = quantile_mapped_prediction(lr[30:], 4, ["precipitation"], src_q, tgt_q)
    assert pred.shape == (10, 1, 16, 16) and src_q.shape == tgt_q.shape == (1, 201)
    assert (pred >= 0).all()
    bic = bicubic_prediction(lr[30:], 4, ["precipitation"])
    truth_p99 = np.quantile(hr[30:], 0.99)
    assert abs(np.quantile(pred, 0.99) - truth_p99) < abs(np.quantile(bic, 0.99) - truth_p99)


@pytest.mark.parametrize("max_samples", [None, 300])
def test_streamed_sample_equals_the_in_memory_fit_exactly(max_samples):
    """All pairs, or the same seeded subsample as the in-memory fit, from blocks of 5, 5, 2."""
    rng = np.random.default_rng(4)
    source = rng.standard_normal((12, 8, 8))
    target = np.exp(source) + 0.1 * rng.standard_normal(source.shape)
    source[3, 2, :4] = np.nan
    target[5, 0, 0] = np.nan
    blocks = [slice(a, a + 5) for a in range(0, 12, 5)]
    n_valid = sum(PairSample.valid_pairs(source[b], target[b]) for b in blocks)
    sample = PairSample(n_valid, max_samples, seed=3)
    for b in blocks:
        sample.add(source[b], target[b])
    want = fit_quantile_mapping(source, target, 101, max_samples, seed=3)
    for got, expected in zip(sample.fit(101), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert sum(part.size for part in sample.source) == min(n_valid, max_samples or n_valid)
    with pytest.raises(ValueError, match="first pass counted"):
        PairSample(n_valid + 1, max_samples).fit(11)


def test_quantile_tables_stream_the_train_split_and_equal_the_in_memory_fit(monkeypatch):
    """Blocks of one step each (the block budget below one step's bytes), read twice: the tables
    are those of the in-memory fit of the whole train split, with the same seeded subsample."""
    qm = {"quantiles": 101, "max_samples": 5000}  # fewer than the train split's 12288 pairs
    cfg = validate_config({**TINY_CAMPAIGN, "methods": {"quantile-mapping": qm, "unet": None}})
    prep = PreparedDataset(create_prepared_test_data(scale=cfg.scale))
    monkeypatch.setattr(baselines, "FIT_BLOCK_BYTES", 1)
    reads = []
    original = PreparedDataset.hr_stack
    monkeypatch.setattr(
        PreparedDataset,
        "hr_stack",
        lambda self, v: reads.append(self.sizes["time"]) or original(self, v),
    )
    src_q, tgt_q = baselines.quantile_tables(prep, cfg, "quantile-mapping")
    train = prep.split("train")
    assert reads == [1] * (2 * train.sizes["time"])
    variables = cfg.variable_names
    kinds = [v.kind for v in cfg.variables]
    fit_src = bicubic_prediction(train.lr_stack(variables), cfg.scale, kinds)
    hr = original(train, variables)
    for i in range(len(variables)):
        want = fit_quantile_mapping(fit_src[:, i], hr[:, i], 101, 5000, cfg.seed + i)
        np.testing.assert_array_equal(src_q[i], want[0])
        np.testing.assert_array_equal(tgt_q[i], want[1])


@pytest.mark.parametrize(
    ("n", "size", "seed"),
    [(20_000, 500, 0), (20_001, 10_000, 3), (300_000, 70_000, 1), (8_000_000, 170_000, 2)],
)
def test_the_seeded_draw_is_numpys_choice_without_its_permutation(monkeypatch, n, size, seed):
    """The pairs drawn are ``default_rng(seed).choice(n, size, replace=False)``'s, in its order,
    but NumPy's arange of all ``n`` pairs (8 bytes each, 0.8 GB for 10⁸ valid train cells and
    ``max_samples`` 2·10⁶, against 64 MB for 1.01·10⁸) is not built: the memory traced while
    drawing stays under half of it (64 MB for 8·10⁶ pairs)."""
    import tracemalloc

    monkeypatch.setattr(quantile_mapping, "PERMUTATION_BYTES", 0, raising=False)
    monkeypatch.setattr(quantile_mapping, "REPLAY_BYTES", 0, raising=False)
    want = np.random.default_rng(seed).choice(n, size=size, replace=False)
    tracemalloc.start()
    try:
        sample = PairSample(n_valid=n, size=size, seed=seed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(sample.picks, np.sort(want))
    np.testing.assert_array_equal(quantile_mapping.draw_indices(n, size, seed), want)
    if n >= 1_000_000:
        assert peak < 8 * n / 2


def test_baselines_are_registered_methods():
    assert {method_kind(m) for m in ("bicubic", "nearest", "quantile-mapping")} == {"baseline"}
    with pytest.raises(KeyError, match="valid methods: .*quantile-mapping"):
        method_kind("qm")
