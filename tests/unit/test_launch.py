"""``climai train``'s launcher: one process, torchrun per node, or srun + torchrun across nodes."""

from __future__ import annotations

import sys

import pytest

from climai import cli
from climai.launch import (
    LaunchError,
    expand_hostlist,
    job_gpus,
    job_nodes,
    logged_peak_rss_mb,
    plan_launch,
    rendezvous_port,
    with_threads,
)

ARGS = ["train", "--config-json", '{"campaign": "a b; rm -rf /"}', "--method", "unet"]
ARGS_T = [*ARGS, "--threads", "32"]


@pytest.mark.parametrize(
    ("env", "gpus"),
    [
        ({}, 0),
        ({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4),
        ({"CUDA_VISIBLE_DEVICES": ""}, 0),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, 0),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, 0),
        ({"SLURM_GPUS_ON_NODE": "2"}, 2),
        ({"SLURM_GPUS_PER_NODE": "gpu:4"}, 4),
        ({"SLURM_JOB_GPUS": "0,1,2"}, 3),
        ({"CUDA_VISIBLE_DEVICES": "1", "SLURM_GPUS_ON_NODE": "4"}, 1),  # the step's share wins
    ],
)
def test_job_gpus_reads_slurm_and_cuda_variables(env, gpus):
    assert job_gpus(env) == gpus


def test_job_nodes():
    assert job_nodes({}) == 1
    assert job_nodes({"SLURM_JOB_NUM_NODES": "3"}) == 3
    assert job_nodes({"SLURM_NNODES": "2"}) == 2
    # Inside a Snakemake job step: SLURM_NNODES is the step's (1), the job's node list counts.
    assert job_nodes({"SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "lrdn[0007-0008]"}) == 2


def test_expand_hostlist():
    assert expand_hostlist("vm") == ["vm"]
    assert expand_hostlist("lrdn[0001-0003,0010],login01") == [
        "lrdn0001", "lrdn0002", "lrdn0003", "lrdn0010", "login01",
    ]  # fmt: skip
    assert expand_hostlist("n[8-10]-ib") == ["n8-ib", "n9-ib", "n10-ib"]
    with pytest.raises(LaunchError, match="several bracket groups"):
        expand_hostlist("r[1-2]n[1-2]")


def test_master_is_the_first_node_of_the_job():
    env = {"SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_NODELIST": "lrdn[0005,0009]", "SLURM_NNODES": "1"}
    plan = plan_launch(ARGS_T, {**env, "SLURM_JOB_ID": "1234567"}, cuda_devices=4, threads=32)
    assert plan.nodes == 2 and "--rdzv_endpoint=lrdn0005:24567" in plan.argv


def test_each_job_meets_on_its_own_port_and_needs_a_job_id():
    env = {"SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_NODELIST": "n[1-2]"}
    ports = {
        next(
            a
            for a in plan_launch(ARGS_T, {**env, "SLURM_JOB_ID": j}, 4, 32).argv
            if "rdzv_end" in a
        )
        for j in ("100", "101", "10100")
    }
    assert ports == {"--rdzv_endpoint=n1:20100", "--rdzv_endpoint=n1:20101"}  # 10100 wraps
    assert all(20000 <= rendezvous_port(str(j)) <= 29999 for j in (0, 9999, 10**9 + 7))
    with pytest.raises(LaunchError, match="SLURM_JOB_ID is not set"):
        plan_launch(ARGS_T, env, 4, 32)


def test_with_threads_replaces_both_spellings():
    assert with_threads(["train", "--threads", "32", "--method", "unet"], 8) == [
        "train", "--method", "unet", "--threads", "8",
    ]  # fmt: skip
    assert with_threads(["train", "--threads=32"], 4) == ["train", "--threads", "4"]


def test_cpu_allocation_stays_one_process():
    plan = plan_launch(ARGS_T, {}, cuda_devices=0, threads=32)
    assert not plan.distributed and plan.argv == []
    assert "no GPU in this job" in plan.reason


def test_gpus_in_the_job_but_no_cuda_in_torch_stay_one_process():
    plan = plan_launch(ARGS_T, {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, cuda_devices=0, threads=32)
    assert not plan.distributed
    assert plan.reason.startswith("the job has 4 GPU(s) but torch sees no CUDA device")


def test_one_gpu_is_one_process():
    plan = plan_launch(ARGS_T, {"CUDA_VISIBLE_DEVICES": "0"}, cuda_devices=1, threads=8)
    assert not plan.distributed and plan.nproc_per_node == 1


def test_four_gpus_on_one_node_run_torchrun_with_a_share_of_the_cores_each():
    plan = plan_launch(ARGS_T, {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, cuda_devices=4, threads=32)
    assert plan.distributed and plan.nproc_per_node == 4
    assert plan.argv == [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4", "--standalone",
        "--nnodes=1", "-m", "climai.cli", *ARGS, "--threads", "8",
    ]  # fmt: skip
    # The config JSON is one argument, untouched: no shell ever sees it.
    assert '{"campaign": "a b; rm -rf /"}' in plan.argv


def test_gpus_are_capped_by_what_torch_sees():
    plan = plan_launch(ARGS_T, {"SLURM_GPUS_ON_NODE": "4"}, cuda_devices=2, threads=32)
    assert plan.nproc_per_node == 2 and "--nproc_per_node=2" in plan.argv


def test_several_nodes_use_srun_and_a_c10d_rendezvous_on_the_first_node():
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "77"}
    plan = plan_launch(ARGS_T, env, cuda_devices=4, threads=32, master_addr="lrdn0001")
    assert plan.argv[:6] == [
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--overlap",
        "--kill-on-bad-exit=1",
    ]  # fmt: skip
    tail = plan.argv[6:]
    assert tail[:4] == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4"]
    assert {"--nnodes=2", "--rdzv_backend=c10d", "--rdzv_endpoint=lrdn0001:20077",
            "--rdzv_id=77"} <= set(tail)  # fmt: skip
    assert plan.nodes == 2 and plan.nproc_per_node == 4


def test_several_nodes_without_a_nodelist_is_a_clear_error():
    with pytest.raises(LaunchError, match="SLURM_JOB_NODELIST is not set"):
        plan_launch(ARGS_T, {"SLURM_GPUS_ON_NODE": "4", "SLURM_NNODES": "2"}, 4, 32)


def test_a_torchrun_worker_never_launches_again():
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "LOCAL_RANK": "2"}
    assert not plan_launch(ARGS_T, env, cuda_devices=4, threads=8).distributed


def test_climai_train_relaunches_itself_under_torchrun(monkeypatch, tmp_path):
    """The CLI passes its own arguments to the plan and runs it instead of training here."""
    import torch

    from climai.testing import write_config

    cfg = write_config(tmp_path / "c.yaml")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    ran = []
    monkeypatch.setattr("climai.launch.run_plan", ran.append)
    monkeypatch.setattr(
        "climai.stages.train.run", lambda *a: pytest.fail("trained in the launcher")
    )
    argv = ["train", "--configfile", str(cfg), "--method", "unet", "--threads", "6"]
    assert cli.main(argv) == 0
    (plan,) = ran
    assert plan.argv[-9:] == [
        "-m", "climai.cli", "train", "--configfile", str(cfg), "--method", "unet", "--threads", "3",
    ]  # fmt: skip
    assert "--nproc_per_node=2" in plan.argv


def test_a_failed_launch_is_one_line_naming_it(monkeypatch, tmp_path, capsys):
    import torch

    from climai.testing import write_config

    cfg = write_config(tmp_path / "c.yaml")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(sys, "executable", "false")  # the "python" of torchrun exits 1
    assert cli.main(["train", "--configfile", str(cfg), "--method", "unet"]) == 1
    err = capsys.readouterr().err
    assert "climai train: error: 2 GPUs: torchrun: false -m torch.distributed.run" in err
    assert "exited with status 1" in err


@pytest.mark.slow
def test_torchrun_launch_really_runs_one_train_process_per_gpu(in_tmp):
    """The planned command runs: torchrun starts 2 ranks of `climai train`, which write the model.

    torch sees no CUDA here, so `cuda_devices=2` stands in for a 2-GPU node; the ranks then run on
    the CPU (gloo), each recognising that it is a torchrun worker and not launching again.
    """
    from climai.launch import run_plan
    from climai.testing import write_config

    cfg = str(write_config(in_tmp / "c.yaml", methods={"bicubic": None}))
    for stage in ("ingest", "preprocess"):
        assert cli.main([stage, "--configfile", cfg, "--threads", "1"]) == 0
    args = ["train", "--configfile", cfg, "--method", "unet", "--threads", "2"]
    plan = plan_launch(args, {"CUDA_VISIBLE_DEVICES": "0,1"}, cuda_devices=2, threads=2)
    assert plan.distributed and plan.nproc_per_node == 2
    run_plan(plan)
    assert (in_tmp / "results/tiny/models/unet/model.pt").stat().st_size > 10_000
    assert (in_tmp / "results/tiny/models/unet/history.csv").read_text().startswith("epoch,")


@pytest.mark.parametrize(
    "env", [{"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, {"SLURM_GPUS_ON_NODE": "4"}], ids=["cuda", "slurm"]
)
def test_climai_infer_relaunches_itself_on_every_gpu_of_the_job(monkeypatch, tmp_path, env):
    """Four GPUs in the job: `climai infer` becomes torchrun --nproc_per_node=4 of itself."""
    import torch

    from climai.testing import write_config

    cfg = write_config(tmp_path / "c.yaml")
    for key in ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    ran = []
    monkeypatch.setattr("climai.launch.run_plan", ran.append)
    monkeypatch.setattr(
        "climai.stages.infer.run", lambda *a: pytest.fail("inferred in the launcher")
    )
    argv = ["infer", "--configfile", str(cfg), "--method", "unet", "--threads", "32"]
    assert cli.main(argv) == 0
    (plan,) = ran
    assert plan.argv == [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4", "--standalone",
        "--nnodes=1", "-m", "climai.cli", "infer", "--configfile", str(cfg), "--method", "unet",
        "--threads", "8",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "device"), [("bicubic", "auto"), ("unet", "cpu")], ids=["baseline", "cpu-only"]
)
def test_climai_infer_stays_one_process_without_gpu_work(monkeypatch, tmp_path, method, device):
    """Baselines, and an inference pinned to the CPU, never start one process per GPU."""
    import torch

    from climai.testing import write_config

    cfg = write_config(tmp_path / "c.yaml", infer={"device": device})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr("climai.launch.run_plan", lambda plan: pytest.fail(f"launched {plan}"))
    ran = []
    monkeypatch.setattr("climai.stages.infer.run", lambda ctx, m: ran.append(m))
    assert cli.main(["infer", "--configfile", str(cfg), "--method", method]) == 0
    assert ran == [method]


def test_the_peak_rss_a_stage_logs_is_the_exact_high_water_mark_and_is_read_back():
    """A short 400 MB peak, freed at once, that a sampler would miss: the logged figure holds it
    (getrusage), and the benchmarks read the last such line of a job's log."""
    import subprocess

    code = (
        "import numpy as np; from climai.launch import peak_rss_mb, PEAK_RSS_LINE\n"
        "a = np.ones(400 * 2**20 // 8); del a\n"
        "print(PEAK_RSS_LINE.format(mb=peak_rss_mb()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak = logged_peak_rss_mb("INFO climai: peak RSS 12 MB\n" + out.stdout)
    assert peak is not None and 400 < peak < 400 + 600  # the array plus the interpreter
    assert logged_peak_rss_mb("no such line") is None
