"""The keys of an emulator that trains on several campaigns' prepared data (issue 19):
``train_on`` and its proportions, a physical normalisation that transfers between radars, the
grid-spacing channel, augmentation, wet-patch sampling, the baseline fallback and the ensemble's
spread calibration. :class:`~climai.config.methods.EmulatorConfig` inherits them.

Pure pydantic, like every config module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from climai.config.base import StrictModel


class TransferKeys(StrictModel):
    """Pooled training across campaigns, and the guards that keep an emulator honest."""

    train_on: list[str] | None = Field(
        None,
        description="Train on the prepared datasets (<results>/<campaign>/prep/dataset.zarr) of "
        "these campaigns instead of this campaign's own (null: this campaign's). Each must have "
        "been prepared first, with this campaign's variables, units and scale; the model card "
        "records each dataset's config_sha256 and manifest checksum.",
    )
    train_weights: dict[str, float] | None = Field(
        None,
        description="Share of the training patches drawn from each train_on campaign, e.g. "
        "{knmi: 1, fmi: 1} (normalised to sum to 1; null: equal shares).",
    )
    pooled_patches: int | None = Field(
        None,
        ge=1,
        description="Training patches per epoch drawn from the train_on campaigns: with epochs, "
        "a compute budget independent of how many campaigns are pooled (null: "
        "patches_per_step × their train steps).",
    )
    coarsen_sources: list[int] = Field(
        [],
        description="Also train on every train_on campaign's train split coarsened by these "
        "factors, e.g. [2, 4]: HR = the block mean of its HR, LR = that field's block mean by the "
        "scale (the prepared data's min_valid_fraction), the grid channel at the coarser "
        "spacing; each campaign's share is drawn in equal parts from its original and coarsened "
        "copies (validation stays on the originals). Rain is nearly scale-invariant from 1 to "
        "100 km, so a 250 m radar coarsened 4x is one more 1 km event. Needs train_on and "
        "grid_channel; the copies are held in memory (1/factor² of the split each).",
    )
    validate_on: list[str] | None = Field(
        None,
        description="Campaigns whose val splits select the epoch and the early stop of a "
        "train_on model (null: the train_on campaigns' val splits, later time steps than their "
        "train splits). A campaign here that is not in train_on is an event never trained on.",
    )
    normalisation: Literal["campaign", "physical"] = Field(
        "campaign",
        description="campaign: standardise with this campaign's prep/stats.json; physical: a "
        "fixed transform that is the same on every radar (precipitation: log1p(mm h-1) with "
        "offset 1 mm h-1, mean 0, std 1; static fields: none but the grid channel). train_on "
        "needs physical.",
    )
    grid_channel: bool = Field(
        False,
        description="Give the model the HR grid spacing as an input channel: log2 of the spacing "
        "in km (0 at 1 km, -2 at 250 m), in place of the campaign's static fields. Needs "
        "normalisation: physical.",
    )
    time_features: bool = Field(
        True,
        description="Feed hour-of-day and day-of-year (false: those four channels are zero, so "
        "that a model pooled over single-day events cannot tell the events apart by date).",
    )
    augment: bool = Field(
        False,
        description="Random flips and 90° rotations of each training patch (LR, HR and static "
        "fields together): for fields without a preferred direction, e.g. precipitation "
        "without orography or wind as predictors.",
    )
    augment_gain: float = Field(
        1.0,
        ge=1,
        le=8,
        description="Precipitation: multiply each training patch's rain (LR and HR together) by "
        "a factor drawn log-uniformly between 1 / augment_gain and augment_gain, the same "
        "storm at other rain rates: for a radar or season whose rain is heavier or lighter "
        "than the training events'. Block means scale with it, so a conserving model stays "
        "exact. 1: off.",
    )
    min_wet: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Fraction of HR cells above 0.1 (variable units) below which a training "
        "patch is redrawn (up to 20 tries; with normalisation: physical, whose variables are all "
        "precipitation): mostly-dry radar domains still train on rain. Needs normalisation: "
        "physical.",
    )
    fallback: bool = Field(
        False,
        description="When the trained model's validation RMSE of a variable is above bicubic's, "
        "zero its output head for that variable so that it predicts exactly bicubic (always: "
        "flagged in the model card, validation.json, the log and the summary table).",
    )
    calibrate: bool = Field(
        False,
        description="Ensembles: after training, scale the injected noise so that the spread/skill "
        "ratio on the validation patches is 1 (searched in [0, 128]; recorded in the model card). "
        "The members are drawn on the first 8 val batches (8 × batch patches, all of them when "
        "fewer; their number is in the card's calibration.val_patches): under 32 patches the log "
        "warns that the factor is a noisy estimate.",
    )
    calibrate_by: Literal["noise", "inflation", "intensity", "roughness"] = Field(
        "noise",
        description="How calibrate reaches spread/skill 1. noise: scale the injected noise (the "
        "network turns a larger noise into another members' mean too); inflation: keep the "
        "noise as trained and move every member a factor further from the members' mean, in "
        "physical units at inference (clipped at 0 for precipitation, then the constraint): "
        "the mean, the best estimate, stays; intensity (precipitation): every cell's spread "
        "is the factor × the members' mean (mm h-1) ** 0.75, each member keeping its "
        "standardised departure and the mean staying (the size of the network's own spread "
        "no longer matters, only its pattern); roughness (precipitation): every cell's spread "
        "is the factor × the members' mean × the coefficient of variation of the LR in the 3 × 3 "
        "LR cells around the cell's block (rain is nearly scale invariant: rain that varies "
        "much between LR blocks varies much inside them too), the same otherwise. "
        "The factor is searched in [0, 128] on the validation patches and recorded in the model "
        "card; inflation, intensity and roughness find one per variable, each on its own cells "
        "(a joint model's variables alike), noise one for the network (the geometric mean of "
        "its variables' ratios brought to 1; each variable's ratio recorded).",
    )
    departure_blur: float = Field(
        0.0,
        ge=0,
        le=8,
        description="Ensembles: the members' departures from their mean are smoothed by a "
        "Gaussian of this sigma in HR cells before they are spread (in calibration and at "
        "inference alike, not in training; recorded in the model card); 0 leaves them as the "
        "network draws them. The mean does not move and spreading re-sets every cell's "
        "spread, so mostly where the members' variability sits changes: the network's "
        "departures are grid-scale, a radar field is smooth at its grid scale.",
    )

    @model_validator(mode="after")
    def _transfer_keys(self) -> TransferKeys:
        if self.train_on is not None:
            if not self.train_on or len(set(self.train_on)) != len(self.train_on):
                raise ValueError(f"train_on={self.train_on} must name distinct campaigns")
            if self.normalisation != "physical":
                raise ValueError(
                    "train_on needs normalisation: physical (one campaign's statistics do not "
                    "fit another radar)"
                )
        if (self.augment or self.augment_gain > 1) and self.normalisation != "physical":
            raise ValueError(
                f"augment={self.augment}, augment_gain={self.augment_gain}: augmentation needs "
                "normalisation: physical (only the pooled patches it acts on are augmented)"
            )
        why = {  # what the campaign-normalised features (prep/stats.json) lack
            "grid_channel": "its features are the campaign's static fields, without the grid "
            "channel",
            "min_wet": "its patches are drawn without the wet-cell test",
        }
        for key, reason in why.items():
            value = getattr(self, key)
            if value and self.normalisation != "physical":
                raise ValueError(
                    f"{key}={value} needs normalisation: physical: with normalisation: "
                    f"campaign {reason}, so it would be ignored"
                )
        if self.calibrate_by != "noise" and not self.calibrate:
            raise ValueError(f"calibrate_by={self.calibrate_by!r} needs calibrate: true")
        for key in ("train_weights", "validate_on", "pooled_patches"):
            if getattr(self, key) is not None and self.train_on is None:
                raise ValueError(f"{key} needs train_on")
        if self.coarsen_sources:
            factors = self.coarsen_sources
            if self.train_on is None or not self.grid_channel:
                raise ValueError(
                    f"coarsen_sources={factors} needs train_on and grid_channel: true (the model "
                    "must see each copy's grid spacing)"
                )
            if any(f < 2 for f in factors) or len(set(factors)) != len(factors):
                raise ValueError(
                    f"coarsen_sources={factors}: expected distinct integer factors of 2 or more"
                )
        if self.train_weights is not None:
            extra = sorted(set(self.train_weights) - set(self.train_on or []))
            if extra or any(w <= 0 for w in self.train_weights.values()):
                raise ValueError(
                    f"train_weights={self.train_weights}: positive weights for campaigns of "
                    f"train_on={self.train_on} only (unknown: {extra})"
                )
        return self
