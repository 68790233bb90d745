"""The methods' building blocks: the residual U-Net, interpolation, quantile mapping, conservation.

Which method types exist, their kinds and how each is built or predicts is the method registry's
(:mod:`climai.registry`).
"""
