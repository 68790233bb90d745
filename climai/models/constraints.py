"""Hard constraints on HR predictions: the block mean of the output equals the LR input.

Additive for unbounded variables (``y + up(lr - blockmean(y))``), multiplicative for non-negative
ones (``y * up(lr / blockmean(y))``, so precipitation stays ≥ 0; a block whose prediction is all
zero takes the LR value uniformly). Works in physical units on ``(N, V, H, W)`` tensors.

Gradients stay finite for every input the training loop meets (issue 19: a real-radar fine-tune
trained to NaN). A missing (NaN) LR block leaves its cells as predicted, and its NaN never enters
the arithmetic: behind ``torch.where`` the unselected branch still gets a zero gradient, and
``0 × NaN`` in the product's backward made every weight NaN. The multiplicative gain
``lr / blockmean(y)`` is capped at :data:`MAX_GAIN`: its gradient grows like the gain, without
bound as a wet LR block's predicted mean goes to 0 (a float32 overflow below ~1e-38 mm h-1);
beyond the cap the rest of the LR mean is added uniformly, so every block still conserves
exactly, and the correction is continuous at the cap and at an all-dry prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_GAIN = 1.0e4  # largest factor the multiplicative correction scales a prediction by


def block_mean(y: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean over ``scale`` × ``scale`` blocks: ``(N, V, H, W)`` → ``(N, V, H/scale, W/scale)``.

    The only torch block mean. It cannot share the numpy one
    (:func:`climai.preprocess.coarsen.block_mean_numpy`): :func:`conserve` runs inside the
    model's forward pass, on the model's device and under autograd, which a numpy round trip
    would break. It is not NaN-aware: network outputs have no missing cells.
    """
    return F.avg_pool2d(y, scale)


def conserve(
    y: torch.Tensor, lr: torch.Tensor, scale: int, non_negative: list[bool]
) -> torch.Tensor:
    """``y`` corrected so that every block mean equals ``lr``; NaN LR blocks are left unchanged.

    Non-negative variables (``y`` ≥ 0): ``y * g + up(lr - g * blockmean(y))`` with the gain
    ``g = min(lr / blockmean(y), MAX_GAIN)``, i.e. the multiplicative correction wherever the
    prediction's block mean is more than ``lr / MAX_GAIN``, else the pattern scaled by the cap
    plus the remaining mean spread uniformly (an all-zero block takes ``lr`` uniformly, a dry LR
    block becomes exactly 0). The output and its gradient are finite wherever ``y`` is; a
    non-finite prediction stays non-finite (never replaced by the LR value)."""
    if y.shape[1] != len(non_negative) or lr.shape[1] != y.shape[1]:
        raise ValueError(
            f"conserve: prediction has {y.shape[1]} variables, LR {lr.shape[1]}, "
            f"kinds {len(non_negative)}"
        )
    y64 = y.double()
    lr64 = lr.double()
    mean = block_mean(y64, scale)
    out = []
    for v, nonneg in enumerate(non_negative):
        yv, mv, lv = y64[:, v : v + 1], mean[:, v : v + 1], lr64[:, v : v + 1]
        ok = torch.isfinite(lv)
        lv = torch.where(ok, lv, 0.0)  # no NaN behind the final where: 0 × NaN in backward
        if nonneg:
            lv = lv.clamp(min=0)
            scaled = mv * MAX_GAIN > lv  # gain below the cap (False for a NaN prediction)
            gain = torch.where(scaled, lv / torch.where(scaled, mv, 1.0), MAX_GAIN)
            rest = torch.where(scaled, 0.0, lv - mv * MAX_GAIN)  # ≥ 0: spread uniformly
            fixed = yv * _up(gain, scale) + _up(rest, scale)
        else:
            fixed = yv + _up(lv - mv, scale)
        out.append(torch.where(_up(ok, scale), fixed, yv))
    return torch.cat(out, dim=1).to(y.dtype)


def _up(t: torch.Tensor, scale: int) -> torch.Tensor:
    return t.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def inflate(
    members: torch.Tensor,
    factors: list[float],
    non_negative: list[bool],
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ensemble inflation: ``(N, M, V, H, W)`` members in physical units moved ``factors[v]``
    times as far from their mean (over ``M``; or ``mean``, ``(N, 1, V, H, W)``, the mean of a
    larger ensemble whose members come a few at a time), which stays; non-negative variables
    clipped at 0.

    The spread scales by the factor (until the clip), the best estimate does not move: unlike a
    larger injected noise, which the network turns into a different mean. Conserve afterwards
    (:func:`conserve`) where block means must hold: the departures keep the members' block
    means only up to the clip."""
    if members.shape[2] != len(non_negative) or len(factors) != len(non_negative):
        raise ValueError(
            f"inflate: members have {members.shape[2]} variables, factors {len(factors)}, "
            f"kinds {len(non_negative)}"
        )
    f = torch.tensor(factors, dtype=members.dtype, device=members.device)[:, None, None]
    mean = members.mean(1, keepdim=True) if mean is None else mean
    out = mean + f * (members - mean)
    floor = torch.tensor(
        [0.0 if n else -torch.inf for n in non_negative], dtype=out.dtype, device=out.device
    )
    return torch.maximum(out, floor[:, None, None])


#: ``calibrate_by: intensity``: a member's spread at a cell is the factor × the members' mean to
#: this power (mm h-1 for rain): the absolute error of downscaled rain grows with the rate, slower
#: than in proportion (BENCHMARKS.md, session 36)
INTENSITY_POWER = 0.75


def spread_by_intensity(
    members: torch.Tensor,
    factors: list[float],
    non_negative: list[bool],
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """Members ``(N, M, V, H, W)`` in physical units, re-spread so that every cell's spread is
    ``factors[v] × mean ** INTENSITY_POWER``: each member keeps its standardised departure
    ``(member - mean) / std`` (the network's pattern and sign) and the mean stays; clipped at 0.
    ``mean`` and ``std`` (``(N, 1, V, H, W)``, over ``M``; population std) may come from a larger
    ensemble whose members come a few at a time. Where all members agree (std 0) they stay at the
    mean. Non-negative variables only (rain): a rate's power has no meaning for the others.

    Unlike :func:`inflate`, the size of the network's own departures does not matter, only their
    pattern: the factor is the error of rain at a given rate. On held-out test splits it varied
    less between radars than the inflation does (0.27–0.35 on knmi, bom-melbourne and fmi, where
    inflation needs ×4–×11; MRMS needs 15–20× more of either: BENCHMARKS.md, session 36)."""
    if members.shape[2] != len(non_negative) or len(factors) != len(non_negative):
        raise ValueError(
            f"spread_by_intensity: members have {members.shape[2]} variables, factors "
            f"{len(factors)}, kinds {len(non_negative)}"
        )
    if not all(non_negative):
        raise ValueError(
            "calibrate_by: intensity is defined for non-negative variables (precipitation) "
            f"only; variable kinds non-negative = {non_negative}"
        )
    f = torch.tensor(factors, dtype=members.dtype, device=members.device)[:, None, None]
    mean = members.mean(1, keepdim=True) if mean is None else mean
    std = members.std(1, correction=0, keepdim=True) if std is None else std
    z = torch.where(std > 0, (members - mean) / torch.where(std > 0, std, 1.0), 0.0)
    return (mean + f * mean.clamp(min=0) ** INTENSITY_POWER * z).clamp(min=0)


#: calibrate_by → the function that spreads the members by the calibrated factor
SPREADS = {"inflation": inflate, "intensity": spread_by_intensity}
