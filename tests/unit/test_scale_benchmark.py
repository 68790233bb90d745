"""benchmarks/scale.py's records (issue 24's cost-model input) from Snakemake benchmark files:
every job of the default campaign becomes one record with the agreed keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"rule", "method", "kind", "type", "device", "max_rss_mb", "sampled_rss_mb", "seconds",
        "mean_load", "campaign", "config", "workload"}  # fmt: skip
JOBS = ["ingest", "preprocess", "compare", "lineage", "manifest"] + [
    f"{rule}_{m}"
    for rule in ("infer", "evaluate", "export")
    for m in ("bicubic", "quantile-mapping", "unet", "unet-crps")
] + ["train_unet", "train_unet-crps"]  # fmt: skip


@pytest.fixture(scope="module")
def scale():
    return load_benchmark("scale")


def test_every_job_gives_one_record_with_the_agreed_keys(scale, tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "logs").mkdir()
    for i, job in enumerate(JOBS):
        (tmp_path / "benchmarks" / f"{job}.tsv").write_text(
            header + f"{i + 1}.5\t0:00:01\t{100 + i}\t0\t0\t0\t0\t0\t0\t0\n"
        )
    # the exact peak each climai command logs wins over the sampled one, if larger
    log = "2026-12-04 INFO climai: peak RSS 90 MB\n2026-12-04 INFO climai: peak RSS {} MB\n"
    (tmp_path / "logs" / "train_unet.log").write_text(log.format(999))
    (tmp_path / "logs" / "lineage.log").write_text(log.format(1))
    args = type("Args", (), {"channels": [4, 8, 16], "patch": 16, "patches_per_step": 1})()
    args.compression, args.cores, args.nx, args.ny = 1, 2, 64, 64
    cfg = scale.campaign_config(args, 40, tmp_path / "results")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    records = scale.size_records(tmp_path, config, 2)
    assert len(records) == len(JOBS)
    for r in records:
        assert set(r) == KEYS and "fit" not in r  # run times fitted too
        assert r["device"] == "cpu" and r["workload"]["hr_bytes"] == 4 * 64 * 64 * 2 * 40
        assert (r["workload"]["steps_train"], r["workload"]["steps_test"]) == (32, 4)
    by = {(r["rule"], r["method"]): r for r in records}
    assert by[("infer", "unet-crps")]["kind"] == "emulator"
    assert by[("infer", "unet-crps")]["workload"]["members"] == 8
    assert by[("infer", "bicubic")]["kind"] == "baseline"
    assert by[("compare", None)]["kind"] is None
    assert by[("train", "unet")]["workload"]["threads"] == 2
    # the shrunk U-Net's cost per cell (channels 4-8-16), not the default's
    assert by[("train", "unet")]["workload"]["flops_per_cell"] < 0.1 * 58176
    assert by[("ingest", None)]["max_rss_mb"] == 100.0  # no log: the sampled peak
    assert by[("train", "unet")]["max_rss_mb"] == 999.0  # the last logged peak
    assert by[("train", "unet")]["sampled_rss_mb"] == 100.0 + JOBS.index("train_unet")
    assert by[("lineage", None)]["max_rss_mb"] == 100.0 + JOBS.index("lineage")
    assert len(scale.table(records, records)) == len(JOBS) + 2
