"""``compute``: the settings the numbers of ``train`` and ``infer`` depend on, fixed by the campaign.

Snakemake's ``--cores`` and a profile's ``threads`` only schedule jobs: a rerun with other core
counts gives bitwise the same model and outputs (README "Reproducibility").
"""

from __future__ import annotations

from pydantic import Field

from climai.config.base import StrictModel


class ComputeConfig(StrictModel):
    """How train and infer compute, whatever the scheduler gives them (``--cores``, profiles)."""

    threads: int = Field(
        2,
        ge=1,
        le=1024,
        description="Torch intra-op CPU threads of every train and infer process (each DDP or "
        "torchrun rank); a method's own threads key overrides it. Results depend on it (float "
        "sums are split by thread), never on --cores or a profile's threads, which only schedule "
        "jobs. 2: the toy campaign's numbers on a 2-core machine; raise it for large models on "
        "many cores (the results change once).",
    )
    deterministic: bool = Field(
        False,
        description="Deterministic kernels: torch.use_deterministic_algorithms, "
        "CUBLAS_WORKSPACE_CONFIG=:4096:8, cuDNN benchmark off, so reruns on the same GPU model "
        "are bitwise (slower; an op without a deterministic kernel stops with an error). CPU runs "
        "are bitwise without it.",
    )
