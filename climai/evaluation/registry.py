"""The metric registry: every metric by name and when it applies, without importing numpy.

The config validates ``evaluate.metrics`` against these names when it is read (the Snakefile reads
it at parse time), so this module imports nothing heavy; a built-in metric's computation, in
:mod:`climai.evaluation.metrics`, is imported when the metric is first computed. Plugins add
metrics through entry points in the group ``climai.metrics`` (``docs/add-a-metric.md``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from climai.plugins import Registry

if TYPE_CHECKING:
    from climai.evaluation.metrics import MetricInput


@dataclass(frozen=True)
class Metric:
    """A named metric and the inputs it applies to."""

    func: Callable[[MetricInput], Any]
    ensemble_only: bool = False
    precipitation_only: bool = False
    needs_lr: bool = False

    def applies(self, inp: MetricInput) -> bool:
        return (
            (inp.is_ensemble or not self.ensemble_only)
            and (inp.kind == "precipitation" or not self.precipitation_only)
            and (inp.lr is not None or not self.needs_lr)
        )


def _scores() -> Any:
    """:mod:`climai.evaluation.metrics` (numpy), imported when a built-in is first computed."""
    return importlib.import_module("climai.evaluation.metrics")


_BUILTIN: dict[str, Metric] = {
    "rmse": Metric(lambda i: _scores().rmse(i.point, i.truth)),
    "mae": Metric(lambda i: _scores().mae(i.point, i.truth)),
    "bias": Metric(lambda i: _scores().bias(i.point, i.truth)),
    "corr": Metric(lambda i: _scores().corr(i.point, i.truth)),
    "spectral_ratio": Metric(lambda i: i.spectra().ratio(i.bands)),
    "quantiles": Metric(lambda i: _scores().quantiles(i.pred)),
    "quantiles_truth": Metric(lambda i: _scores().quantiles(i.truth)),
    "quantile_error": Metric(lambda i: _scores().quantile_error(i.pred, i.truth)),
    "wet_fraction": Metric(
        lambda i: _scores().wet_fraction(i.pred, i.wet_threshold), precipitation_only=True
    ),
    "wet_fraction_truth": Metric(
        lambda i: _scores().wet_fraction(i.truth, i.wet_threshold), precipitation_only=True
    ),
    "wet_intensity": Metric(
        lambda i: _scores().wet_intensity(i.pred, i.wet_threshold), precipitation_only=True
    ),
    "wet_intensity_truth": Metric(
        lambda i: _scores().wet_intensity(i.truth, i.wet_threshold), precipitation_only=True
    ),
    "conservation_error": Metric(
        lambda i: _scores().conservation_error(i.pred, i.lr, i.scale), needs_lr=True
    ),
    "crps": Metric(lambda i: _scores().crps_ensemble(i.pred, i.truth), ensemble_only=True),
    "crps_fair": Metric(lambda i: _scores().crps_fair(i.pred, i.truth), ensemble_only=True),
    "spread_skill": Metric(lambda i: _scores().spread_skill(i.pred, i.truth), ensemble_only=True),
    "rank_histogram": Metric(
        lambda i: _scores().rank_histogram(i.pred, i.truth, i.seed), ensemble_only=True
    ),
}

CONTRACT_METRICS = ("rmse", "mae", "bias", "corr", "spectral_ratio")
"""The metrics every ``metrics.json`` holds (the campaign contract)."""


def _check_metric(name: str, obj: object) -> Metric:
    """A plugin's entry point: a :class:`Metric`, or a function ``(MetricInput) -> value``."""
    if isinstance(obj, Metric):
        return obj
    if callable(obj):
        return Metric(obj)
    raise TypeError(f"expected a Metric or a function (MetricInput) -> value, got {obj!r}")


METRICS: Registry[Metric] = Registry("metric", _BUILTIN, _check_metric)
"""Every metric by name: climai's own, then plugins of the entry-point group ``climai.metrics``
(``docs/add-a-metric.md``)."""


def get_metric(name: str) -> Metric:
    """The metric called ``name``; an unknown name gets an error listing the valid ones."""
    return METRICS.get(name)
