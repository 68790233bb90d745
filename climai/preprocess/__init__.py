"""Preprocessing: coarsening, splits and normalisation statistics (pure functions)."""

from climai.preprocess.coarsen import coarsen_block_mean
from climai.preprocess.splits import SPLITS, make_split_labels, split_labels
from climai.preprocess.stats import normalisation_stats

__all__ = [
    "SPLITS",
    "coarsen_block_mean",
    "make_split_labels",
    "normalisation_stats",
    "split_labels",
]
