"""The Snakemake workflow catalog's files: its metadata and the `.test/` campaign."""

from __future__ import annotations

import yaml

from climai.config import load_config
from climai.testing import TINY_CAMPAIGN
from tests.conftest import REPO


def test_catalog_test_campaign_is_the_tests_tiny_campaign_and_validates():
    test_config = REPO / ".test" / "config" / "config.yaml"
    assert yaml.safe_load(test_config.read_text()) == TINY_CAMPAIGN
    cfg = load_config(REPO / "config" / "config.yaml", test_config)
    assert cfg.campaign == "tiny"
    assert set(cfg.methods.enabled()) == {"bicubic", "quantile-mapping", "unet"}


def test_catalog_metadata_names_the_deployment_and_report():
    meta = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert set(meta["usage"]) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert meta["usage"]["software-stack-deployment"]["conda"] is True
    assert (REPO / "envs" / "cpu.yaml").is_file() and (REPO / "envs" / "gpu.yaml").is_file()
    assert meta["usage"]["report"] is True
    assert (REPO / "config" / "README.md").is_file()
