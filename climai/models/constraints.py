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

import math

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
    _check_rain("spread_by_intensity", members, factors, non_negative)
    f = torch.tensor(factors, dtype=members.dtype, device=members.device)[:, None, None]
    mean = members.mean(1, keepdim=True) if mean is None else mean
    return _respread(members, f * mean.clamp(min=0) ** INTENSITY_POWER, mean, std)


def _check_rain(
    name: str, members: torch.Tensor, factors: list[float], non_negative: list[bool]
) -> None:
    """The spread rules that scale with the rain rate: shapes agree, every variable is rain."""
    if members.shape[2] != len(non_negative) or len(factors) != len(non_negative):
        raise ValueError(
            f"{name}: members have {members.shape[2]} variables, factors "
            f"{len(factors)}, kinds {len(non_negative)}"
        )
    if not all(non_negative):
        raise ValueError(
            f"calibrate_by: {name.removeprefix('spread_by_')} is defined for non-negative "
            f"variables (precipitation) only; variable kinds non-negative = {non_negative}"
        )


def _respread(
    members: torch.Tensor, spread: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | None
) -> torch.Tensor:
    """Members moved to ``mean + spread × z``, ``z`` each member's standardised departure (0
    where all members agree), clipped at 0."""
    std = members.std(1, correction=0, keepdim=True) if std is None else std
    z = torch.where(std > 0, (members - mean) / torch.where(std > 0, std, 1.0), 0.0)
    return (mean + spread * z).clamp(min=0)


#: ``calibrate_by: roughness``: the side, in LR cells, of the neighbourhood (centred on a cell's
#: own LR block) whose coefficient of variation scales the cell's spread
ROUGHNESS_WINDOW = 3


def lr_roughness(lr: torch.Tensor) -> torch.Tensor:
    """The coefficient of variation (population std / mean) of the LR values in every LR cell's
    :data:`ROUGHNESS_WINDOW` × :data:`ROUGHNESS_WINDOW` neighbourhood, ``(..., h, w)`` → the same
    shape. Missing (NaN) cells and cells beyond the grid's edge are left out of a neighbourhood;
    0 where its mean is 0 (dry, or nothing valid). Dimensionless, so the same on any radar and
    in any unit; at most √(k² − 1) = 2.83 (one wet cell of nine)."""
    shape = lr.shape
    x = lr.reshape(-1, 1, *shape[-2:]).double()
    ok = torch.isfinite(x)
    v = torch.where(ok, x, 0.0)
    k = ROUGHNESS_WINDOW

    def total(t: torch.Tensor) -> torch.Tensor:  # sum over each neighbourhood (0 beyond edges)
        return F.avg_pool2d(t, k, stride=1, padding=k // 2, divisor_override=1)

    n = total(ok.double()).clamp(min=1)
    mean = total(v) / n
    var = (total(v * v) / n - mean * mean).clamp(min=0)
    cv = torch.where(mean > 0, var.sqrt() / torch.where(mean > 0, mean, 1.0), 0.0)
    return cv.reshape(shape).to(lr.dtype if lr.is_floating_point() else torch.float32)


def spread_by_roughness(
    members: torch.Tensor,
    factors: list[float],
    non_negative: list[bool],
    roughness: torch.Tensor,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """Members ``(N, M, V, H, W)`` in physical units, re-spread so that every cell's spread is
    ``factors[v] × mean × roughness``, ``roughness`` ``(N, 1, V, H, W)`` the coefficient of
    variation of the LR around the cell (:func:`lr_roughness`, on the HR grid): each member keeps
    its standardised departure, the mean stays, clipped at 0 (``mean``, ``std`` as in
    :func:`spread_by_intensity`). Non-negative variables only.

    Why the LR's roughness: rain is close to scale invariant, so how much it varies inside an
    LR block follows how much the LR blocks vary around it (on the four radars' test splits the
    mean sub-block coefficient of variation is 0.38 / 0.27 / 0.50 / 0.85 on knmi, fmi,
    bom-melbourne and mrms-conus, the LR's in 2 × 2 blocks 0.38 / 0.22 / 0.52 / 0.66). With it the
    factor that makes an ensemble reliable varies 1.9× between the four radars, against 4.5× for
    :func:`spread_by_intensity` (MRMS's convective rain varies much more inside a block, which
    the rain rate alone does not tell); held out, MRMS's CRPS fell from 0.745 to 0.665 of
    bicubic's MAE (BENCHMARKS.md, session 42)."""
    _check_rain("spread_by_roughness", members, factors, non_negative)
    f = torch.tensor(factors, dtype=members.dtype, device=members.device)[:, None, None]
    mean = members.mean(1, keepdim=True) if mean is None else mean
    return _respread(members, f * mean.clamp(min=0) * roughness.to(members.dtype), mean, std)


def spread_members(
    rule: str,
    members: torch.Tensor,
    factors: list[float],
    non_negative: list[bool],
    *,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    roughness: torch.Tensor | None = None,
    lr: torch.Tensor | None = None,
    scale: int = 1,
) -> torch.Tensor:
    """Members ``(N, M, V, H, W)`` spread by ``factors`` with ``rule`` (one of :data:`SPREADS`).
    ``mean`` and ``std`` (``(N, 1, V, H, W)``) may come from a larger ensemble whose members come
    a few at a time; ``roughness`` needs the HR-grid roughness (``(N, 1, V, H, W)``) or the
    members' LR input ``lr`` ``(N, V, h, w)`` (physical) and the ``scale``."""
    if rule == "inflation":
        return inflate(members, factors, non_negative, mean)
    if rule == "intensity":
        return spread_by_intensity(members, factors, non_negative, mean, std)
    if rule == "roughness":
        if roughness is None:
            if lr is None:
                raise ValueError("spread_members: the roughness rule needs the members' LR input")
            roughness = lr_roughness(lr).repeat_interleave(scale, -2)
            roughness = roughness.repeat_interleave(scale, -1)[:, None]
        return spread_by_roughness(members, factors, non_negative, roughness, mean, std)
    raise ValueError(f"spread rule {rule!r}: expected one of {list(SPREADS)}")


def blur_departures(members: torch.Tensor, sigma: float) -> torch.Tensor:
    """Members ``(N, M, V, H, W)`` whose departures from their mean (over ``M``) are smoothed by
    a Gaussian of ``sigma`` cells (edges reflected; ``sigma`` 0: unchanged). The mean stays
    exactly; the departures lose their grid-scale part, and with it much of their size, which
    the spreading rules (not ``inflation``) re-set cell by cell.

    Why: the network's departures are grid-scale (its members carried 3–10× the truth's power
    at 2–4 cells on held-out knmi and bom, and too little at 4–16), while a radar's product is
    smooth at its grid scale. Spreading then re-sets every cell's spread
    (:func:`spread_members`), so the blur mostly changes the members' spectrum: at a fixed
    per-cell spread the CRPS moved by at most 0.002 (BENCHMARKS.md, session 40); through the
    conservation that follows, which removes a smoothed departure's block-scale part, −0.010
    to +0.013 on four held-out radars, their spectra at 4–16 cells nearer the truth's on all
    (session 43)."""
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"departure_blur={sigma}: expected a finite sigma >= 0 (HR cells)")
    if sigma == 0 or members.shape[1] < 2:
        return members
    h, w = members.shape[-2:]
    r = min(int(3 * sigma + 0.5), h - 1, w - 1)  # truncated at 3σ, as scipy.ndimage rounds
    if r < 1:
        return members
    taps = torch.arange(-r, r + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(members.dtype).to(members.device)
    mean = members.mean(1, keepdim=True)
    dep = (members - mean).reshape(-1, 1, h, w)
    dep = F.conv2d(F.pad(dep, (r, r, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    dep = F.conv2d(F.pad(dep, (0, 0, r, r), mode="reflect"), kernel.view(1, 1, -1, 1))
    return mean + dep.reshape(members.shape)


#: the ways ``calibrate_by`` spreads the members by the calibrated factor (:func:`spread_members`)
SPREADS = ("inflation", "intensity", "roughness")
