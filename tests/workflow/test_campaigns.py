"""The real-data campaign configs through Snakemake: ``--until ingest`` gives the target stores."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from climai.io import open_store
from tests.conftest import REPO, shared_data
from tests.workflow.test_toy_dag import snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def test_knmi_campaign_until_ingest(tmp_path: Path):
    """config/campaigns/knmi.yaml merged over config/config.yaml by Snakemake itself."""
    raw = yaml.safe_load((REPO / "config" / "campaigns" / "knmi.yaml").read_text())
    raw["data"]["target"]["path"] = str(shared_data() / Path(raw["data"]["target"]["path"]).name)
    (tmp_path / "knmi.yaml").write_text(yaml.safe_dump(raw))
    result = snakemake(tmp_path, "--configfile", str(tmp_path / "knmi.yaml"), "--until", "ingest")
    assert result.returncode == 0, result.stderr[-3000:]
    target = open_store(tmp_path / "results/knmi/ingest/target.zarr")
    assert target["pr"].shape == (92, 288, 288) and target["pr"].attrs["units"] == "mm h-1"
    assert target["crs"].attrs["grid_mapping_name"] == "polar_stereographic"
    assert target.attrs["created_by_rule"] == "ingest"
    static = open_store(tmp_path / "results/knmi/ingest/static.zarr")
    assert {"x_km", "y_km"} <= set(static.data_vars)
    assert not (tmp_path / "results/knmi/prep").exists()
    log = (tmp_path / "results/knmi/logs/ingest.log").read_text()
    assert "trimmed 7 row(s) and 7 column(s)" in log
