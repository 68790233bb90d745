"""benchmarks/transfer_configs.py writes the leave-one-source-out campaigns that are committed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_the_generator_writes_the_committed_transfer_configs(tmp_path: Path):
    campaigns = tmp_path / "config" / "campaigns"
    campaigns.mkdir(parents=True)
    for name in ("knmi", "fmi", "mrms-conus", "bom-melbourne"):
        shutil.copy(REPO / "config" / "campaigns" / f"{name}.yaml", campaigns)
    script = REPO / "benchmarks" / "transfer_configs.py"
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True)
    written = sorted(campaigns.glob("transfer-*.yaml"))
    assert [p.name for p in written] == sorted(
        p.name for p in (REPO / "config" / "campaigns").glob("transfer-*.yaml")
    )
    for p in written:
        assert p.read_text() == (REPO / "config" / "campaigns" / p.name).read_text(), p.name
