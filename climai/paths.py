"""Where every output of a campaign lives: the one place both the CLI and the rules read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CampaignPaths:
    """Output paths under ``<results>/<campaign>/`` (architecture: data flow)."""

    root: Path

    @property
    def target(self) -> Path:
        return self.root / "ingest" / "target.zarr"

    @property
    def static(self) -> Path:
        return self.root / "ingest" / "static.zarr"

    @property
    def dataset(self) -> Path:
        return self.root / "prep" / "dataset.zarr"

    @property
    def stats(self) -> Path:
        return self.root / "prep" / "stats.json"

    def model(self, method: str) -> Path:
        return self.root / "models" / method / "model.pt"

    def history(self, method: str) -> Path:
        return self.root / "models" / method / "history.csv"

    def downscaled(self, method: str, split: str = "test") -> Path:
        return self.root / "downscaled" / method / f"{split}.zarr"

    def export(self, method: str, variable: str) -> Path:
        return self.root / "export" / f"{method}_{variable}.nc"

    def metrics(self, method: str) -> Path:
        return self.root / "evaluation" / method / "metrics.json"

    def spectra(self, method: str) -> Path:
        return self.root / "evaluation" / method / "spectra.csv"

    def maps(self, method: str) -> Path:
        return self.root / "evaluation" / method / "figures" / "maps.png"

    @property
    def comparison(self) -> Path:
        return self.root / "evaluation" / "comparison.png"

    @property
    def summary(self) -> Path:
        return self.root / "evaluation" / "summary.csv"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"
