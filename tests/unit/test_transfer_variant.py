"""benchmarks/transfer_variant.py (issue 19, deliverable 5): a variant is the transfer campaign with
only bicubic and the varied method, its keys changed, and a campaign of its own that validates."""

from __future__ import annotations

import pytest
import yaml

from climai.config import load_config
from tests.conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def variant():
    return load_benchmark("transfer_variant")


@pytest.mark.parametrize("held", ["knmi", "fmi", "mrms-conus", "bom-melbourne"])
def test_a_unet_variant_changes_only_its_keys_and_validates(variant, held, tmp_path):
    name, text = variant.variant_config(held, "p128", "unet", {"patch": 128, "seed": 3})
    assert name == f"x-p128-{held}"
    raw = yaml.safe_load(text)
    base = yaml.safe_load((REPO / "config/campaigns" / f"transfer-{held}.yaml").read_text())
    assert raw["campaign"] == name and "seed" not in raw  # the prepared data's seed stays
    assert raw["prepared"] == base["prepared"] and raw["data"] == base["data"]
    assert {m for m, v in raw["methods"].items() if v is not None} == {"bicubic", "unet"}
    assert raw["methods"]["unet"] == {**base["methods"]["unet"], "patch": 128, "seed": 3}
    (tmp_path / "v.yaml").write_text(text)
    cfg = load_config(REPO / "config" / "config.yaml", tmp_path / "v.yaml")
    run = {m for m, v in cfg.methods.root.items() if v is not None}
    assert cfg.campaign == name and run == {"bicubic", "unet"}
    assert cfg.methods.root["unet"].patch == 128 and cfg.methods.root["unet"].seed == 3
    assert cfg.seed == base.get("seed", 0)


def test_an_ensemble_variant_fine_tunes_from_the_protocols_unet(variant):
    _, text = variant.variant_config("knmi", "long", "unet-crps", {"pooled_patches": 1600})
    m = yaml.safe_load(text)["methods"]
    assert m["unet"] is None and m["unet-crps"]["pooled_patches"] == 1600
    assert m["unet-crps"]["init_from"] == {"campaign": "transfer-knmi", "method": "unet"}
