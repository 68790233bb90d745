"""Preprocessing: coarsening, splits and normalisation statistics (pure functions)."""

from climai.preprocess.coarsen import coarsen_block_mean
from climai.preprocess.splits import SPLITS, split_labels
from climai.preprocess.stats import normalisation_stats

__all__ = ["SPLITS", "coarsen_block_mean", "normalisation_stats", "split_labels"]
