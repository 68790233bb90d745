"""benchmarks/gpu_check.sh, the prepared GPU check (issue 17, item 7), in its CPU-smoke mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

PARTS = ["gpu_benchmark", "campaign", "downscale", "verify"]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_part_and_prints_one_summary(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    env.pop("GPU_CHECK_WORK", None)
    run = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(run.stdout)  # the summary is all that goes to stdout
    assert summary == json.loads((tmp_path / "gpu_check.json").read_text())
    assert "==> train_unet.log <==" in (tmp_path / "gpu_check_logs.txt").read_text()
    assert summary["mode"] == "cpu-smoke" and summary["ok"] is True
    assert list(summary["parts"]) == PARTS
    for name, part in summary["parts"].items():
        assert part["status"] == "ok", (name, part)
        assert part["seconds"] > 0

    bench = summary["parts"]["gpu_benchmark"]["result"]
    assert bench["samples_per_s"] > 0 and bench["device"] == "cpu"

    campaign = summary["parts"]["campaign"]
    assert set(campaign["stage_wall_seconds"]) == {
        "ingest",
        "preprocess",
        "train_unet",
        "infer_unet",
        "infer_bicubic",
        "evaluate_unet",
        "evaluate_bicubic",
    }
    assert campaign["train_samples_per_s_median"] > 0
    assert campaign["train_wall_seconds"] > 0 and campaign["infer_wall_seconds"] > 0
    assert set(campaign["unet_rmse_over_bicubic"]) == {"tas", "pr"}
    assert all(0 < r < 2 for r in campaign["unet_rmse_over_bicubic"].values())

    downscale = summary["parts"]["downscale"]
    assert downscale["model"].startswith("the campaign part's unet")
    (first,) = downscale["runs"]
    size = downscale["hr_size"]
    assert first["output_sizes"] == {"time": downscale["steps"], "y": size, "x": size}
    assert first["hr_mpixel_per_s"] > 0 and first["output_has_values"] is True
    assert first["peak_gpu_memory_gib"] is None  # no GPU here

    verify = summary["parts"]["verify"]
    assert verify["artifacts"] == len(verify["results"]) >= 9
    assert all(line.startswith("OK") for line in verify["results"])
