"""Inference: applying a method to LR fields to get HR fields.

:mod:`~climai.inference.downscale` is the one engine every emulator runs through (the ``infer``
rule and ``climai downscale``), :mod:`~climai.inference.tiling` its tiles, blending and
post-blending conservation, :mod:`~climai.inference.predict` loads emulators as the engine's
predict callables (variable groups, seeded members) and holds the baselines' predictions,
:mod:`~climai.inference.baselines` the baselines' registry ``predict`` functions,
:mod:`~climai.inference.distributed` the split of the time blocks over GPUs and their seeds.
"""
