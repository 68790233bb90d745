"""Variables of kind non-negative (a wind speed, a specific humidity): standardised like generic,
but never below 0 in any method's output, and a negative input value stops ingest."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from climai.config import validate_config
from climai.data.features import normalised_static
from climai.inference.predict import bicubic_prediction, model_predictor
from climai.inference.tiling import TiledPredictor, TileLayout
from climai.testing import lr_inputs, toy_feature_spec, trained_like_unet, write_cf_netcdf
from climai.variables import is_non_negative, transform_for
from tests.unit.test_ingest import assert_fails_without_output, ingest

WIND = {"name": "sfcWind", "units": "m s-1", "kind": "non-negative"}


def test_the_kind_is_valid_standardised_and_non_negative():
    cfg = validate_config({"variables": [WIND]})
    assert cfg.variables[0].kind == "non-negative"
    assert transform_for("non-negative").name == "identity"
    assert is_non_negative("non-negative") and not is_non_negative("generic")


def test_bicubic_of_calm_patches_overshoots_below_zero_only_for_generic():
    lr = np.zeros((1, 1, 6, 6), np.float32)
    lr[0, 0, 2:4, 2:4] = 10.0  # a gusty patch in calm air: bicubic rings below 0 around it
    generic = bicubic_prediction(lr, 4, ["generic"])
    wind = bicubic_prediction(lr, 4, ["non-negative"])
    assert generic.min() < -0.1
    assert wind.min() == 0.0
    np.testing.assert_array_equal(wind, np.clip(generic, 0, None))


def _tiled(kind: str) -> np.ndarray:
    """A seeded U-Net's tiled prediction of a 'tas' channel set to around 0 (of ``kind``)."""
    spec = toy_feature_spec()
    near_zero = {"transform": "identity", "offset": 1.0, "mean": 0.0, "std": 5.0}
    spec = dataclasses.replace(
        spec, stats={**spec.stats, "tas": near_zero}, kinds=[kind, "precipitation"]
    )
    model = trained_like_unet(spec, [8, 16])
    lr, static = lr_inputs(64, 64, 2)
    values = np.stack([lr[v].values for v in spec.variables], 1)
    values[:, 0] = np.abs(values[:, 0] - values[:, 0].mean())  # ≥ 0, some cells calm
    st = np.stack([static[s].values for s in spec.statics])
    layout = TileLayout.build((8, 8), 8, 64, 0, model.multiple)
    tiled = TiledPredictor(model_predictor(model, torch.device("cpu"), False), spec, layout, 2)
    bands = tiled.run(
        values,
        lambda t: normalised_static(spec, st[:, t.y0 : t.y1, t.x0 : t.x1]),
        pd.DatetimeIndex(lr["time"].values),
    )
    return np.concatenate([b[2] for b in bands], axis=-2)[:, 0]


def test_an_emulators_output_of_a_non_negative_kind_is_never_below_zero():
    generic, wind = _tiled("generic"), _tiled("non-negative")
    assert generic.min() < 0  # the network's correction takes calm cells below 0
    assert wind.min() == 0.0
    np.testing.assert_array_equal(wind, np.clip(generic, 0, None))


@pytest.mark.usefixtures("in_tmp")
def test_a_negative_wind_speed_stops_ingest_unless_within_the_tolerance():
    values = np.full((2, 8, 8), 4.0)
    values[0, 1, 2] = -1e-7  # a model's rounding noise
    write_cf_netcdf("w.nc", {"sfcWind": (values, "m s-1")}, np.arange(8) * 1000.0,
                    np.arange(8) * 1000.0, crs="EPSG:3035",
                    times=pd.date_range("2021-01-01", periods=2, freq="h"))  # fmt: skip

    def raw(**source: float) -> dict:
        return {
            "campaign": "t",
            "scale": 4,
            "variables": [WIND],
            "data": {
                "target": {"source": "netcdf", "path": "w.nc", **source},
                "static": {"xk": {"source": "derived", "field": "x"}},
            },
        }

    assert_fails_without_output(
        raw(), r"'sfcWind' .* negative values \(kind non-negative\) \(minimum -1e-07 m s-1\)"
    )
    target, _ = ingest(raw(negative_tolerance=1e-6))
    assert float(target["sfcWind"].min()) == 0.0
