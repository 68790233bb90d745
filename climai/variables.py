"""Variables know their physics: ``kind`` picks the transform and the non-negativity constraint."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

ArrayLike = Any  # np.ndarray | torch.Tensor; torch is imported only by callers that use it


def _is_tensor(x: Any) -> bool:
    # torch is not imported here: preprocessing never needs it (and it costs ~180 MB of RSS)
    torch_mod = sys.modules.get("torch")
    return torch_mod is not None and isinstance(x, torch_mod.Tensor)


@dataclass(frozen=True)
class Transform:
    """Maps a variable to the space where it is normalised and learned, and back.

    ``log1p`` (precipitation) compresses the heavy right tail: t = log(1 + x / offset), with
    ``offset`` in the variable's units (1 mm h-1 by default), so light and heavy rain both matter.
    ``identity`` (temperature, generic) leaves values as they are. Standardisation with the
    train-split mean and std follows in both cases.
    """

    name: str
    offset: float = 1.0

    def forward(self, x: ArrayLike) -> ArrayLike:
        if self.name == "identity":
            return x
        if _is_tensor(x):
            return x.clamp(min=0).div(self.offset).log1p()
        out = np.maximum(x, 0)  # NaN stays NaN
        if self.offset != 1.0:
            out /= out.dtype.type(self.offset) if out.dtype.kind == "f" else self.offset
        return np.log1p(out, out=out) if out.dtype.kind == "f" else np.log1p(out)

    def inverse(self, t: ArrayLike) -> ArrayLike:
        if self.name == "identity":
            return t
        if _is_tensor(t):
            return (t.expm1() * self.offset).clamp(min=0)
        return np.clip(np.expm1(t) * self.offset, 0, None)


_TRANSFORMS = {"precipitation": "log1p", "temperature": "identity", "generic": "identity"}


def transform_for(kind: str) -> Transform:
    """The transform of a variable ``kind``."""
    try:
        return Transform(_TRANSFORMS[kind])
    except KeyError:
        raise ValueError(
            f"unknown variable kind {kind!r}; kinds: {', '.join(_TRANSFORMS)}"
        ) from None


def is_non_negative(kind: str) -> bool:
    """Whether values of this kind can never be negative (clipped after interpolation)."""
    return kind == "precipitation"
