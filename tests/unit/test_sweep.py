"""Sweeps: expansion of ``methods.<name>.sweep`` into methods, ranking on validation (issue 11)."""

from __future__ import annotations

import pytest

from climai.config import (
    ConfigError,
    UNetConfig,
    canonical_json,
    from_stage_json,
    stage_slice,
    validate_config,
)
from climai.evaluation.sweep import lineage_html, sweep_markdown, sweep_table, swept_settings


def test_a_sweep_becomes_one_method_per_combination_in_place_of_the_swept_one():
    cfg = validate_config(
        {
            "methods": {
                "unet": {"epochs": 2, "sweep": {"lr": ["7e-4", 2e-3], "loss": ["mse", "mae"]}}
            }
        }
    )
    variants = ["unet-lr7e-04-mse", "unet-lr7e-04-mae", "unet-lr2e-03-mse", "unet-lr2e-03-mae"]
    assert cfg.sweeps == {"unet": variants}
    assert cfg.methods.get("unet") is None  # the swept method itself is not run
    assert [m for m in cfg.methods.enabled() if m.startswith("unet")] == variants
    v = cfg.methods.get("unet-lr7e-04-mae")
    assert isinstance(v, UNetConfig) and (v.lr, v.loss, v.epochs) == (7e-4, "mae", 2)
    # a variant's stage slice rebuilds alone and is not expanded again
    again, _ = from_stage_json(canonical_json(stage_slice(cfg, "train", "unet-lr7e-04-mae")))
    assert again.methods.enabled() == ["unet-lr7e-04-mae"] and again.sweeps == {}


def test_a_named_instance_sweeps_with_its_own_name():
    cfg = validate_config(
        {"methods": {"small": {"type": "unet", "sweep": {"channels": [[8, 16], [16, 32]]}}}}
    )
    assert cfg.sweeps == {"small": ["small-channels8x16", "small-channels16x32"]}
    assert "unet" in cfg.methods.enabled()  # the default unet still runs beside them


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"lrr": [1e-3]}, r"'methods.unet.sweep.lrr' is not a setting of unet \(did you mean 'lr'"),
        ({"lr": []}, r"'methods.unet.sweep.lr' must be a non-empty list"),
        ({"loss": ["mse", "l3"]}, r"'methods.unet.sweep.loss' value 'l3'"),
        ({"type": ["unet-crps"]}, r"'methods.unet.sweep.type' is not a setting"),
    ],
)
def test_a_bad_sweep_names_the_key(sweep, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"methods": {"unet": {"sweep": sweep}}})


def test_baselines_do_not_sweep():
    with pytest.raises(ConfigError, match=r"'methods.bicubic.sweep': only trained methods"):
        validate_config({"methods": {"bicubic": {"sweep": {"quantiles": [11]}}}})


def _record(lr: float, loss: str, tas: float, pr: float) -> dict:
    cfg = UNetConfig(lr=lr, loss=loss).model_dump(mode="json")
    return {
        "config": cfg,
        "epochs_run": 3,
        "variables": {
            "tas": {"rmse": tas, "mae": tas, "bicubic_rmse": 1.0},
            "pr": {"rmse": pr, "mae": pr, "bicubic_rmse": 0.5},
        },
        "lineage": [],
    }


def test_variants_are_ranked_by_mean_validation_rmse_relative_to_bicubic():
    records = {
        "u-a": _record(7e-4, "mse", tas=0.5, pr=0.45),  # ratios 0.5, 0.9 → 0.7
        "u-b": _record(2e-3, "mse", tas=0.9, pr=0.40),  # 0.9, 0.8 → 0.85
        "u-c": _record(7e-4, "mae", tas=0.6, pr=0.20),  # 0.6, 0.4 → 0.5
    }
    assert swept_settings(records) == ["lr", "loss"]
    table = sweep_table(records, ["tas", "pr"])
    assert list(table["method"]) == ["u-c", "u-a", "u-b"]
    assert list(table["rank"]) == [1, 2, 3]
    assert table["score"].tolist() == pytest.approx([0.5, 0.7, 0.85])
    md = sweep_markdown(table, "u", ["tas", "pr"], {"tas": "K", "pr": "mm h-1"})
    assert "| rank | method | lr | loss | tas val RMSE (K) |" in md
    assert "| 1 | u-c | 0.0007 | mae | 0.6 |" in md
    assert "test split is not used" in md


def test_lineage_lists_the_parents_nearest_first():
    rec = _record(7e-4, "mse", 0.5, 0.5)
    rec["config"]["freeze"] = ["encoder"]
    rec["lineage"] = [
        {"campaign": "fmi", "method": "unet", "path": "results/fmi/m.pt", "sha256": "a" * 64},
        {"campaign": "knmi", "method": "unet", "path": "results/knmi/m.pt", "sha256": "b" * 64},
    ]
    page = lineage_html({"unet-ft": rec, "unet": _record(7e-4, "mse", 0.5, 0.5)})
    assert page.index("fmi/unet") < page.index("knmi/unet")
    assert "unet-ft" in page and "encoder" in page and "aaaaaaaaaaaa" in page
    assert "<td>unet</td>" not in page  # trained from scratch: no lineage row
