"""Training: one loop for one CPU (and, later, many GPUs)."""

from climai.training.loop import masked_mse, train_model

__all__ = ["masked_mse", "train_model"]
