"""What happens to a trained model before it is shipped: the ensemble's spread is calibrated on
validation patches (``calibrate``), and a model worse than bicubic on validation is flagged and,
with ``fallback``, made to predict exactly bicubic for that variable.

The spread/skill ratio is the evaluation's (:func:`climai.evaluation.metrics.spread_skill`):
root mean unbiased member variance × √((M + 1)/M) over the RMSE of the ensemble mean, in
physical units on valid cells. It grows with the size of the injected noise, so the noise
projections' weights (never their biases) are scaled by the factor that brings it to 1, found by
bisection on the validation patches with the same noise draws at every trial. With
``calibrate_by: inflation`` the noise stays as trained and the factor found scales the members'
departures from their mean instead (:func:`climai.models.constraints.inflate`, then the
constraint), as inference applies it from the model card: the members' mean does not move;
the spreading rules search one factor per variable, each on that variable's cells only (a joint
model's variables are in different units: pooled, one factor left every variable off 1). The
noise, one for every variable, is scaled so that the geometric mean of the variables' ratios is
1 (each variable's ratio recorded).
``calibrate_by: intensity`` is the same search with another spreading rule: every cell's spread
becomes the factor × the members' mean to the power 0.75, each member keeping its standardised
departure (:func:`climai.models.constraints.spread_by_intensity`); ``calibrate_by: roughness``
makes it the factor × the members' mean × the coefficient of variation of the LR around the cell
(:func:`climai.models.constraints.spread_by_roughness`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from climai.models.constraints import (
    ROUGHNESS_WINDOW,
    SPREADS,
    blur_departures,
    conserve,
    spread_members,
)
from climai.training.distributed import DistContext, all_reduce_sum
from climai.training.loop import Loaders, Objective, constrain, validation_scores

NOISE_PREFIXES = ("noise_down.", "noise_up.")

#: Fewer validation patches than this make the calibration factor a noisy estimate: on the toy
#: world, 6 patches calibrated tas to 1.00 on them and 1.29 over the whole validation domain;
#: patch edges are not the cause (96 patches: 0.99 whole, 1.01 without their 8 edge cells).
MIN_CALIBRATION_PATCHES = 32


def calibration_patches(loaders: Loaders, max_batches: int, world: int = 1) -> int:
    """How many validation patches the calibration draws members on: the first ``max_batches``
    batches of every rank, at most all of them."""
    return min(len(loaders.val), max_batches * loaders.batch * world)


def noise_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight tensors that scale the injected noise (the 1×1 noise projections)."""
    return {
        name: p
        for name, p in model.named_parameters()
        if name.startswith(NOISE_PREFIXES) and name.endswith("proj.weight")
    }


def scale_noise(model: nn.Module, original: dict[str, torch.Tensor], factor: float) -> None:
    """Set every noise projection's weight to ``factor`` × its ``original`` value."""
    with torch.no_grad():
        for name, p in noise_weights(model).items():
            p.copy_(original[name] * factor)


@torch.no_grad()
def val_members(
    model: nn.Module,
    loaders: Loaders,
    objective: Objective,
    ctx: DistContext,
    members: int,
    max_batches: int,
    seed: int,
    blur: float = 0.0,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``members`` draws on the first ``max_batches`` val batches: per batch the members
    ``(B, M, V, p, p)`` and the truth ``(B, V, p, p)`` in physical units (float64), and the LR.
    ``blur``: the members' departures smoothed as inference smooths them
    (:func:`~climai.models.constraints.blur_departures`, on the normalised draws)."""
    model.eval()
    spec = objective.spec
    torch.manual_seed(seed)  # the same noise at every trial: a smooth function of the factor
    out = []
    for b, batch in enumerate(loaders.loader(loaders.val, 0, ctx)):
        if b >= max_batches:
            break
        batch = batch.to(ctx.device)
        z = objective.predict(model, batch, members)  # (B, M, V, p, p)
        if blur and members > 1:  # then conserved again, as inference conserves the blend
            z = blur_departures(z, blur)
            if objective.constraint == "conserve":
                lr = batch.lr.repeat_interleave(members, 0)
                z = constrain(z.flatten(0, 1), lr, spec).view_as(z)
        phys, truth = (
            torch.stack([spec.denormalise(v, t[..., i, :, :]).double()
                         for i, v in enumerate(spec.variables)], -3)
            for t in (z, batch.target.float())
        )  # fmt: skip
        out.append((phys, truth, batch.lr))
    return out


def ensemble_ratio(
    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    objective: Objective,
    inflation: float = 1.0,
    rule: str = "inflation",
    ctx: DistContext | None = None,
    variable: int | None = None,
) -> float:
    """The spread/skill ratio of :func:`val_members`' draws (under DDP, ``ctx``: of every
    rank's draws, the same ratio on every rank, so that they find one factor alike);
    ``variable``: of that channel only (else the variables' cells pooled, in their units);
    ``inflation``: of the members spread by that factor with ``rule`` (``SPREADS``:
    :func:`inflate`, or :func:`spread_by_intensity` or :func:`spread_by_roughness` at any
    factor), then the objective's constraint, as inference applies it. With ``roughness`` only the cells whose LR
    neighbourhood lies inside the patch count: at its edge a patch's LR has fewer neighbours
    than inference's whole domain gives every cell."""
    spec = objective.spec
    var_sum = err_sum = cells = 0.0
    members = batches[0][0].shape[1] if batches else 0
    for phys, truth, lr in batches:
        if inflation != 1.0 or rule != "inflation":
            phys = spread_members(
                rule, phys, [inflation] * len(spec.variables), spec.non_negative,
                lr=lr.double(), scale=spec.scale,
            )  # fmt: skip
            if objective.constraint == "conserve":
                lr = lr.double().repeat_interleave(members, 0)
                flat = conserve(phys.flatten(0, 1), lr, spec.scale, spec.non_negative)
                phys = flat.view_as(phys)
        valid = torch.isfinite(truth)
        if variable is not None:  # (B, V, p, p): that variable's cells only
            valid[:, [i for i in range(valid.shape[1]) if i != variable]] = False
        if rule == "roughness":
            e = spec.scale * (ROUGHNESS_WINDOW // 2)
            if truth.shape[-1] <= 2 * e or truth.shape[-2] <= 2 * e:
                raise ValueError(
                    f"calibrate_by: roughness needs validation patches of more than "
                    f"{2 * e} HR cells a side (LR neighbourhoods of {ROUGHNESS_WINDOW} cells "
                    f"inside the patch), not {tuple(truth.shape[-2:])}"
                )
            inner = torch.zeros_like(valid)
            inner[..., e:-e, e:-e] = True
            valid &= inner
        var = phys.var(dim=1, unbiased=True)
        err = (phys.mean(dim=1) - truth).square()
        var_sum += float(var[valid].sum())
        err_sum += float(err[valid].sum())
        cells += float(valid.sum())
    if ctx is not None and ctx.distributed:  # sums over the ranks; members: any rank's draws
        t = torch.tensor([var_sum, err_sum, cells, members, bool(batches)], dtype=torch.float64)
        var_sum, err_sum, cells, m, drew = all_reduce_sum(t.to(ctx.device), ctx).tolist()
        members = round(m / drew) if drew else 0
    if cells == 0 or err_sum == 0:
        return math.nan
    spread = math.sqrt(var_sum / cells) * math.sqrt((members + 1) / members)
    return spread / math.sqrt(err_sum / cells)


def spread_skill(
    model: nn.Module,
    loaders: Loaders,
    objective: Objective,
    ctx: DistContext,
    members: int,
    max_batches: int,
    seed: int,
    blur: float = 0.0,
) -> float:
    """The spread/skill ratio of ``members`` draws on the first ``max_batches`` val batches
    (``blur``: :func:`val_members`): the geometric mean of the variables' own ratios
    (:func:`variable_ratios`), which no variable's units change (one variable: its ratio)."""
    ratios = variable_ratios(model, loaders, objective, ctx, members, max_batches, seed, blur)
    logs = [math.log(r) for r in ratios.values() if math.isfinite(r) and r > 0]
    return math.exp(sum(logs) / len(logs)) if len(logs) == len(ratios) else math.nan


def variable_ratios(
    model: nn.Module,
    loaders: Loaders,
    objective: Objective,
    ctx: DistContext,
    members: int,
    max_batches: int,
    seed: int,
    blur: float = 0.0,
) -> dict[str, float]:
    """Each variable's spread/skill ratio (:func:`ensemble_ratio` on its own cells) of
    ``members`` draws on the first ``max_batches`` val batches."""
    batches = val_members(model, loaders, objective, ctx, members, max_batches, seed, blur)
    return {
        v: ensemble_ratio(batches, objective, ctx=ctx, variable=i)
        for i, v in enumerate(objective.spec.variables)
    }


@dataclass
class Calibration:
    """The factor applied to the noise and the spread/skill ratio at each trial."""

    factor: float
    ratio: float
    trials: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "noise_factor": self.factor,
            "spread_skill_val": self.ratio,
            "trials": [{"factor": f, "spread_skill": r} for f, r in self.trials],
        }


def search_factor(
    ratio_at: Callable[[float], float],
    high: float = 128.0,
    iterations: int = 8,
    target: float = 1.0,
) -> Calibration:
    """The factor in [0, ``high``] whose ``ratio_at`` is nearest ``target`` (spread/skill grows
    with it): 1 first, doubled until over-dispersive, then bisected (log-spaced once bracketed)."""
    trials: list[tuple[float, float]] = []

    def trial(f: float) -> float:
        r = ratio_at(f)
        trials.append((f, r))
        return r

    lo, hi = 0.0, 1.0
    r = trial(1.0)
    while math.isfinite(r) and r < target and hi < high:  # widen until over-dispersive
        lo, hi = hi, min(high, hi * 2.0)
        r = trial(hi)
    if r < target:
        lo = hi  # even the largest factor is under-dispersive: keep it
    for _ in range(iterations if lo < hi else 0):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2.0
        if trial(mid) < target:
            lo = mid
        else:
            hi = mid
    best = min(trials, key=lambda t: abs(math.log(max(t[1], 1e-9) / target)))
    return Calibration(best[0], best[1], trials)


def calibrate_noise(
    model: nn.Module,
    ratio_of: Callable[[nn.Module], float],
    high: float = 128.0,
    iterations: int = 8,
    target: float = 1.0,
) -> Calibration:
    """Scale ``model``'s noise so that ``ratio_of(model)`` is ``target`` (:func:`search_factor`);
    the model keeps the best factor found."""
    original = {k: v.detach().clone() for k, v in noise_weights(model).items()}
    if not original:
        raise ValueError("calibrate: the model injects no noise (not an ensemble)")

    def ratio_at(f: float) -> float:
        scale_noise(model, original, f)
        return ratio_of(model)

    cal = search_factor(ratio_at, high, iterations, target)
    scale_noise(model, original, cal.factor)
    return cal


def head_fallback(model: nn.Module, channels: list[int]) -> None:
    """Zero the output head for ``channels``: the residual U-Net then predicts its base (the
    normalised bicubic) there, exactly, for every member."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Conv2d):
        raise ValueError(
            f"fallback: {type(model).__name__} has no output head 'head' to zero; "
            "set fallback: false for this method type"
        )
    with torch.no_grad():
        head.weight[channels] = 0.0
        if head.bias is not None:
            head.bias[channels] = 0.0


def worse_than_bicubic(scores: dict[str, dict[str, float]]) -> list[str]:
    """The variables whose validation RMSE is above bicubic's on the same cells."""
    return [v for v, s in scores.items() if s["rmse"] > s["bicubic_rmse"]]


#: Spread/skill of a calibrated ensemble outside this band is logged as a warning (the band the
#: acceptance of reliable ensembles uses; 1 is reliable).
CALIBRATED_BAND = (0.8, 1.2)


def _warn_uncalibrated(ratio: float, log: Callable[[str], None], variable: str = "") -> None:
    lo, hi = CALIBRATED_BAND
    if not lo <= ratio <= hi:
        kind = "under-dispersive: too little spread" if ratio < lo else "over-dispersive"
        of = f" of {variable}" if variable else ""
        log(
            f"WARNING: calibration{of} reached spread/skill {ratio:.3f} on validation, outside "
            f"{lo}–{hi}: the ensemble stays {kind} (no factor in the search reached 1)"
        )


def guard(
    model: nn.Module,
    loaders: Loaders,
    objective: Objective,
    ctx: DistContext,
    *,
    calibrate: bool,
    fallback: bool,
    calibrate_by: str = "noise",
    members: int,
    seed: int,
    log: Callable[[str], None] = print,
    max_batches: int = 8,
    blur: float = 0.0,
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Calibrate (ensembles, ``calibrate``), score, flag and (``fallback``) fall back.

    Returns the shipped model's validation scores and the model card's ``guard`` record:
    ``calibration``, ``worse_than_bicubic`` (variables), ``fallback`` (variables now bicubic)
    and the scores before the fallback. ``blur``: the members' departures are smoothed by a
    Gaussian of that sigma (HR cells) before spreading, as inference does (the model card's
    ``departure_blur``)."""
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise ValueError(
            f"training produced non-finite weights in {len(bad)} tensors (first: {bad[0]}); the "
            "model is not shipped (check the train loss in history.csv for nan)"
        )
    record: dict[str, Any] = {"calibration": None, "worse_than_bicubic": [], "fallback": []}
    if calibrate:
        n = calibration_patches(loaders, max_batches, ctx.world)
        log(f"calibrating by {calibrate_by} on {n} of the {len(loaders.val)} val patches, "
            f"{members} members each")  # fmt: skip
        if n < MIN_CALIBRATION_PATCHES:
            log(
                f"WARNING: calibration on only {n} val patches (under {MIN_CALIBRATION_PATCHES}):"
                " its factor is a noisy estimate; give the val split more steps or the method "
                "more patches_per_step"
            )
    if calibrate and calibrate_by in SPREADS:
        if not noise_weights(model):
            raise ValueError("calibrate: the model injects no noise (not an ensemble)")
        # the members do not depend on the factor: drawn once, spread at every trial. Each
        # variable gets its own factor, searched on its own cells (the rules spread every
        # variable apart), so that each variable's spread/skill is 1, not their pooled ratio
        drawn = val_members(model, loaders, objective, ctx, members, max_batches, seed, blur)
        cals = {
            v: search_factor(
                lambda f, i=i: ensemble_ratio(drawn, objective, f, calibrate_by, ctx, variable=i)
            )
            for i, v in enumerate(objective.spec.variables)
        }
        record["calibration"] = {
            "noise_factor": 1.0,
            "rule": calibrate_by,
            "val_patches": n,
            "inflation": {v: c.factor for v, c in cals.items()},
            "spread_skill_val": {v: c.ratio for v, c in cals.items()},
            "trials": {v: c.as_dict()["trials"] for v, c in cals.items()},
        }
        for v, cal in cals.items():
            log(
                f"calibrated {calibrate_by} of {v} ×{cal.factor:.3g}: spread/skill "
                f"{cal.ratio:.3f} on validation"
            )
            _warn_uncalibrated(cal.ratio, log, v)
    elif calibrate:
        cal = calibrate_noise(
            model,
            lambda m: spread_skill(
                m, loaders, objective, ctx, members, max_batches, seed, blur=blur
            ),
        )
        # one noise for every variable: the factor brings the geometric mean of the variables'
        # ratios to 1 (pooling their cells in their units made it depend on the units)
        ratios = variable_ratios(model, loaders, objective, ctx, members, max_batches, seed, blur)
        record["calibration"] = {
            **cal.as_dict(), "spread_skill_val": ratios, "spread_skill_geomean": cal.ratio,
            "val_patches": n,
        }  # fmt: skip
        log(f"calibrated noise ×{cal.factor:.3g}: spread/skill {cal.ratio:.3f} on validation")
        for v, r in ratios.items():
            log(f"  {v}: spread/skill {r:.3f} on validation")
            _warn_uncalibrated(r, log, v)
    shown = Objective(objective.spec, members, objective.constraint, objective.autocast)
    scores = validation_scores(model, loaders, shown, ctx)
    worse = worse_than_bicubic(scores)
    record["worse_than_bicubic"] = worse
    for v in worse:
        s = scores[v]
        log(
            f"WARNING: {v}: validation RMSE {s['rmse']:.4g} is above bicubic's "
            f"{s['bicubic_rmse']:.4g}" + ("; falling back to bicubic" if fallback else "")
        )
    if worse and fallback:
        record["trained_scores"] = scores
        head_fallback(model, [objective.spec.variables.index(v) for v in worse])
        record["fallback"] = worse
        scores = validation_scores(model, loaders, shown, ctx)
    return scores, record
