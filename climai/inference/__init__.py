"""Inference: applying a method to LR fields to get HR fields.

:mod:`~climai.inference.predict` loads emulators and predicts in memory,
:mod:`~climai.inference.tiling` and :mod:`~climai.inference.downscale` are the tiled streaming
engine (and ``climai downscale``), :mod:`~climai.inference.baselines` the baselines' predictions,
:mod:`~climai.inference.distributed` the split of the work over GPUs.
"""
