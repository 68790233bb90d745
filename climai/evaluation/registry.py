"""The metric registry: every metric by name and when it applies, without importing numpy.

The config validates ``evaluate.metrics`` against these names when it is read (the Snakefile reads
it at parse time), so this module imports nothing heavy; a built-in metric's computation, in
:mod:`climai.evaluation.metrics`, is imported when the metric is first computed. Plugins add
metrics through entry points in the group ``climai.metrics`` (``docs/add-a-metric.md``).

The ``evaluate`` stage streams: it reads the test split in blocks of time steps and gives each
block, a :class:`~climai.evaluation.metrics.MetricInput` of those steps, to every metric's
:class:`Accumulator` (``update``), then asks each for its value (``result``). A metric provides
its accumulator through ``Metric.accumulator``, a function of the run's :class:`Streams` (the
accumulators several metrics share, such as the quantile histograms). ``Metric.func``, a function
of the whole split, is the in-memory reference; a metric with no accumulator (a plugin written
before streaming) is still computed, from the whole split gathered in memory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from climai.plugins import Registry, unbindable

if TYPE_CHECKING:
    from climai.evaluation.metrics import MetricInput


class Accumulator(Protocol):
    """What a metric keeps over the time blocks of the split: sums, counts, histograms.

    ``update`` is called once per block, in time order, with the block's ``MetricInput``;
    ``result`` returns the metric's value (a number or a small mapping) after the last block.
    Optional ``merge(other)``: add what ``other`` (a new accumulator of the same metric given the
    *following* blocks) kept, so that threads can score runs of blocks side by side
    (:func:`climai.evaluation.stream.stream_scores`); without it the blocks are scored in one
    thread.
    """

    def update(self, block: MetricInput) -> None: ...

    def result(self) -> Any: ...


class Streams:
    """The accumulators that several metrics share (one per key), each updated once per block."""

    def __init__(self) -> None:
        self._items: dict[str, Accumulator] = {}

    def get(self, key: str, factory: Callable[[], Accumulator]) -> Accumulator:
        """The shared accumulator ``key``, made by ``factory`` on first use."""
        if key not in self._items:
            self._items[key] = factory()
        return self._items[key]

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def holds(self, acc: object) -> bool:
        """Whether ``acc`` is one of the shared accumulators (updated by :meth:`update`)."""
        return any(acc is a for a in self._items.values())

    def update(self, block: MetricInput) -> None:
        """Give ``block`` to every shared accumulator."""
        for acc in self._items.values():
            acc.update(block)

    def mergeable(self) -> bool:
        """Whether every shared accumulator has a ``merge``."""
        return all(hasattr(acc, "merge") for acc in self._items.values())

    def merge(self, other: Streams) -> None:
        """Merge each shared accumulator of ``other`` (which saw the following blocks) into
        this one's of the same key."""
        for key, acc in self._items.items():
            if key in other._items:
                acc.merge(other._items[key])  # type: ignore[attr-defined]


class View:
    """An accumulator that only reads others: ``result`` is ``finish(*their results)``."""

    def __init__(self, finish: Callable[..., Any], *sources: Accumulator) -> None:
        self.finish, self.sources = finish, sources

    def update(self, block: MetricInput) -> None:
        """Nothing: the sources are updated by their owner (a :class:`Streams`)."""

    def merge(self, other: View) -> None:
        """Nothing: the sources are merged by their owner (a :class:`Streams`)."""

    def result(self) -> Any:
        return self.finish(*(s.result() for s in self.sources))


@dataclass(frozen=True)
class Metric:
    """A named metric, the inputs it applies to, and how it is computed.

    ``func`` computes it from a whole split (the in-memory reference); ``accumulator``, given
    the run's :class:`Streams`, returns the :class:`Accumulator` that computes it block by block.
    """

    func: Callable[[MetricInput], Any]
    ensemble_only: bool = False
    precipitation_only: bool = False
    needs_lr: bool = False
    accumulator: Callable[[Streams], Accumulator] | None = None

    def applies(self, inp: MetricInput) -> bool:
        return (
            (inp.is_ensemble or not self.ensemble_only)
            and (inp.kind == "precipitation" or not self.precipitation_only)
            and (inp.lr is not None or not self.needs_lr)
        )


def _scores() -> Any:
    """:mod:`climai.evaluation.metrics` (numpy), imported when a built-in is first computed."""
    return importlib.import_module("climai.evaluation.metrics")


def _streamed() -> Any:
    """:mod:`climai.evaluation.accumulators` (numpy), imported when a built-in is first streamed."""
    return importlib.import_module("climai.evaluation.accumulators")


def _builtin(func: Callable[[MetricInput], Any], acc: Callable[..., Any], *args: Any, **kw: Any):
    """A built-in metric: ``func`` in memory, the accumulator ``acc(streams, *args)`` streamed."""
    return Metric(func, accumulator=lambda s: acc()(s, *args), **kw)


def _acc(name: str) -> Callable[[], Any]:
    return lambda: getattr(_streamed(), name)


_BUILTIN: dict[str, Metric] = {
    "rmse": _builtin(lambda i: _scores().rmse(i.point, i.truth), _acc("point"), "rmse"),
    "mae": _builtin(lambda i: _scores().mae(i.point, i.truth), _acc("point"), "mae"),
    "bias": _builtin(lambda i: _scores().bias(i.point, i.truth), _acc("point"), "bias"),
    "corr": _builtin(lambda i: _scores().corr(i.point, i.truth), _acc("point"), "corr"),
    "spectral_ratio": _builtin(lambda i: i.spectra().ratio(i.bands), _acc("spectral_ratio")),
    "quantiles": _builtin(lambda i: _scores().quantiles(i.common()[0]), _acc("quantiles"), "pred"),
    "quantiles_truth": _builtin(
        lambda i: _scores().quantiles(i.common()[1]), _acc("quantiles"), "truth"
    ),
    "quantile_error": _builtin(
        lambda i: _scores().quantile_error(*i.common()), _acc("quantile_error")
    ),
    "wet_fraction": _builtin(
        lambda i: _scores().wet_fraction(i.common()[0], i.wet_threshold),
        _acc("wet"),
        "pred",
        "fraction",
        precipitation_only=True,
    ),
    "wet_fraction_truth": _builtin(
        lambda i: _scores().wet_fraction(i.common()[1], i.wet_threshold),
        _acc("wet"),
        "truth",
        "fraction",
        precipitation_only=True,
    ),
    "wet_intensity": _builtin(
        lambda i: _scores().wet_intensity(i.common()[0], i.wet_threshold),
        _acc("wet"),
        "pred",
        "intensity",
        precipitation_only=True,
    ),
    "wet_intensity_truth": _builtin(
        lambda i: _scores().wet_intensity(i.common()[1], i.wet_threshold),
        _acc("wet"),
        "truth",
        "intensity",
        precipitation_only=True,
    ),
    "conservation_error": _builtin(
        lambda i: _scores().conservation_error(i.pred, i.lr, i.scale),
        _acc("conservation"),
        needs_lr=True,
    ),
    "crps": _builtin(
        lambda i: _scores().crps_ensemble(i.pred, i.truth),
        _acc("ensemble"),
        "crps",
        ensemble_only=True,
    ),
    "crps_fair": _builtin(
        lambda i: _scores().crps_fair(i.pred, i.truth),
        _acc("ensemble"),
        "crps_fair",
        ensemble_only=True,
    ),
    "spread_skill": _builtin(
        lambda i: _scores().spread_skill(i.pred, i.truth),
        _acc("ensemble"),
        "spread_skill",
        ensemble_only=True,
    ),
    "rank_histogram": _builtin(
        lambda i: _scores().rank_histogram(i.pred, i.truth, i.seed),
        _acc("ensemble"),
        "rank_histogram",
        ensemble_only=True,
    ),
}

CONTRACT_METRICS = ("rmse", "mae", "bias", "corr", "spectral_ratio")
"""The metrics every ``metrics.json`` holds (the campaign contract)."""


def _takes_one(func: Callable[..., Any], what: str) -> None:
    """``TypeError`` unless ``func`` can be called with one positional argument."""
    if (found := unbindable(func, 1)) is not None:
        raise TypeError(f"{what} must take one argument, {func!r} has the signature {found}")


def _check_metric(name: str, obj: object) -> Metric:
    """A plugin's entry point: a :class:`Metric`, or a function ``(MetricInput) -> value`` (no
    accumulator: computed from the whole split gathered in memory); its function takes one
    ``MetricInput``, its accumulator factory one :class:`Streams`."""
    if not isinstance(obj, Metric):
        if not callable(obj):
            raise TypeError(f"expected a Metric or a function (MetricInput) -> value, got {obj!r}")
        obj = Metric(obj)
    _takes_one(obj.func, "its function (MetricInput) -> value")
    if obj.accumulator is not None:
        _takes_one(obj.accumulator, "its accumulator (Streams) -> Accumulator")
    return obj


def check_metrics(names: list[str]) -> None:
    """Load every metric of ``names`` (plugins import now): a plugin that cannot be imported or
    is not a valid metric raises :class:`~climai.plugins.PluginError` naming it, before any job
    (the workflow and ``climai validate``), not in an evaluate job after the trainings."""
    for name in names:
        METRICS.get(name)


METRICS: Registry[Metric] = Registry("metric", _BUILTIN, _check_metric)
"""Every metric by name: climai's own, then plugins of the entry-point group ``climai.metrics``
(``docs/add-a-metric.md``)."""


def get_metric(name: str) -> Metric:
    """The metric called ``name``; an unknown name gets an error listing the valid ones."""
    return METRICS.get(name)
