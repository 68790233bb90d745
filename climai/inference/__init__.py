"""Inference: applying a method to LR fields to get HR fields.

:mod:`~climai.inference.downscale` is the one engine every method runs through (the ``infer``
rule and ``climai downscale``): emulators tile by tile, baselines band by band, both streamed by
time blocks and written chunk by chunk by :mod:`~climai.inference.engine`;
:mod:`~climai.inference.tiling` holds the tiles, blending, post-blending conservation and the
skipping of tiles without LR values, :mod:`~climai.inference.predict` loads emulators as the
engine's predict callables (variable groups, seeded members) and holds the interpolation and
quantile-mapped predictions, :mod:`~climai.inference.baselines` the baselines' registry
``predict`` functions (fitted once, streamed) and their banded application,
:mod:`~climai.inference.distributed` the split of the time blocks over GPUs and their seeds,
:mod:`~climai.inference.inputs` the checks of what ``climai downscale`` is given.
"""
