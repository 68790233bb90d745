"""config/campaigns/toy-wind.yaml through Snakemake: a third variable, wind speed in m s-1."""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

from climai.config import deep_merge
from tests.conftest import REPO, run_snakemake
from tests.unit.test_cf import cf_failures

pytestmark = [
    pytest.mark.workflow,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ioos_sos checker:DeprecationWarning"),
]
# the campaign as it is, on the tiny grid and with a one-epoch U-Net
SMALL = {
    "data": {"target": {"source": "synthetic", "nx": 32, "ny": 32, "steps": 48}},
    "methods": {"unet": {"epochs": 1, "patch": 32, "batch": 8}, "quantile-mapping": None},
}


def test_wind_campaign_runs_end_to_end_with_cf_exports(tmp_path: Path):
    raw = yaml.safe_load((REPO / "config" / "campaigns" / "toy-wind.yaml").read_text())
    (tmp_path / "wind.yaml").write_text(yaml.safe_dump(deep_merge(raw, SMALL)))
    result = run_snakemake(tmp_path, "--configfile", str(tmp_path / "wind.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "results" / "toy-wind"
    for method in ("bicubic", "unet"):
        metrics = json.loads((root / "evaluation" / method / "metrics.json").read_text())
        assert {"tas", "pr", "sfcWind"} <= set(json.dumps(metrics).split('"'))
        path = root / "export" / f"{method}_sfcWind.nc"
        failures = cf_failures(path, tmp_path / f"{method}.json")
        assert failures["high"] == [] and failures["medium"] == [], failures
        with netCDF4.Dataset(path) as nc:
            wind = nc["sfcWind"]
            assert (wind.units, wind.standard_name) == ("m s-1", "wind_speed")
            assert 2.0 < float(np.mean(wind[:])) < 30.0  # the toy world's ~9 m s-1
