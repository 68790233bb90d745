"""Training: one loop from one CPU to many GPUs."""

from climai.training.loop import fit
from climai.training.losses import fair_crps, masked_mae, masked_mse

__all__ = ["fair_crps", "fit", "masked_mae", "masked_mse"]
