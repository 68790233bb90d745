"""Baselines through the one engine: streamed by time blocks and bands, the same values as the
whole field at once, written chunk by chunk, steps without LR values skipped."""

from __future__ import annotations

import numpy as np
import pytest

from climai.config import InferConfig
from climai.inference.baselines import Interpolation
from climai.inference.downscale import downscale_baseline
from climai.inference.predict import bicubic_prediction, quantile_mapped_prediction
from climai.io import open_store
from climai.testing import lr_inputs

KINDS = ["temperature", "precipitation"]
TABLES = (
    np.array([[270.0, 285.0, 300.0], [0.0, 0.5, 4.0]]),
    np.array([[268.0, 285.5, 303.0], [0.0, 0.3, 6.0]]),
)


def _holed_lr():
    """LR of a 96 × 80 HR domain, 5 steps: a missing cell, and step 3 without any value in its
    first 3 LR rows (both variables)."""
    lr, _ = lr_inputs(96, 80, 5, seed=2)
    lr["pr"][1, 4, 2] = np.nan
    for v in ("tas", "pr"):
        lr[v][3, :3] = np.nan
    return lr


@pytest.mark.parametrize(
    ("baseline", "whole"),
    [
        (Interpolation(8, KINDS), lambda lr: bicubic_prediction(lr, 8, KINDS)),
        (Interpolation(8, KINDS, "nearest"), lambda lr: bicubic_prediction(lr, 8, KINDS, "nearest")),
        (
            Interpolation(8, KINDS, "bicubic", *TABLES),
            lambda lr: quantile_mapped_prediction(lr, 8, KINDS, *TABLES),
        ),
    ],
    ids=["bicubic", "nearest", "quantile-mapping"],
)  # fmt: skip
@pytest.mark.parametrize("call_bytes", [32 << 20, 1], ids=["one-call-per-band", "step-by-step"])
def test_a_baseline_streamed_by_blocks_and_bands_equals_the_whole_field(
    tmp_path, monkeypatch, baseline, whole, call_bytes
):
    """Blocks of 2 steps and bands of 24 rows give the whole split's values bitwise, NaN over
    missing LR cells; band steps without any LR value are not computed. A band computed in runs
    of steps (``CALL_BYTES``: the bound of the baseline's temporaries) gives the same values."""
    import climai.inference.baselines as baselines

    monkeypatch.setattr(baselines, "CALL_BYTES", call_bytes)
    lr = _holed_lr()
    cfg = InferConfig(tile=32, overlap=8, time_block=2, progress=False)
    stats = downscale_baseline(baseline, ["tas", "pr"], 8, lr, tmp_path / "hr.zarr", cfg, {"a": 1})
    hr = open_store(tmp_path / "hr.zarr")
    want = whole(np.stack([lr[v].values for v in ("tas", "pr")], axis=1))
    for i, v in enumerate(("tas", "pr")):
        np.testing.assert_array_equal(hr[v].values, want[:, i])
        assert hr[v].encoding["chunks"] == (2, 24, 24) and hr[v].attrs["grid_mapping"] == "crs"
    assert np.isnan(hr["pr"].values[1, 32:40, 16:24]).all()
    assert np.isnan(hr["tas"].values[3, :24]).all() and np.isfinite(hr["tas"].values[3, 24:]).all()
    assert hr.attrs["a"] == 1 and "crs_wkt" in hr["crs"].attrs
    assert (stats.samples, stats.skipped) == (5 * 4, 1)  # 4 bands of 24 rows; step 3's first


class Doubled:
    """A plugin-like baseline: no margin (whole domain per block), an extra variable."""

    def __init__(self) -> None:
        import xarray as xr

        self.extra = {"note": xr.DataArray(np.arange(3.0), dims=("k",))}
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        self.calls.append(lr.shape)
        return 2 * np.repeat(np.repeat(lr, 8, -2), 8, -1)


def test_a_baseline_without_margin_gets_whole_blocks_and_keeps_its_extra(tmp_path):
    lr = _holed_lr()
    cfg = InferConfig(tile=32, overlap=8, time_block=3, progress=False)
    baseline = Doubled()
    downscale_baseline(baseline, ["tas", "pr"], 8, lr, tmp_path / "hr.zarr", cfg, {})
    hr = open_store(tmp_path / "hr.zarr")
    assert baseline.calls == [(3, 2, 12, 10), (2, 2, 12, 10)]  # NaN-free, the whole LR domain
    np.testing.assert_array_equal(hr["note"].values, [0.0, 1.0, 2.0])
    # calls bounded by CALL_BYTES: one step's HR output each, the same store
    import climai.inference.baselines as baselines

    one_step = 4 * 2 * 96 * 80
    for call_bytes, shapes in ((one_step, [(1, 2, 12, 10)] * 5), (2 * one_step, [(2, 2, 12, 10),
                               (1, 2, 12, 10), (2, 2, 12, 10)])):  # fmt: skip
        monkeypatch_calls = Doubled()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(baselines, "CALL_BYTES", call_bytes)
            out = tmp_path / f"hr{call_bytes}.zarr"
            downscale_baseline(monkeypatch_calls, ["tas", "pr"], 8, lr, out, cfg, {})
        assert monkeypatch_calls.calls == shapes
        np.testing.assert_array_equal(open_store(out)["tas"].values, hr["tas"].values)
    tas = lr["tas"].values
    np.testing.assert_array_equal(hr["tas"].values[0, ::8, ::8], 2 * tas[0])
    assert np.isnan(hr["pr"].values[1, 32:40, 16:24]).all()


def test_a_baseline_of_the_wrong_shape_is_named(tmp_path):
    lr = _holed_lr()
    cfg = InferConfig(tile=32, overlap=8, progress=False)
    with pytest.raises(ValueError, match=r"baseline function returned shape \(5, 2, 12, 10\)"):
        downscale_baseline(lambda a: a, ["tas", "pr"], 8, lr, tmp_path / "hr.zarr", cfg, {})
    assert not (tmp_path / "hr.zarr").exists()


def test_the_writer_thread_writes_the_same_store(tmp_path, monkeypatch):
    import climai.inference.engine as engine

    lr = _holed_lr()
    cfg = InferConfig(tile=32, overlap=8, time_block=2, progress=False)
    for name, background in (("loop.zarr", False), ("thread.zarr", True)):
        monkeypatch.setattr(engine, "BACKGROUND_WRITES", background)
        downscale_baseline(Interpolation(8, KINDS), ["tas", "pr"], 8, lr, tmp_path / name, cfg, {})
    a, b = open_store(tmp_path / "loop.zarr"), open_store(tmp_path / "thread.zarr")
    for v in ("tas", "pr"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
