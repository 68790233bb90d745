"""climai.preprocess.coarsen.coarser_pair (issue 19): the coarsened training pairs of
``coarsen_sources`` and of ``benchmarks/temporal_context.py --scales``."""

from __future__ import annotations

import numpy as np

from climai.preprocess.coarsen import coarser_pair
from climai.testing import random_field


def test_coarsened_pairs_are_the_block_means_of_the_original():
    hr = np.exp(random_field((3, 70, 100), seed=5))  # not whole 16-cell blocks: cut to 64 × 96
    coarse, lr = coarser_pair(hr, 2, 8)
    assert coarse.shape == (3, 32, 48) and lr.shape == (3, 4, 6)
    want = hr[:, :64, :96].reshape(3, 4, 16, 6, 16).mean(axis=(2, 4))
    np.testing.assert_allclose(lr, want, rtol=1e-5)
    np.testing.assert_allclose(
        coarse[:, :2, :2], hr[:, :4, :4].reshape(3, 2, 2, 2, 2).mean(axis=(2, 4)), rtol=1e-5
    )


def test_a_coarse_cell_with_most_of_its_cells_missing_is_missing():
    hr = np.ones((1, 32, 32), np.float32)
    hr[0, :2, :2] = np.nan  # a whole 2 × 2 block: its coarse cell is NaN ...
    hr[0, 2:4, 2] = np.nan  # ... half of another: still valid, the mean of the rest
    coarse, lr = coarser_pair(hr, 2, 8)
    assert np.isnan(coarse[0, 0, 0]) and coarse[0, 1, 1] == 1.0
    assert lr[0, 0, 0] == 1.0  # the LR block mean ignores the one missing coarse cell
