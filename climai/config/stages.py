"""The options of the stages after training: tiled inference (``infer``), the NetCDF export
(``export``) and the evaluation (``evaluate``, whose metric names come from the metric
registry, plugins included)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from climai.config.base import StrictModel
from climai.evaluation.registry import CONTRACT_METRICS, METRICS


class InferConfig(StrictModel):
    """Tiled inference: any domain size in bounded memory (``infer`` and ``climai downscale``)."""

    tile: int = Field(
        512, ge=8, description="HR tile edge in cells (a multiple of scale and of the model's)."
    )
    overlap: int = Field(
        128,
        ge=0,
        description="HR cells shared by neighbouring tiles (a multiple of scale); tiles are exact "
        "when the model's receptive radius is at most overlap / 4.",
    )
    batch: int = Field(4, ge=1, description="Tile × time samples per forward pass.")
    time_block: int = Field(
        0,
        ge=0,
        description="Time steps processed together (tiles of several steps share batches); "
        "0: as many as memory_mb allows.",
    )
    memory_mb: int = Field(
        512,
        ge=16,
        description="Budget of the band buffers when time_block is 0 (MiB). A block holds at "
        "least one time step, so a step whose band buffers exceed it (a wide domain, many "
        "members) takes more: memory then follows the domain's width × members.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; auto: cuda when available, else cpu."
    )
    bf16: bool = Field(True, description="bf16 autocast where the device supports it.")
    self_ensemble: Literal[1, 2, 4, 8] = Field(
        1,
        description="Deterministic emulators trained with augment: true: average each tile's "
        "prediction over this many of its flips and 90° rotations, each undone on the output "
        "(2: the left-right mirror; 4: the four rotations; 8: rotations and mirrors, the "
        "dihedral group). That many forward passes per tile; 1: one pass, no averaging. "
        "Ensembles draw their members as trained (it does not apply to them).",
    )
    ensemble_mean: bool = Field(
        False, description="Also write <var>_mean, the mean over members (stochastic models)."
    )
    quantiles: list[float] = Field(
        [], description="Also write <var>_quantile over members at these levels, in (0, 1)."
    )
    progress: bool = Field(True, description="Show a progress bar with ETA on stderr.")

    @field_validator("quantiles")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        bad = [q for q in v if not 0 < q < 1]
        if bad:
            raise ValueError(f"quantile levels must be in (0, 1), got {bad}")
        return v

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> InferConfig:
        if self.overlap >= self.tile:
            raise ValueError(f"overlap={self.overlap} must be smaller than tile={self.tile}")
        return self


class ExportConfig(StrictModel):
    """CF-1.10 NetCDF export of the downscaled fields, one file per method and variable."""

    compression_level: int = Field(4, ge=0, le=9, description="zlib level (0: uncompressed).")
    chunk_xy: int = Field(256, ge=16, description="NetCDF chunk edge along y and x, in cells.")
    institution: str = Field(
        "unspecified (set export.institution)",
        description="CF global attribute institution: who produced the downscaled data.",
    )
    references: str = Field(
        "climai (README.md); the campaign's manifest.json records its configuration, inputs "
        "and software",
        description="CF global attribute references: how to cite or where to read more.",
    )
    comment: str | None = Field(None, description="CF global attribute comment, if set.")


class EvaluateConfig(StrictModel):
    """Evaluation options."""

    bands: list[list[float]] = Field(
        [[2, 4], [4, 8], [8, 16], [16, 32]],
        description="Wavelength bands, in HR cells, for the spectral ratio.",
    )
    figure_steps: int = Field(
        2, ge=1, description="Test time steps shown in the maps (the wettest ones, else spread)."
    )
    wet_threshold: float = Field(
        0.1,
        ge=0,
        description="Precipitation at or above this (in the variable's units) counts as wet.",
    )
    metrics: list[str] = Field(
        default_factory=lambda: list(METRICS.builtins),
        min_length=1,
        description="Metrics computed (registry names, plugins included; default: every "
        "built-in one); those that do not apply to a variable or method are skipped.",
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        valid = METRICS.names()
        unknown = [m for m in v if m not in valid]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; valid metrics: {', '.join(valid)}")
        missing = [m for m in CONTRACT_METRICS if m not in v]
        if missing:
            raise ValueError(f"metrics must include the contract metrics {missing}")
        return v

    @field_validator("bands")
    @classmethod
    def _bands(cls, v: list[list[float]]) -> list[list[float]]:
        for band in v:
            if len(band) != 2 or not 2 <= band[0] < band[1]:
                raise ValueError(f"band {band} must be [lo, hi] with 2 <= lo < hi (HR cells)")
        return v
