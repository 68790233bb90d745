"""Evaluation: every method scored the same way against the truth on the test split.

:mod:`~climai.evaluation.registry` names the metrics (numpy-free: the config reads it when it is
validated); :mod:`~climai.evaluation.metrics` computes them; :mod:`~climai.evaluation.cubes`,
:mod:`~climai.evaluation.figures`, :mod:`~climai.evaluation.summary` and
:mod:`~climai.evaluation.sweep` make what the evaluate, compare, sweep and lineage stages write.
"""
