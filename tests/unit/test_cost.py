"""The cost model (climai/cost.py), job sizing (climai/sizing.py) and `climai plan` (climai/plan.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climai import cli
from climai.config import load_config
from climai.cost import (
    GPU_HOST_MB,
    Coefficients,
    MachineCosts,
    Workload,
    cpu_time_driver,
    drivers,
    estimate,
    fit,
    forward_mb,
    thread_mb,
    train_batch_mb,
)
from climai.data.prepared import PreparedDataset
from climai.io import open_store, write_store
from climai.plan import JSON_KEYS, campaign_jobs, critical_path_minutes, plan_rows
from climai.preprocess.splits import split_labels
from climai.sizing import (
    CONTROLLER_RULES,
    JobTooLarge,
    Partition,
    Sizer,
    campaign_workload,
    choose_partition,
    pooled_missing,
    read_partitions,
    retry_size,
    size_rule,
)
from climai.testing import create_prepared_test_data, write_config
from climai.training.resident import resident_bytes
from tests.conftest import REPO

LEONARDO = read_partitions(REPO / "profiles" / "leonardo" / "partitions.yaml")
ITALY = [
    str(REPO / "config" / "config.yaml"),
    str(REPO / "config" / "campaigns" / "italy-500m.yaml"),
]
TOY = [str(REPO / "config" / "config.yaml")]
W = Workload(ny=128, nx=128, scale=8, variables=2, steps_total=480, steps_train=336,
             steps_val=48, steps_test=96, epochs=6, patch=64, batch=16, patches_per_step=2,
             threads=2)  # fmt: skip


def record(rule: str, kind: str | None, w: Workload, seconds: float, rss: float) -> dict:
    return {"rule": rule, "method": None, "kind": kind, "device": "cpu", "seconds": seconds,
            "max_rss_mb": rss, "workload": w.to_record()}  # fmt: skip


@pytest.mark.parametrize("rule,kind", [("preprocess", None), ("train", "emulator"),
                                       ("infer", "emulator"), ("evaluate", "baseline")])  # fmt: skip
def test_fit_recovers_a_linear_cost_and_bounds_every_measured_memory(rule, kind):
    sizes = [replace(W, ny=n, nx=n, steps_total=s, steps_train=s * 7 // 10, steps_test=s // 5)
             for n, s in ((64, 240), (128, 480), (192, 960))]  # fmt: skip
    # the memory slope: 300 MB over the sizes, whatever the driver's unit (cells, MB)
    top = max(drivers(rule, kind, w)[1] for w in sizes)
    true = Coefficients(t0=5.0, t1=2e-6, m0=300.0, m1=300.0 / top)
    recs = []
    for i, w in enumerate(sizes):
        xt, xm = drivers(rule, kind, w)
        xt = cpu_time_driver(rule, xt, w.threads)
        noise = (-1, 1, 0)[i] * 10.0  # memory measurements off the line
        rss = true.m0 + true.m1 * xm + noise + thread_mb(rule, w.threads)  # threads' own state
        rss += forward_mb(rule, kind, w)  # an emulator's forward passes on the CPU: stated
        recs.append(record(rule, kind, w, true.t0 + true.t1 * xt, rss))
    got = fit(recs, "test").of(rule, kind)
    assert got.t0 == pytest.approx(true.t0, rel=1e-6) and got.t1 == pytest.approx(true.t1, rel=1e-6)
    assert got.m1 == pytest.approx(true.m1, rel=0.2)
    for r, w in zip(recs, sizes, strict=True):
        predicted = estimate(rule, kind, w, MachineCosts("test", 2, False, {rule: got})).mem_mb
        assert predicted >= r["max_rss_mb"] - 1e-9


def test_a_cpu_infer_adds_its_forward_passes_activations_and_a_gpu_infer_does_not():
    """infer.batch tiles × the U-Net's activations per cell (no gradients) on the host for a
    CPU infer of an emulator; on a GPU they are in its memory; a baseline runs no network (nor
    holds the three extra bands of an emulator's engine: shifted sums, finished band, writer)."""
    coefs = MachineCosts("test", 2, False, {"infer": Coefficients(1.0, 1e-6, 500.0, 1.0)})
    w = replace(W, ny=4096, nx=4096, tile=512, infer_batch=4, act_bytes_per_cell=1792.0)
    assert w.forward_mb == pytest.approx(4 * 512 * 512 * 896 / 1e6)
    assert replace(w, infer_batch=8).forward_mb == pytest.approx(2 * w.forward_mb)
    assert replace(w, ny=256).forward_mb == pytest.approx(w.forward_mb / 2)  # tiles ≤ the grid
    cpu = estimate("infer", "emulator", w, coefs).mem_mb
    gpu = estimate("infer", "emulator", w, coefs, device=coefs).mem_mb
    baseline = estimate("infer", "baseline", w, coefs).mem_mb
    assert cpu - (gpu - GPU_HOST_MB) == pytest.approx(w.forward_mb)
    assert gpu == pytest.approx(baseline + 3 * w.step_mb + GPU_HOST_MB)
    assert w.step_mb == pytest.approx(3 * 2 * 512 * 4096 * 4 / 1e6)  # 3 copies × 2 variables
    four = estimate("infer", "emulator", w, coefs, device=coefs, ranks=4).mem_mb
    assert four == pytest.approx(4 * gpu)  # each rank its own process and CUDA context


def test_a_gpu_training_holds_its_batch_on_the_gpu_and_a_cuda_context_on_the_host():
    coefs = MachineCosts("test", 2, False, {"train": Coefficients(1.0, 1e-6, 500.0, 1.0)})
    w = replace(W, batch=64, patch=128, act_bytes_per_cell=3840.0, loader="stream")
    assert train_batch_mb(w) == pytest.approx(64 * 128**2 * 3840 / 1e6)
    assert drivers("train", "emulator", w)[1] == pytest.approx(train_batch_mb(w))  # streamed
    cpu = estimate("train", "emulator", w, coefs).mem_mb
    gpu = estimate("train", "emulator", w, coefs, device=coefs, ranks=4).mem_mb
    assert cpu == pytest.approx(500.0 + train_batch_mb(w))
    assert gpu == pytest.approx(4 * (500.0 + GPU_HOST_MB))


def test_a_real_record_above_the_synthetic_line_steepens_it_beyond_the_synthetic_sizes_only():
    """Synthetic sizes on ``50 + 1 × driver`` MB; a real campaign's record (memory only) at a
    1000× larger driver, 20 % above that line: beyond the largest synthetic size the line goes
    through it, the synthetic sizes keep their own line (no excess on every small job)."""
    sizes = [replace(W, ny=n, nx=n) for n in (128, 192, 256)]
    recs = [record("preprocess", None, w, 1.0, 50.0 + drivers("preprocess", None, w)[1])
            for w in sizes]  # fmt: skip
    big = replace(W, ny=4096, nx=4096)
    x_big = drivers("preprocess", None, big)[1]
    recs.append({**record("preprocess", None, big, 9.0, 50.0 + 1.2 * x_big), "fit": "memory"})
    c = fit(recs, "test").of("preprocess", None)
    assert c.m0 == pytest.approx(50.0, rel=1e-3) and c.m1 == pytest.approx(1.0, rel=1e-3)
    assert c.xk == pytest.approx(drivers("preprocess", None, sizes[-1])[1])
    assert c.mem_mb(x_big) == pytest.approx(50.0 + 1.2 * x_big, rel=1e-6)
    assert c.mem_mb(2 * x_big) > c.mem_mb(x_big) + 1.2 * x_big  # steeper than 1.2 beyond the knot
    for w, r in zip(sizes, recs, strict=False):
        held = r["max_rss_mb"] - thread_mb("preprocess", w.threads)
        assert c.mem_mb(drivers("preprocess", None, w)[1]) == pytest.approx(held)


def test_real_records_at_several_sizes_beyond_the_knot_set_their_own_slope_over_every_one():
    """Real campaigns holding a fixed 300 MB more than the synthetic line ``50 + 1 × driver`` at
    2×, 4× and 8× the largest synthetic driver: beyond the knot the line has their slope (1, not
    the ~3 a line from the knot through the nearest one would have) and covers every one."""
    sizes = [replace(W, ny=n, nx=n) for n in (128, 192, 256)]
    recs = [record("preprocess", None, w, 1.0, 50.0 + drivers("preprocess", None, w)[1])
            for w in sizes]  # fmt: skip
    xk = drivers("preprocess", None, sizes[-1])[1]
    real = [replace(W, ny=256 * k, nx=256) for k in (2, 4, 8)]
    for w in real:
        used = 350.0 + drivers("preprocess", None, w)[1]
        recs.append({**record("preprocess", None, w, 9.0, used), "fit": "memory"})
    c = fit(recs, "test").of("preprocess", None)
    assert c.xk == pytest.approx(xk) and c.m2 == pytest.approx(1.0, rel=1e-6)
    for r in recs[3:]:
        x = drivers("preprocess", None, Workload.from_record(r["workload"]))[1]
        assert c.mem_mb(x) == pytest.approx(r["max_rss_mb"], rel=1e-6)
    assert c.mem_mb(16 * xk) == pytest.approx(350.0 + 16 * xk, rel=1e-6)
    assert c.mem_mb(xk * 1.001) >= c.mem_mb(xk)  # never below the synthetic line's knot value
    back = MachineCosts.from_json(json.loads(json.dumps(fit(recs, "test").to_json())))
    assert back.of("preprocess", None) == c


def test_a_real_record_below_the_synthetic_line_lowers_the_asks_of_larger_domains():
    """Memory is not linear at the synthetic sizes (here ``50 + 5 × driver``): a real record at
    a 1000× larger driver that used a tenth of that line's value sets the slope beyond the
    largest synthetic size, never below any record, and a campaign twice its size is asked
    by that slope, not by the synthetic one."""
    sizes = [replace(W, ny=n, nx=n, threads=1) for n in (128, 192, 256)]
    recs = [record("evaluate", "baseline", w, 1.0, 50.0 + 5 * drivers("evaluate", "baseline", w)[1])
            for w in sizes]  # fmt: skip
    big = replace(W, ny=4096, nx=4096, threads=1)
    x_big = drivers("evaluate", "baseline", big)[1]
    used = 0.1 * (50.0 + 5 * x_big)  # one thread: no thread memory to take off
    recs.append({**record("evaluate", "baseline", big, 9.0, used), "fit": "memory"})
    c = fit(recs, "test").of("evaluate", "baseline")
    assert c.m1 == pytest.approx(5.0, rel=1e-3) and 0 < c.m2 < 1.0
    assert c.mem_mb(x_big) == pytest.approx(used, rel=1e-6) and used > c.m0 + c.m1 * c.xk
    assert c.mem_mb(2 * x_big) == pytest.approx(used + c.m2 * x_big, rel=1e-6)
    assert c.mem_mb(2 * x_big) < 0.2 * (50.0 + 5 * 2 * x_big)
    for w, r in zip(sizes, recs, strict=False):
        assert c.mem_mb(drivers("evaluate", "baseline", w)[1]) == pytest.approx(r["max_rss_mb"])


def test_a_fitted_file_round_trips_and_an_unmeasured_rule_gets_the_largest_intercepts():
    costs = fit([record("ingest", None, W, 8.0, 230.0), record("compare", None, replace(W, threads=1), 11.0, 470.0)],
                "test")  # fmt: skip
    again = MachineCosts.from_json(json.loads(json.dumps(costs.to_json())))
    assert again == costs
    assert again.of("lineage", None) == Coefficients(11.0, 0.0, 470.0, 0.0)


@pytest.mark.parametrize(
    "split",
    [{"train": 0.7, "val": 0.1, "test": 0.2}, {"train": 0.6, "val": 0.25, "test": 0.15, "gap": 3},
     {"train": 0.5, "val": 0.25, "test": 0.25, "gap": 1}],
)  # fmt: skip
@pytest.mark.parametrize("steps", [480, 97, 175320])
def test_workload_splits_are_the_preprocess_splits(tmp_path, split, steps):
    cfg = load_config(write_config(tmp_path / "c.yaml", split=split,
                                   data={"target": {"steps": steps}}))  # fmt: skip
    labels = split_labels(
        steps, {k: split[k] for k in ("train", "val", "test")}, split.get("gap", 0)
    )
    w = campaign_workload(cfg)
    assert (w.steps_train, w.steps_val, w.steps_test) == tuple(
        int((labels == code).sum()) for code in range(3)
    )


def test_workload_of_a_method_reads_its_config():
    cfg = load_config(*ITALY)
    w = campaign_workload(cfg, "unet")
    assert (w.ny, w.nx, w.steps_total, w.epochs, w.patch, w.batch) == (
        800,
        1280,
        175320,
        40,
        128,
        64,
    )
    assert w.width > 3  # channels 32-256: several times the default U-Net's cost per cell
    assert w.hr_bytes == 4 * 800 * 1280 * 175320 * 2


def test_a_toy_job_never_asks_for_a_whole_node_and_a_baseline_never_for_a_gpu():
    jobs = campaign_jobs(load_config(*TOY), Sizer.load(LEONARDO, True))
    for j in jobs:
        assert j.partition is not None and j.size.mem_mb < 30_000 and j.size.cpus <= 4, j
        assert j.size.runtime <= 60, j
        if j.method in ("bicubic", "quantile-mapping"):
            assert j.size.gpus == 0 and j.partition != "boost_usr_prod", j
    assert {j.partition for j in jobs if j.size.gpus} <= {"boost_usr_prod"}


def test_italy_plans_gpus_for_emulators_only_and_counts_node_hours():
    cfg = load_config(*ITALY)
    jobs = campaign_jobs(cfg, Sizer.load(LEONARDO, True))  # every job fits a partition
    rows = plan_rows(jobs)
    assert all(tuple(r) == JSON_KEYS for r in rows)
    by = {(r["rule"], r["method"]): r for r in rows}
    for method in ("bicubic", "quantile-mapping"):  # one job, or time blocks and a gather
        infers = [r for r in rows if r["method"] == method and r["rule"].startswith("infer")]
        assert infers and all(r["gpus"] == 0 for r in infers), infers
        assert all(r["partition"] != "boost_usr_prod" for r in infers), infers
    for rule in ("evaluate", "export"):  # threads share the blocks: cores for about an hour
        assert by[(rule, "bicubic")]["gpus"] == 0 and by[(rule, "bicubic")]["runtime_min"] <= 120
    assert by[("evaluate", "bicubic")]["cpus"] > 1
    assert by[("compare", None)]["cpus"] > 1
    assert (
        by[("train", "unet")]["gpus"] > 0 and by[("train", "unet")]["partition"] == "boost_usr_prod"
    )
    assert by[("ingest", None)]["method"] is None
    assert critical_path_minutes(cfg, jobs) >= by[("train", "unet")]["runtime_min"]
    for j in jobs:
        assert j.partition is not None and j.problem is None and j.node_hours > 0, j
        limit = next(p for p in LEONARDO if p.name == j.partition)
        assert j.size.cpus <= limit.max_threads and j.size.runtime <= limit.max_runtime, j


def test_the_critical_path_puts_compare_after_the_evaluates_not_the_exports():
    """compare reads metrics, not exports: a long export ran beside compare, yet the path added
    it before compare (italy-500m: 26:23 instead of 26:20, export qm 81 min vs evaluate 78)."""
    from climai.cost import Estimate
    from climai.hpc import JobSize
    from climai.sizing import JobPlan

    cfg = load_config(REPO / "config" / "config.yaml")
    runtimes = {("ingest", None): 5, ("preprocess", None): 5, ("compare", None): 50}
    runtimes |= {("manifest", None): 1}
    for m in cfg.methods.enabled():  # bicubic, quantile-mapping, unet, unet-crps
        runtimes |= {("infer", m): 10, ("evaluate", m): 10, ("export", m): 100}
        if m.startswith("unet"):
            runtimes[("train", m)] = 20
    jobs = [
        JobPlan(r, m, 1, JobSize(cpus=1, mem_mb=100, runtime=t), None, Estimate(100, 60))
        for (r, m), t in runtimes.items()
    ]
    # unet-crps trains after unet: 10 + 20 + 20 + 10 to its infer, then export 100 beside
    # evaluate 10 + compare 50; manifest after both
    assert critical_path_minutes(cfg, jobs) == 10 + 40 + 10 + max(100, 10 + 50) + 1


SMALL_PARTITIONS = [Partition("cpu", max_runtime=30, max_threads=8, max_mem_mb=8000),
                    Partition("gpu", max_runtime=30, max_threads=8, max_mem_mb=8000, max_gpu=1)]  # fmt: skip


def test_an_emulator_infer_too_long_for_every_partition_is_split_into_blocks_that_fit(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", data={"target": {"steps": 40000}}))
    w = campaign_workload(cfg, "unet")
    sizer = Sizer.load(SMALL_PARTITIONS, True)
    slow = replace(sizer.gpu, coefficients={**sizer.gpu.coefficients,
                   "infer/unet": Coefficients(20.0, 1e-3, 0.0, 0.0)})  # fmt: skip
    block, gather = size_rule(cfg, "infer", "unet", "emulator", w, replace(sizer, gpu=slow))
    assert (block.rule, gather.rule) == ("infer_block", "infer_gather") and block.jobs >= 2
    assert block.size.runtime <= 30 and block.partition == "gpu" and gather.size.gpus == 0
    one = estimate("infer", "emulator", w, sizer.host, slow, 1, "unet")
    assert one.seconds * 1.5 / 60 > 30  # the unsplit job would not fit


@pytest.mark.parametrize(("method", "split"), [("bicubic", True), ("qdm", False)])
def test_a_baseline_infer_too_long_is_split_unless_it_needs_the_whole_series(
    tmp_path, method, split
):
    cfg = load_config(write_config(tmp_path / "c.yaml", data={"target": {"steps": 40000}},
                                   methods={"qdm": {}}))  # fmt: skip
    sizer = Sizer.load(SMALL_PARTITIONS, True)
    slow = replace(sizer.host, coefficients={**sizer.host.coefficients,
                   f"infer/{method}": Coefficients(20.0, 1e-3, 100.0, 0.0)})  # fmt: skip
    w = campaign_workload(cfg, method)
    if not split:
        with pytest.raises(JobTooLarge, match="rule infer for method 'qdm'.*run time"):
            size_rule(cfg, "infer", method, "baseline", w, replace(sizer, host=slow))
        return
    block, gather = size_rule(cfg, "infer", method, "baseline", w, replace(sizer, host=slow))
    assert (block.rule, gather.rule) == ("infer_block", "infer_gather") and block.jobs >= 2
    assert block.partition == gather.partition == "cpu" and block.size.gpus == 0
    assert block.size.runtime <= 30 and block.size.cpus == 1


def test_a_job_that_cannot_be_split_stops_naming_limit_estimate_and_key(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", data={"target": {"steps": 40000}}))
    sizer = Sizer.load(SMALL_PARTITIONS, True)
    huge = replace(sizer.host, coefficients={**sizer.host.coefficients,
                   "infer/bicubic": Coefficients(1.0, 0.0, 100.0, 1000.0)})  # fmt: skip
    with pytest.raises(JobTooLarge) as err:
        size_rule(cfg, "infer", "bicubic", "baseline", campaign_workload(cfg, "bicubic"),
                  replace(sizer, host=huge))  # fmt: skip
    text = str(err.value)
    assert "rule infer for method 'bicubic'" in text and "max_mem_mb 8000 MB of cpu" in text
    assert "estimated memory" in text and "change domain" in text


def test_the_partition_is_the_tightest_that_fits():
    from climai.hpc import JobSize

    assert choose_partition(JobSize(2, 1000, 10), LEONARDO).name == "lrd_all_serial"
    assert choose_partition(JobSize(8, 1000, 10), LEONARDO).name == "dcgp_usr_prod"
    assert choose_partition(JobSize(8, 1000, 10, gpus=1), LEONARDO).name == "boost_usr_prod"
    assert choose_partition(JobSize(8, 1000, 5000), LEONARDO) is None


def test_plan_json_has_exactly_the_documented_keys(capsys):
    profile = str(REPO / "profiles" / "leonardo")
    assert cli.main(["plan", "--configfile", TOY[0], "--profile", profile, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(list(r) == list(JSON_KEYS) for r in rows)
    assert {r["method"] for r in rows if r["rule"] in ("ingest", "preprocess", "compare")} == {None}
    assert {r["partition"] for r in rows if r["rule"] not in CONTROLLER_RULES} <= {
        "lrd_all_serial", "dcgp_usr_prod", "boost_usr_prod"}  # fmt: skip
    assert cli.main(["plan", "--configfile", TOY[0], "--profile", profile]) == 0
    assert "node-hours" in capsys.readouterr().out


def test_plan_lists_the_campaigns_own_rules_and_reads_config_yaml_from_any_folder(
    tmp_path, monkeypatch, capsys
):
    """A rule of the campaign's rule files gets the profile's default-resources (what Snakemake
    gives it), counted like climai's own; the workflow's config/config.yaml is merged wherever
    climai plan runs (as Snakemake merges it), so the jobs do not depend on the folder."""
    profile = str(REPO / "profiles" / "leonardo")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "bc.smk").write_text(
        "rule bias_correct:\n    output: 'x'\n    shell: 'touch {output}'\n\n"
        "rule  other_step :\n    output: 'y'\n    shell: 'touch {output}'\n"
    )
    (tmp_path / "c.yaml").write_text(f"rules: [rules/bc.smk]\nresults: {tmp_path / 'results'}\n")
    monkeypatch.chdir(tmp_path)  # no config/config.yaml here
    assert (
        cli.main(["plan", "--configfile", "c.yaml", "--profile", profile, "--format", "json"]) == 0
    )
    rows = {(r["rule"], r["method"]): r for r in json.loads(capsys.readouterr().out)}
    for rule in ("bias_correct", "other_step"):
        row = rows[(rule, None)]
        assert (row["cpus"], row["mem_mb"], row["runtime_min"], row["partition"]) == (
            1, 7000, 60, "lrd_all_serial")  # fmt: skip
        assert 0 < row["node_hours"] < 1
    # a local plan (no profile) counts them too: before, they were left out of its total
    assert cli.main(["plan", "--configfile", "c.yaml", "--format", "json"]) == 0
    local = {(r["rule"], r["method"]): r for r in json.loads(capsys.readouterr().out)}
    for rule in ("bias_correct", "other_step"):
        row = local[(rule, None)]
        assert (row["cpus"], row["mem_mb"], row["partition"]) == (1, 1000, None)
    assert cli.main(["plan", "--configfile", "c.yaml"]) == 0
    assert f"total: {len(local)} jobs" in capsys.readouterr().out
    monkeypatch.chdir(REPO)
    (tmp_path / "c2.yaml").write_text(f"results: {tmp_path / 'results'}\n")
    assert cli.main(["plan", "--configfile", str(tmp_path / "c2.yaml"), "--profile", profile,
                     "--format", "json"]) == 0  # fmt: skip
    from_repo = json.loads(capsys.readouterr().out)
    assert {(r["rule"], r["method"]) for r in from_repo} == set(rows) - {
        ("bias_correct", None), ("other_step", None)}  # fmt: skip
    assert ("infer", "nearest") not in rows  # config.yaml sets nearest to null


# --- a split infer: blocks gathered into the unsplit store ------------------------------------

SMALL = {"epochs": 1, "patch": 16, "batch": 4, "channels": [8, 16]}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["unet", "unet-crps", "bicubic", "quantile-mapping"])
def test_blocks_gathered_equal_the_unsplit_infer_bitwise(tmp_path, method):
    from climai.io import open_store
    from climai.testing import prepare_campaign

    config = prepare_campaign(
        tmp_path, methods={"bicubic": {}, "quantile-mapping": {}, "unet": SMALL,
                           "unet-crps": {**SMALL, "members": 3}},
        infer={"time_block": 2, "tile": 16, "overlap": 8, "progress": False},
    )  # fmt: skip
    common = ["--configfile", str(config), "--method", method, "--threads", "1"]
    if method == "unet-crps":
        assert cli.main(["train", *common[:3], "unet", "--threads", "1"]) == 0
    if method.startswith("unet"):
        assert cli.main(["train", *common]) == 0
    root = tmp_path / "results" / "tiny" / "downscaled" / method
    assert cli.main(["infer", *common]) == 0
    whole = open_store(root / "test.zarr").load()
    (root / "test.zarr").rename(root / "whole.zarr")
    for i in range(3):  # 10 test steps in 5 chunks of 2: blocks of 1, 2 and 2 chunks
        assert cli.main(["infer_block", *common, "--block", str(i), "--blocks", "3"]) == 0
    gather = ["infer_gather", *common[:-2], "--threads", "2", "--blocks", "3"]  # copies in threads
    assert cli.main(gather) == 0
    gathered = open_store(root / "test.zarr").load()
    xr.testing.assert_identical(whole, gathered)
    for v in gathered.data_vars:
        assert whole[v].values.tobytes() == gathered[v].values.tobytes(), v  # bitwise, NaNs too
    block1 = open_store(root / "blocks" / "test_1.zarr").load()
    assert np.isnan(block1["tas"].isel(time=0).values).all() or not np.array_equal(
        block1["tas"].isel(time=0).values, whole["tas"].isel(time=0).values
    )  # a block holds only its own steps


@pytest.mark.slow
def test_plan_of_italy_runs_as_a_command():
    res = subprocess.run(
        [sys.executable, "-m", "climai.cli", "plan", "--configfile", ITALY[0], "--configfile",
         ITALY[1], "--profile", str(Path(REPO / "profiles" / "leonardo"))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "boost_usr_prod" in res.stdout and "critical path" in res.stdout, res.stderr
    assert res.returncode == 0 and "does not fit" not in res.stdout, res.stdout + res.stderr
    assert "infer " in res.stdout and "node-hours" in res.stdout


def test_the_band_buffers_of_the_cost_model_are_the_engines_time_block():
    """``Workload.band_mb`` counts the steps the engine puts in a block (memory budget, chunk cap,
    test split), so the infer memory driver follows the engine's own sizing."""
    from climai.config import InferConfig
    from climai.inference.engine import block_steps

    for ny, nx, members, test in ((128, 128, 1, 96), (512, 512, 1, 384), (512, 512, 8, 384),
                                  (1280, 800, 1, 17532), (3496, 7000, 1, 7)):  # fmt: skip
        w = replace(W, ny=ny, nx=nx, members=members, steps_test=test)
        per_step = 3 * members * 2 * min(512, ny) * nx * 4
        steps = block_steps(InferConfig(), per_step, min(ny, 384) * min(nx, 384))
        assert w.band_mb == pytest.approx(min(test, steps) * per_step / 1e6)


def test_a_campaign_on_another_campaigns_prepared_data_is_sized_from_that_store(tmp_path):
    """``prepared: {campaign: src}`` (the transfer campaigns): no ingest of its own, so the grid
    is that prepared store's once it exists (a real source's reused data keys are not read: the
    transfer campaign was sized as a whole node before); a pooled emulator's training budget is
    its ``pooled_patches``."""
    results = tmp_path / "results"
    cfg = load_config(write_config(
        tmp_path / "c.yaml", results=str(results), prepared={"campaign": "src"},
        variables=[{"name": "pr", "kind": "precipitation", "units": "mm h-1"}],
        methods={"unet": {"train_on": ["src", "other"], "pooled_patches": 320, "epochs": 2,
                          "normalisation": "physical"}},
    ))  # fmt: skip
    w = campaign_workload(cfg)  # src not prepared yet: the (synthetic) data keys' size
    assert (w.steps_total, w.ny, w.nx) == (48, 32, 32)
    meta = results / "src" / "prep" / "dataset.zarr" / f"hr_{cfg.variable_names[0]}" / "zarr.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"shape": [40, 96, 64]}))
    w = campaign_workload(cfg, "unet")
    assert (w.steps_total, w.ny, w.nx, w.pooled_patches) == (40, 96, 64, 320)
    own = replace(w, pooled_patches=0)
    extra = drivers("train", "emulator", w)[0] - drivers("train", "emulator", own)[0]
    per_epoch = 320 - w.steps_train * w.patches_per_step
    assert extra == pytest.approx(2 * per_epoch * w.patch**2 * w.width)


def test_a_pooled_training_is_sized_by_the_train_on_campaigns_data_it_holds(tmp_path):
    """A ``train_on`` training holds the pooled campaigns' splits and coarsened copies, not its
    own campaign's: its memory driver is their bytes (the protocol's mrms-conus ``unet`` was
    asked 760 MB and used 1,140 when sized by its own streamed CONUS store). Until they are
    prepared, its training is sized as an unknown grid's (no plan: climai.hpc.JOB_SIZES)."""
    results = tmp_path / "results"
    cfg = load_config(write_config(
        tmp_path / "c.yaml", results=str(results),
        variables=[{"name": "pr", "kind": "precipitation", "units": "mm h-1"}],
        methods={"unet": {"train_on": ["a", "b"], "epochs": 2, "normalisation": "physical",
                          "grid_channel": True, "coarsen_sources": [2], "patch": 16}},
    ))  # fmt: skip
    assert pooled_missing(cfg, "unet") == ["a", "b"]
    sizer = Sizer.load(None, False)
    assert ("train", "unet") not in {(j.rule, j.method) for j in campaign_jobs(cfg, sizer)}
    for name, n in (("a", 64), ("b", 128)):
        write_store(
            create_prepared_test_data(nx=n, ny=n, steps=20),
            results / name / "prep" / "dataset.zarr",
        )
    assert pooled_missing(cfg, "unet") == []
    w = campaign_workload(cfg, "unet")
    m = cfg.methods.get("unet")
    preps = [PreparedDataset(open_store(results / n / "prep" / "dataset.zarr")) for n in "ab"]
    held = sum(resident_bytes(p, m, ["pr"], True, True) for p in preps)
    assert held > 0 and w.pooled_bytes == held
    steps = sum(p.split_size("train") for p in preps)
    assert w.pooled_patches == steps * m.patches_per_step  # no pooled_patches: every train step
    own = drivers("train", "emulator", replace(w, pooled_patches=0, pooled_bytes=0))[1]
    assert drivers("train", "emulator", w)[1] - own == pytest.approx(
        held / 1e6 - ((w.steps_train + w.steps_val) * w.cells * 4 * (1 + 1 / 64) / 1e6)
    )
    jobs = {(j.rule, j.method): j for j in campaign_jobs(cfg, sizer)}
    bigger = replace(w, pooled_bytes=w.pooled_bytes + 10**9)
    asked = size_rule(cfg, "train", "unet", "emulator", bigger, sizer)[0].size.mem_mb
    assert asked > jobs[("train", "unet")].size.mem_mb
    # sized at DAG-build time in every Snakemake job: without importing torch (~1.5 s each)
    code = (
        "import sys\n"
        "from climai.config import load_config\n"
        "from climai.sizing import campaign_workload\n"
        f"w = campaign_workload(load_config({str(tmp_path / 'c.yaml')!r}), 'unet')\n"
        "print(w.pooled_bytes, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.split() == [str(held), "False"], out.stderr[-2000:]


def test_plan_shows_what_a_profiles_set_resources_asks(tmp_path, capsys):
    """leonardo-debug's set-resources gives every job 30 minutes, and a user's profile may
    override cores, memory, GPUs and the partition: Snakemake submits those, so the plan (its
    walltime, partition and node-hours) shows them too. It printed the rules' own sizes."""
    debug = str(REPO / "profiles" / "leonardo-debug")
    assert cli.main(["plan", "--configfile", TOY[0], "--profile", debug, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["runtime_min"] for r in rows} == {30}
    # the QOS each job asks: its partition's debug QOS (qos.yaml), none on the serial partition
    qos = {(r["rule"], r["method"]): (r["partition"], r["qos"]) for r in rows}
    assert qos[("train", "unet")] == ("boost_usr_prod", "boost_qos_dbg")
    assert qos[("ingest", None)] == ("lrd_all_serial", None)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "partitions.yaml").write_text(
        (REPO / "profiles" / "leonardo" / "partitions.yaml").read_text()
    )
    (mine / "config.yaml").write_text(
        "slurm-partition-config: partitions.yaml\nset-resources:\n"
        "  evaluate: {slurm_partition: dcgp_usr_prod, cpus_per_task: 112, mem_mb: 480000}\n"
        "  train: {gres: 'gpu:4', runtime: 2h, qos: boost_qos_lprod}\n"
        "  export: {runtime: 1d12h, mem: 64G}\n"
    )
    assert (
        cli.main(["plan", "--configfile", TOY[0], "--profile", str(mine), "--format", "json"]) == 0
    )
    rows = {(r["rule"], r["method"]): r for r in json.loads(capsys.readouterr().out)}
    evaluate = rows[("evaluate", "bicubic")]
    assert (evaluate["partition"], evaluate["cpus"], evaluate["mem_mb"]) == (
        "dcgp_usr_prod", 112, 480000)  # fmt: skip
    assert evaluate["node_hours"] == pytest.approx(
        evaluate["runtime_min"] / 60, abs=1e-3
    )  # a whole node
    train = rows[("train", "unet")]
    assert (train["gpus"], train["runtime_min"], train["partition"]) == (4, 120, "boost_usr_prod")
    assert train["qos"] == "boost_qos_lprod" and evaluate["qos"] is None
    assert cli.main(["plan", "--configfile", TOY[0], "--profile", str(mine)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[3:5] == ["partition", "qos"]
    assert next(line for line in table if line.startswith("train")).split()[3:5] == [
        "boost_usr_prod", "boost_qos_lprod"]  # fmt: skip
    export = rows[("export", "bicubic")]  # Snakemake's strings with units: 1d12h, 64G
    assert (export["runtime_min"], export["mem_mb"]) == (2160, 64000)


def test_compare_and_manifest_run_beside_snakemake_only_while_seconds_of_one_core_work():
    """They were localrules always: italy-500m's compare (64 cores, 2:46 asked) and manifest
    (5:29 of checksums) ran with one thread on the node of Snakemake's controller (a Leonardo
    login node kills a process after 10 CPU minutes) while `climai plan` listed them as jobs on
    dcgp_usr_prod. Now a large one is a SLURM job and the plan says which run locally."""
    from climai.sizing import beside_snakemake

    sizer = Sizer.load(LEONARDO, True)
    italy = load_config(TOY[0], str(REPO / "config/campaigns/italy-500m.yaml"))
    big = {j.rule: j for j in campaign_jobs(italy, sizer) if j.method is None}
    assert not beside_snakemake(big["compare"]) and not beside_snakemake(big["manifest"])
    toy = {j.rule: j for j in campaign_jobs(load_config(TOY[0]), sizer) if j.method is None}
    assert beside_snakemake(toy["compare"]) and beside_snakemake(toy["manifest"])
    assert not beside_snakemake(None) and not beside_snakemake(toy["ingest"])
    snakefile = (REPO / "Snakefile").read_text()
    static = snakefile.split("localrules:", 1)[1].split("include:", 1)[0]
    assert "compare" not in static and "manifest" not in static
    for rule, path in [("compare", "evaluate"), ("manifest", "manifest"),
                       ("sweep", "experiments"), ("lineage", "experiments")]:  # fmt: skip
        text = (REPO / f"workflow/rules/{path}.smk").read_text()
        assert f'rule {rule}:\n    localrule: runs_beside_snakemake("{rule}")' in text


def test_plan_shows_the_jobs_run_beside_snakemake_without_partition_or_node_hours(capsys):
    profile = str(REPO / "profiles" / "leonardo")
    assert cli.main(["plan", "--configfile", TOY[0], "--profile", profile, "--format", "json"]) == 0
    rows = {(r["rule"], r["method"]): r for r in json.loads(capsys.readouterr().out)}
    for rule in ("compare", "manifest"):
        assert (rows[(rule, None)]["partition"], rows[(rule, None)]["node_hours"]) == (None, 0.0)
    italy = str(REPO / "config/campaigns/italy-500m.yaml")
    assert cli.main(["plan", "--configfile", italy, "--profile", profile, "--format", "json"]) == 0
    rows = {(r["rule"], r["method"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("compare", None)]["partition"] == "dcgp_usr_prod"


def test_plan_takes_the_profile_from_snakemake_profile_as_a_run_does(monkeypatch, capsys):
    """With `export SNAKEMAKE_PROFILE=leonardo` a run uses the profile; `climai plan` without
    --profile printed a local plan (no partitions, 1-minute limits, no GPUs)."""
    profile = str(REPO / "profiles" / "leonardo")
    monkeypatch.delenv("CLIMAI_PARTITIONS", raising=False)
    assert cli.main(["plan", "--configfile", TOY[0], "--profile", profile, "--format", "json"]) == 0
    flagged = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("SNAKEMAKE_PROFILE", profile)
    assert cli.main(["plan", "--configfile", TOY[0], "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == flagged


def test_a_retry_asks_attempt_times_the_time_and_memory_within_its_partition():
    """retries: 1 resubmitted a job that hit its time limit with the same limit, so an infer
    (which does not resume) timed out again; now the second attempt asks twice the minutes and
    memory, never beyond the partition it was planned in."""
    from climai.hpc import JobSize

    booster = next(p for p in LEONARDO if p.name == "boost_usr_prod")
    size = JobSize(cpus=32, mem_mb=200_000, runtime=600, gpus=4)
    assert retry_size(size, 1, booster) == size
    assert retry_size(size, 2, booster) == JobSize(32, 400_000, 1200, 4)
    third = retry_size(size, 3, booster)
    assert (third.runtime, third.mem_mb) == (booster.max_runtime, booster.max_mem_mb)
    assert booster.fits(third) and choose_partition(third, LEONARDO) == booster
    assert retry_size(size, 2, None) == size  # a local run: no partition, nothing to grow into
