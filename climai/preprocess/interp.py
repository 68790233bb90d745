"""Bicubic upsampling in numpy, identical to ``climai.models.interpolate.upsample(..., "bicubic")``.

Preprocessing needs bicubic values (for the quantile-mapping statistics) inside dask tasks, where
importing torch would cost ~180 MB per process. Bicubic interpolation is separable, so it is two
small matrix products: ``out = Wy @ lr @ Wx.T``; evaluating only some HR rows and columns (a
sample lattice) costs a fraction of the full upsampling.
"""

from __future__ import annotations

import functools

import numpy as np

_A = -0.75  # the cubic convolution coefficient of torch (and of OpenCV)


def _cubic(t: np.ndarray) -> np.ndarray:
    """The four cubic-convolution weights for fractional offsets ``t`` (shape ``(n, 4)``)."""
    x = np.stack([t + 1, t, 1 - t, 2 - t], axis=-1)
    near = ((_A + 2) * x - (_A + 3)) * x * x + 1  # |x| <= 1
    far = ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A  # 1 < |x| < 2
    return np.where(x <= 1, near, far)


@functools.lru_cache(maxsize=32)
def bicubic_matrix(n_in: int, scale: int) -> np.ndarray:
    """``(n_in * scale, n_in)`` float64 weights of cell-centred bicubic upsampling along one axis.

    Source coordinate of output cell ``i``: ``(i + 0.5) / scale - 0.5`` (``align_corners=False``);
    the four neighbours are clamped to the edge (edges replicated), like ``torch.nn.functional``.
    """
    dst = np.arange(n_in * scale)
    src = (dst + 0.5) / scale - 0.5
    base = np.floor(src).astype(int)
    weights = _cubic(src - base)
    out = np.zeros((dst.size, n_in))
    for k in range(4):
        np.add.at(out, (dst, np.clip(base - 1 + k, 0, n_in - 1)), weights[:, k])
    out.flags.writeable = False
    return out


def bicubic_at(
    lr: np.ndarray, scale: int, rows: np.ndarray | None = None, cols: np.ndarray | None = None
) -> np.ndarray:
    """Bicubic upsampling of ``lr`` ``(..., h, w)`` evaluated at HR ``rows`` × ``cols`` (all: None).

    NaN LR cells are filled with the mean of the valid cells of their field before interpolating
    and are NaN again over their HR footprint, as in :func:`climai.models.interpolate.upsample`.
    """
    h, w = lr.shape[-2:]
    rows = np.arange(h * scale) if rows is None else np.asarray(rows)
    cols = np.arange(w * scale) if cols is None else np.asarray(cols)
    wy = bicubic_matrix(h, scale)[rows].astype(np.float32)
    wx = bicubic_matrix(w, scale)[cols].astype(np.float32)
    lr = np.asarray(lr, np.float32)
    missing = np.isnan(lr)
    if missing.any():
        with np.errstate(invalid="ignore"):
            fill = np.nan_to_num(np.nanmean(lr, axis=(-2, -1), keepdims=True), nan=0.0)
        lr = np.where(missing, fill, lr)
    # plain C loops, not BLAS: the matrices are tiny, and BLAS threads spin on a busy machine
    # (measured: 1 s instead of 10 ms per block inside dask tasks)
    out = np.einsum("...ij,kj->...ik", np.einsum("rh,...hw->...rw", wy, lr), wx)
    if missing.any():
        out[missing[..., rows // scale, :][..., :, cols // scale]] = np.nan
    return out
