"""The preprocess stage end to end on tiny stores: masks, layout, provenance, schedulers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from climai.config import config_sha256, stage_slice, validate_config
from climai.io import open_store, write_store
from climai.preprocess.dataset import Layout, build_dataset, stats_graph, with_hr_layout
from climai.stages import StageContext
from climai.stages.preprocess import run as run_preprocess
from climai.testing import create_masked_test_data, create_test_data, radar_mask

VARIABLES = {"tas": "temperature", "pr": "precipitation"}


def _ingested(root: Path, masked: bool = True, **pre: object) -> StageContext:
    cfg = validate_config(
        {
            "campaign": "prep",
            "results": str(root),
            "scale": 4,
            "data": {"target": {"nx": 32, "ny": 32, "steps": 40}},
            "methods": {"unet": {"patch": 32}},
            "preprocess": {"time_chunk": 6, "tile": 16, "progress": False, **pre},
        }
    )
    factory = create_masked_test_data if masked else create_test_data
    target, static = factory(nx=32, ny=32, steps=40)
    ctx = StageContext(cfg, config_sha256(stage_slice(cfg, "preprocess")), "preprocess", 2)
    write_store(target.chunk({"time": 10}), ctx.paths.target)
    write_store(static, ctx.paths.static)
    return ctx


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> StageContext:
    ctx = _ingested(tmp_path_factory.mktemp("threads"))
    run_preprocess(ctx)
    return ctx


def test_radar_mask_survives_to_hr_and_lr(threaded):
    ds = open_store(threaded.paths.dataset)
    seen = radar_mask(32, 32)
    hr = ds["hr_pr"].values
    assert (np.isnan(hr) == ~seen[None]).all()  # HR keeps the mask exactly
    assert np.isfinite(ds["hr_tas"].values).all()  # the complete variable stays complete
    frac = seen.reshape(8, 4, 8, 4).mean(axis=(1, 3))
    lr = ds["lr_pr"].values
    assert (np.isnan(lr) == (frac < 0.5)[None]).all()  # valid iff ≥ min_valid_fraction
    assert 0 < (frac < 0.5).sum() < frac.size
    target = open_store(threaded.paths.target)["pr"].values
    ok = frac >= 0.5
    blocks = target.reshape(40, 8, 4, 8, 4)
    expected = np.where(np.isnan(blocks), 0, blocks).sum(axis=(2, 4)) / np.maximum(
        np.isfinite(blocks).sum(axis=(2, 4)), 1
    )
    np.testing.assert_allclose(lr[:, ok], expected[:, ok], rtol=1e-5)


def test_stats_json_layout_and_train_only_counts(threaded):
    stats = json.loads(threaded.paths.stats.read_text())
    ds = open_store(threaded.paths.dataset)
    train = ds["split"].values == 0
    pr = ds["hr_pr"].values[train]
    assert stats["pr"]["count"] == np.isfinite(pr).sum()  # masked cells never count
    assert stats["pr"]["mean"] == pytest.approx(np.nanmean(np.log1p(pr.astype(np.float64))))
    assert stats["tas"]["std"] == pytest.approx(ds["hr_tas"].values[train].std(), rel=1e-5)
    for var in VARIABLES:
        q = stats[var]["quantiles"]
        assert len(q["hr"]) == len(q["lr_bicubic"]) == len(q["probabilities"]) == 101
        assert np.all(np.diff(q["hr"]) >= 0)
    assert set(stats["static"]) == {"orography", "lsm"}
    assert set(stats["splits"]) == {"train", "val", "test"}


def test_dataset_layout_and_provenance(threaded):
    group = zarr.open_group(threaded.paths.dataset, mode="r")
    hr = group["hr_tas"]
    assert hr.shards == (6, 32, 32) and hr.chunks == (1, 16, 16)
    assert group["lr_tas"].chunks == (6, 8, 8)
    assert type(hr.compressors[0]).__name__ == "BloscCodec"
    attrs = dict(group.attrs)
    for key in ("climai_version", "config_sha256", "git_commit", "created_by_rule"):
        assert attrs[key]
    assert attrs["config_sha256"] == threaded.config_sha256 and attrs["scale"] == 4
    ds = open_store(threaded.paths.dataset)
    assert set(ds.data_vars) >= {"hr_tas", "lr_tas", "hr_pr", "lr_pr", "static_orography", "split"}


@pytest.mark.slow
def test_distributed_run_is_bitwise_identical_to_threaded(threaded, tmp_path):
    ctx = _ingested(tmp_path, scheduler="local", distributed={"workers": 2})
    run_preprocess(ctx)
    a, b = open_store(threaded.paths.dataset), open_store(ctx.paths.dataset)
    for var in a.data_vars:
        assert a[var].dtype == b[var].dtype
        np.testing.assert_array_equal(a[var].values, b[var].values, strict=True)
    sa, sb = (json.loads(c.paths.stats.read_text()) for c in (threaded, ctx))
    assert sa == sb


def test_failed_statistics_leave_no_dataset(tmp_path):
    ctx = _ingested(tmp_path, masked=False)
    target = open_store(ctx.paths.target)
    target["tas"] = target["tas"] * 0 + 280.0  # no variance: stats fail inside the write pass
    ds = build_dataset(
        target,
        open_store(ctx.paths.static),
        VARIABLES,
        4,
        {"train": 0.7, "val": 0.1, "test": 0.2},
        layout=Layout(time_chunk=6, tile=16),
    )
    with pytest.raises(
        ValueError, match="'tas': the train split has no valid values or no variance"
    ):
        write_store(ds, ctx.paths.dataset, compute_with=[stats_graph(ds, VARIABLES, 4, 11)])
    assert not ctx.paths.dataset.exists()
    assert list(ctx.paths.dataset.parent.iterdir()) == []


def test_time_range_split_and_gap_reach_the_dataset(tmp_path):
    target, static = create_test_data(nx=16, ny=16, steps=24)
    t = target["time"].values.astype("datetime64[m]").astype(str)
    split = {"train": [t[0], t[11]], "val": [t[14], t[17]], "test": [t[20], t[23]]}
    ds = build_dataset(target, static, VARIABLES, 4, split)
    assert ds["split"].values.tolist() == [0] * 12 + [-1] * 2 + [1] * 4 + [-1] * 2 + [2] * 4


def test_target_in_the_dataset_layout_is_linked_not_reencoded(tmp_path):
    ctx = _ingested(tmp_path, masked=True)
    target, _ = create_masked_test_data(nx=32, ny=32, steps=40)
    layout = Layout(time_chunk=6, tile=16)
    write_store(with_hr_layout(target, ["tas", "pr"], layout), ctx.paths.target)
    run_preprocess(ctx)
    shard = next((ctx.paths.dataset / "hr_pr" / "c").rglob("*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    source = ctx.paths.target / "pr" / shard.relative_to(ctx.paths.dataset / "hr_pr")
    assert shard.stat().st_ino == source.stat().st_ino  # the same file, not a copy
    ds = open_store(ctx.paths.dataset)
    np.testing.assert_array_equal(ds["hr_pr"].values, target["pr"].values)
    assert ds["hr_pr"].attrs["units"] == "mm h-1"
    assert np.isnan(ds["lr_pr"].values).any() and np.isfinite(ds["lr_tas"].values).all()


def test_slurm_cluster_jobs_are_charged_to_slurm_account(monkeypatch):
    from climai.config import PreprocessConfig
    from climai.preprocess.parallel import slurm_cluster

    cfg = PreprocessConfig(
        scheduler="slurm", distributed={"queue": "boost_usr_prod", "threads_per_worker": 4}
    )
    monkeypatch.delenv("SLURM_ACCOUNT", raising=False)
    with pytest.raises(ValueError, match="SLURM_ACCOUNT is not set"):
        slurm_cluster(cfg)
    monkeypatch.setenv("SLURM_ACCOUNT", "proj123")
    with slurm_cluster(cfg) as cluster:  # no job is submitted: only the script is built
        script = cluster.job_script()
    assert "#SBATCH -A proj123" in script and "#SBATCH -p boost_usr_prod" in script
    assert "--nthreads 4" in script


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("queue", "lrd_all_serial\ntouch /tmp/pwned"),
        ("queue", "dcgp_usr_prod; rm -rf ~"),
        ("walltime", "01:00:00\ntouch /tmp/pwned"),
        ("walltime", "1 hour"),
    ],
)
def test_slurm_worker_queue_and_walltime_cannot_inject_lines_into_the_job_script(key, value):
    """dask-jobqueue writes ``#SBATCH -p <queue>`` / ``-t <walltime>`` unquoted into a bash
    script: a newline there was a command run in every worker job. The config refuses it."""
    from climai.config import ConfigError

    with pytest.raises(ConfigError, match=rf"preprocess\.distributed\.{key}"):
        validate_config({"preprocess": {"scheduler": "slurm", "distributed": {key: value}}})


def test_slurm_worker_partition_and_time_limits_of_every_slurm_form_are_accepted():
    for queue, walltime in [("dcgp_usr_prod", "30"), ("a,b.c-d", "1-00:00:00"), (None, "2-12")]:
        cfg = validate_config(
            {"preprocess": {"distributed": {"queue": queue, "walltime": walltime}}}
        )
        assert (cfg.preprocess.distributed.queue, cfg.preprocess.distributed.walltime) == (
            queue,
            walltime,
        )
