"""Where every output of a campaign lives: the one place both the CLI and the rules read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CampaignPaths:
    """Output paths under ``<results>/<campaign>/`` (architecture: data flow).

    ``prepared`` is the folder whose ``dataset.zarr`` and ``stats.json`` train, infer and evaluate
    read (config key ``prepared``): ``<root>/prep`` by default, another campaign's ``prep`` to
    reuse its data, or the output folder of an extra rule (e.g. a bias correction) that reads
    ``preprocessed`` and writes there.
    """

    root: Path
    prepared: Path | None = None

    @property
    def target(self) -> Path:
        return self.root / "ingest" / "target.zarr"

    @property
    def static(self) -> Path:
        return self.root / "ingest" / "static.zarr"

    @property
    def input(self) -> Path:
        return self.root / "ingest" / "input.zarr"

    @property
    def preprocessed(self) -> Path:
        """What ``preprocess`` writes: ``prep/dataset.zarr``."""
        return self.root / "prep" / "dataset.zarr"

    @property
    def preprocessed_stats(self) -> Path:
        """What ``preprocess`` writes: ``prep/stats.json`` (train-split statistics)."""
        return self.root / "prep" / "stats.json"

    @property
    def prepared_dir(self) -> Path:
        return self.prepared if self.prepared is not None else self.root / "prep"

    @property
    def dataset(self) -> Path:
        """The prepared dataset that train, infer and evaluate read."""
        return self.prepared_dir / "dataset.zarr"

    @property
    def stats(self) -> Path:
        """The statistics of the prepared dataset (normalisation, quantiles)."""
        return self.prepared_dir / "stats.json"

    def model(self, method: str) -> Path:
        return self.root / "models" / method / "model.pt"

    def history(self, method: str) -> Path:
        return self.root / "models" / method / "history.csv"

    def validation(self, method: str) -> Path:
        """Validation scores of the trained model (physical units, val split): sweeps rank on them."""
        return self.root / "models" / method / "validation.json"

    def runtime(self, rule: str, method: str) -> Path:
        """What ``rule``'s numbers for ``method`` depended on (library versions, threads, CPU
        flags, GPU, precision): written by train and infer, collected by the manifest."""
        return self.root / "runtime" / f"{rule}_{method}.json"

    def downscaled(self, method: str, split: str = "test") -> Path:
        return self.root / "downscaled" / method / f"{split}.zarr"

    def downscaled_block(self, method: str, block: int, split: str = "test") -> Path:
        """Block ``block`` of a split infer (rule ``infer_block``): the whole store's template,
        only that block's time chunks written; ``infer_gather`` joins them into ``downscaled``."""
        return self.root / "downscaled" / method / "blocks" / f"{split}_{block}.zarr"

    @property
    def jobs_html(self) -> Path:
        """Each job's measured peak RSS and time against its predicted size (rule compare)."""
        return self.root / "evaluation" / "jobs.html"

    def export(self, method: str, variable: str) -> Path:
        return self.root / "export" / f"{method}_{variable}.nc"

    def metrics(self, method: str) -> Path:
        return self.root / "evaluation" / method / "metrics.json"

    def spectra(self, method: str) -> Path:
        return self.root / "evaluation" / method / "spectra.csv"

    def curves(self, method: str) -> Path:
        """The spectra and quantiles ``compare`` redraws without reading the method's store."""
        return self.root / "evaluation" / method / "curves.json"

    def maps(self, method: str) -> Path:
        return self.root / "evaluation" / method / "figures" / "maps.png"

    def spectra_figure(self, method: str) -> Path:
        return self.root / "evaluation" / method / "figures" / "spectra.png"

    def qq(self, method: str) -> Path:
        return self.root / "evaluation" / method / "figures" / "qq.png"

    @property
    def comparison(self) -> Path:
        """Maps of every method side by side (LR input, truth, methods, errors)."""
        return self.root / "evaluation" / "comparison.png"

    @property
    def comparison_spectra(self) -> Path:
        return self.root / "evaluation" / "spectra.png"

    @property
    def comparison_qq(self) -> Path:
        return self.root / "evaluation" / "qq.png"

    @property
    def overview(self) -> Path:
        """The truth over the whole domain at one test step with a zoom on every method."""
        return self.root / "evaluation" / "overview.png"

    @property
    def learning_curves(self) -> Path:
        """Every emulator's training history (losses, learning rate, samples/s) per epoch."""
        return self.root / "evaluation" / "learning_curves.png"

    @property
    def rank_histograms(self) -> Path:
        return self.root / "evaluation" / "rank_histograms.png"

    @property
    def summary(self) -> Path:
        return self.root / "evaluation" / "summary.csv"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def summary_md(self) -> Path:
        """The methods table in Markdown (for the README)."""
        return self.root / "evaluation" / "summary.md"

    @property
    def summary_html(self) -> Path:
        """Config and metrics table of the campaign, for the Snakemake report."""
        return self.root / "evaluation" / "summary.html"

    def sweep_csv(self, name: str) -> Path:
        """The variants of sweep ``name`` ranked on the validation split."""
        return self.root / "evaluation" / f"sweep_{name}.csv"

    def sweep_md(self, name: str) -> Path:
        return self.root / "evaluation" / f"sweep_{name}.md"

    def sweep_html(self, name: str) -> Path:
        return self.root / "evaluation" / f"sweep_{name}.html"

    def sweep_figure(self, name: str) -> Path:
        return self.root / "evaluation" / f"sweep_{name}.png"

    @property
    def lineage(self) -> Path:
        """Which trained model each fine-tuned method started from (HTML, for the report)."""
        return self.root / "evaluation" / "lineage.html"

    def settings(self, stage: str, method: str | None = None) -> Path:
        """The settings ``stage`` (for ``method``) last ran with: an input of its rule, rewritten
        when they change so that the job reruns (climai/io/settings.py)."""
        return self.root / "settings" / (f"{stage}_{method}.json" if method else f"{stage}.json")

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"
