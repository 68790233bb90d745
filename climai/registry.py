"""Method names by kind, without importing torch (the Snakefile reads them at parse time).

``climai.models`` maps the same names to their implementations; a unit test keeps them in step.
"""

from __future__ import annotations

EMULATORS: tuple[str, ...] = ("unet", "unet-crps")  # trained: train → infer
BASELINES: tuple[str, ...] = ("bicubic", "nearest", "quantile-mapping")  # no training: infer only
