"""Training: one loop from one CPU to many GPUs (:mod:`~climai.training.loop`).

Imports no torch itself: the CLI catches :class:`TrainingInterrupted` for every subcommand, and
importing torch costs ~1.5 s of CPU in every Snakemake job, also those that never train.
"""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after writing a checkpoint; rerunning ``train`` resumes."""
