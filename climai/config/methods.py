"""The config models of climai's own method types (``methods.<name>``): the baselines, the
training loop's keys that every emulator shares (:class:`EmulatorConfig`), and the U-Nets.

Pure pydantic: :mod:`climai.registry` pairs each model with its kind and implementation.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from climai.config.base import StrictModel
from climai.config.transfer import TransferKeys


class BicubicConfig(StrictModel):
    """Bicubic interpolation of the LR field: the baseline every emulator must beat."""

    type: Literal["bicubic"] = Field("bicubic", description="Method type (registry name).")


class NearestConfig(StrictModel):
    """Nearest-neighbour upsampling of the LR field: a reference that keeps the LR blocks."""

    type: Literal["nearest"] = Field("nearest", description="Method type (registry name).")


class QuantileMappingConfig(StrictModel):
    """Statistical baseline: bicubic interpolation, then empirical quantile mapping fitted on the
    train split (bicubic-of-LR quantiles → HR-truth quantiles, per variable)."""

    type: Literal["quantile-mapping"] = Field(
        "quantile-mapping", description="Method type (registry name)."
    )

    quantiles: int = Field(
        1001, ge=11, le=100_001, description="Quantile levels of the fitted mapping table."
    )
    max_samples: int = Field(
        2_000_000,
        ge=1000,
        description="Train cells drawn (seeded) per variable to fit the table; all if fewer.",
    )


class QDMConfig(StrictModel):
    """The field's statistical downscaling baseline, per cell: bicubic interpolation, then at every
    HR cell xsdba's quantile delta mapping (Cannon et al. 2015) from the bicubic-of-LR distribution
    on the train split to the HR truth's, fitted by calendar month or season where the train split
    spans them, keeping the quantile deltas (trends) of the predicted period."""

    type: Literal["qdm"] = Field("qdm", description="Method type (registry name).")

    @field_validator("type")
    @classmethod
    def _xsdba_installed(cls, value: str) -> str:
        if importlib.util.find_spec("xsdba") is None:
            raise ValueError(
                "method type 'qdm' needs xsdba, which is not installed here: "
                "pip install -c requirements/lock.txt -e '.[sdba]' (or set this method to null)"
            )
        return value

    quantiles: int = Field(
        50, ge=5, le=1000, description="Quantile nodes per cell and group (xsdba nquantiles)."
    )
    group: Literal["auto", "month", "season", "none"] = Field(
        "auto",
        description="Fit groups: by calendar month, by season or one group; auto: months when "
        "the train split has at least min_group_steps steps of every calendar month (all 12: "
        "xsdba interpolates between neighbouring groups), else seasons on the same rule (all "
        "4), else one group; month or season stops where a group lacks them.",
    )
    min_group_steps: int = Field(
        48, ge=2, description="Train steps a month or season needs for group: auto to use it."
    )
    dry_threshold: float = Field(
        0.01,
        ge=0,
        description="Precipitation below this (in the variable's units) is jittered (seeded, "
        "uniform below it) for the multiplicative fit and set to 0 after adjustment, as xsdba "
        "recommends for zero-inflated variables.",
    )
    interp: Literal["nearest", "linear"] = Field(
        "linear", description="Interpolation of the adjustment factors between quantile nodes."
    )
    band_cells: int = Field(
        4_000_000,
        ge=10_000,
        description="Cells (train steps × HR cells) fitted at once: the band of HR rows "
        "processed together, which bounds memory.",
    )


FreezeGroup = Literal["encoder", "bottleneck", "decoder"]


class InitFromCampaign(StrictModel):
    """A trained model named by campaign and method: ``<results>/<campaign>/models/<method>/
    model.pt`` under the same results root. In the same campaign (``campaign`` left out) it is a
    DAG dependency that Snakemake builds; another campaign must have been run first (its train
    rule made the file)."""

    campaign: str | None = Field(
        None, description="Campaign that trained the parent model (null: this campaign)."
    )
    method: str = Field("unet", description="Method name of the parent in that campaign.")

    @field_validator("campaign")
    @classmethod
    def _campaign_name(cls, v: str | None) -> str | None:
        if v is not None and not _CAMPAIGN_NAME.fullmatch(v):
            raise ValueError(
                f"init_from.campaign {v!r} must be a campaign name (letters, digits, '_' or '-'; "
                "no '/', '..' or absolute path): the parent is <results>/<campaign>/models/"
                "<method>/model.pt; give a model file outside results/ as init_from: <path>"
            )
        return v

    @field_validator("method")
    @classmethod
    def _method_name(cls, v: str) -> str:
        if not _METHOD_NAME.fullmatch(v):
            raise ValueError(
                f"init_from.method {v!r} must be a method name (lower-case letters, digits, '-' "
                "or '_', starting with a letter or digit; no '/' or '..')"
            )
        return v


_CAMPAIGN_NAME = re.compile(r"[A-Za-z0-9_-]+")
_METHOD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


class EmulatorConfig(TransferKeys):
    """What every trained method shares: the training loop's keys (patches, optimiser, EMA,
    early stopping, checkpoints). A method plugin's config subclasses it (docs/add-an-emulator.md).
    """

    type: str = Field(description="Method type (registry name).")
    seed: int | None = Field(
        None,
        ge=0,
        description="Seed of this method's weights, patch draws, augmentation and ensemble "
        "draws (null: the campaign's seed). Another seed trains another model of the same data "
        "without preparing them again: the run-to-run spread, or one member of a seed ensemble.",
    )
    epochs: int = Field(6, ge=1, description="Passes over the training patches (an upper bound).")
    patch: int = Field(64, ge=8, description="HR patch size (a multiple of scale).")
    batch: int = Field(16, ge=1, description="Patches per optimiser step and process.")
    patches_per_step: int = Field(
        2, ge=1, description="Random patches drawn from each training time step per epoch."
    )
    min_valid: float = Field(
        0.5, ge=0, le=1, description="Fraction of valid HR cells below which a patch is redrawn."
    )
    lr: float = Field(2e-3, gt=0, lt=1, description="Peak AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(
        20,
        ge=0,
        description="Linear warm-up steps to lr, then cosine decay to 0.05 × lr at the last step "
        "(training warns when the warm-up is not shorter than the run).",
    )
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clipping threshold.")
    ema_decay: float = Field(
        0.99, ge=0, lt=1, description="EMA decay of the weights (0: no EMA); EMA is validated."
    )
    patience: int = Field(
        3, ge=1, description="Early stopping: epochs without a better val loss before stopping."
    )
    constraint: Literal["none", "conserve"] = Field(
        "none",
        description="conserve: the block mean of the output equals the LR input exactly "
        "(additive for unbounded variables, multiplicative for non-negative ones).",
    )
    joint: bool = Field(
        True,
        description="Train all variables as channels of one model (false: one model per variable).",
    )
    bf16: bool = Field(True, description="bf16 autocast where the CPU/GPU supports it.")
    compile: bool = Field(False, description="torch.compile the model.")
    loader: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="memory: load the splits into RAM; stream: read patches from the zarr store "
        "in DataLoader workers; auto: memory when the store is under memory_limit_gb.",
    )
    memory_limit_gb: float = Field(
        2.0, gt=0, description="Largest store (uncompressed GB) that loader=auto loads into RAM."
    )
    workers: int = Field(0, ge=0, description="DataLoader worker processes (0: main process).")
    checkpoint_every: int = Field(
        200, ge=1, description="Optimiser steps between checkpoints (also on SIGTERM/SIGUSR1)."
    )
    threads: int = Field(
        0, ge=0, description="Torch CPU threads of its train and infer (0: compute.threads)."
    )
    loss: Literal["mse", "mae"] = Field(
        "mse",
        description="Training loss in normalised transformed space: mse | mae (masked). "
        "unet-crps always trains with the fair CRPS.",
    )
    loss_space: Literal["transformed", "physical"] = Field(
        "transformed",
        description="Where the loss compares prediction and target: transformed (normalised "
        "transformed space, e.g. log1p of rain) or physical (the variable's units, the space the "
        "RMSE is scored in: a transformed variable over its transform's offset, e.g. rain in mm "
        "h-1, an untransformed one over its train-split std).",
    )
    init_from: str | InitFromCampaign | None = Field(
        None,
        description="Fine-tuning: start from a trained model, a model.pt path or {campaign, "
        "method} ({method: unet}: this campaign's unet); variables, static fields, scale and "
        "the weight layout (a U-Net's channels) must match it (a unet-crps may start from a "
        "unet: its noise projections are new); a plugin type needs a registry layout. "
        "Normalisation statistics are this campaign's own (prep/stats.json).",
    )
    sweep: dict[str, list[Any]] | None = Field(
        None,
        description="Variants to train, e.g. {lr: [3e-4, 2e-3], loss: [mse, mae]}: every "
        "combination becomes its own method <name>-lr3e-04-mse... (own train/infer/evaluate "
        "jobs, run in parallel) in place of <name>; evaluation/sweep_<name>.md ranks them on the "
        "val split.",
    )


class UNetConfig(EmulatorConfig):
    """Residual U-Net on bicubic-upsampled LR plus HR static fields and time features."""

    type: Literal["unet"] = Field("unet", description="Method type (registry name).")  # type: ignore[assignment]
    channels: list[int] = Field(
        [16, 32, 64], min_length=2, description="Channels per U-Net level, finest first."
    )
    freeze: list[FreezeGroup] = Field(
        [],
        description="Parts kept fixed while fine-tuning (encoder | bottleneck | decoder); "
        "needs init_from. The output head always trains.",
    )

    @property
    def size_multiple(self) -> int:
        """What every HR side the network sees (patch, tile, domain) must be a multiple of:
        2^(levels - 1), one halving per level below the finest (``ResidualUNet.multiple``)."""
        return 2 ** (len(self.channels) - 1)

    @model_validator(mode="after")
    def _freeze_needs_parent(self) -> UNetConfig:
        if self.freeze and self.init_from is None:
            raise ValueError(
                f"freeze={self.freeze} needs init_from (a trained model to keep parts of)"
            )
        if len(set(self.freeze)) != len(self.freeze):
            raise ValueError(f"freeze={self.freeze} names a part twice")
        return self


class UNetCRPSConfig(UNetConfig):
    """Stochastic residual U-Net (noise injected at every level) trained with the fair CRPS."""

    type: Literal["unet-crps"] = Field(  # type: ignore[assignment]
        "unet-crps", description="Method type (registry name)."
    )
    train_members: int = Field(
        2, ge=2, description="Ensemble members per sample in the fair-CRPS training loss."
    )
    members: int = Field(8, ge=1, description="Ensemble members drawn at inference.")
    noise_channels: int = Field(
        4, ge=1, description="Gaussian noise channels injected at each U-Net level."
    )
    loss: Literal["crps"] = Field(  # type: ignore[assignment]
        "crps", description="Always the fair ensemble CRPS over train_members draws."
    )
    loss_space: Literal["transformed"] = Field(  # type: ignore[assignment]
        "transformed", description="The fair CRPS is taken in normalised transformed space."
    )


def parent_in(method: BaseModel | None, campaign: str) -> str | None:
    """The method of ``campaign`` that a method's config is fine-tuned from (``init_from``);
    None when it starts from scratch, a model file or another campaign's model."""
    parent = getattr(method, "init_from", None)
    if isinstance(parent, InitFromCampaign) and parent.campaign in (None, campaign):
        return parent.method
    return None
