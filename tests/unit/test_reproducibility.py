"""Reproducible reruns (issue 23): numbers independent of the scheduler's cores, the code's commit
in every output, runtime records, and ``climai verify`` explaining a difference."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from climai import cli
from climai.config import load_config, stage_slice
from climai.io import open_store
from climai.io.checkpoints import load_model_file, save_model
from climai.io.provenance import (
    WORKFLOW_DIR_ENV,
    checkout_state,
    commit_of_version,
    provenance_attrs,
    workflow_code,
)
from climai.manifest import artifact_checksum, compare_campaigns
from climai.runtime import configure_torch, cpu_features
from climai.testing import prepare_campaign

SMALL_UNET = {"epochs": 1, "patch": 16, "batch": 4, "channels": [8, 16], "warmup_steps": 2}
INFER = {"tile": 32, "overlap": 8, "progress": False}


def _train_and_infer(config: Path, threads: int) -> None:
    """``climai train`` and ``climai infer`` of the unet as a rule runs them, with ``--threads``
    (the rule's threads: what Snakemake gives the job)."""
    for stage in ("train", "infer"):
        argv = [stage, "--configfile", str(config), "--method", "unet", "--threads", str(threads)]
        assert cli.main(argv) == 0


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny campaign's unet trained and inferred at 1 and at 2 scheduler threads: the two
    campaign folders."""
    work = tmp_path_factory.mktemp("cores")
    config = prepare_campaign(
        work, methods={"bicubic": None, "unet": SMALL_UNET}, infer=INFER, compute={"threads": 2}
    )
    root = work / "results" / "tiny"
    _train_and_infer(config, threads=1)
    first = work / "cores1"
    shutil.copytree(root, first)
    for sub in ("models", "downscaled", "runtime"):
        shutil.rmtree(root / sub)
    _train_and_infer(config, threads=2)
    return first, root


@pytest.mark.slow
def test_train_and_infer_are_bitwise_equal_at_1_and_2_scheduler_threads(two_runs):
    one, two = two_runs
    weights1, card1 = load_model_file(one / "models/unet/model.pt")
    weights2, _ = load_model_file(two / "models/unet/model.pt")
    assert weights1.keys() == weights2.keys()
    for name in weights1:
        assert torch.equal(weights1[name], weights2[name]), name
    out1, out2 = (
        open_store(one / "downscaled/unet/test.zarr"),
        open_store(two / "downscaled/unet/test.zarr"),
    )
    for var in ("tas", "pr"):
        assert out1[var].values.tobytes() == out2[var].values.tobytes(), var
    # both computed with compute.threads, whatever --threads said; the card and record say so
    for root in (one, two):
        for rule in ("train", "infer"):
            record = json.loads((root / f"runtime/{rule}_unet.json").read_text())
            assert record["threads"] == 2 and record["rule"] == rule
            assert record["torch"] == torch.__version__ and "avx512f" in record["cpu_flags"]
    assert card1["runtime"]["threads"] == 2 and card1["provenance"]["git_commit"]
    assert all(c.ok for c in compare_campaigns(one, two)), compare_campaigns(one, two)


@pytest.mark.slow
def test_verify_names_the_changed_artifact_and_the_differing_recorded_item(two_runs, tmp_path):
    reference, rerun = two_runs[0], tmp_path / "rerun"
    shutil.copytree(two_runs[1], rerun)
    model = rerun / "models/unet/model.pt"
    weights, card = load_model_file(model)
    first = next(iter(weights))

    # a change under the same recorded items: bitwise was expected, and nothing recorded differs
    save_model(model, {**weights, first: weights[first] * (1 + 1e-6)}, card)
    result = {c.artifact: c for c in compare_campaigns(reference, rerun)}
    changed = result["models/unet/model.pt"]
    assert not changed.ok and "bitwise expected" in changed.detail
    relative = float(re.search(r"max relative ([\d.e+-]+)", changed.detail)[1])
    assert 5e-7 < relative < 2e-6 and "no recorded item differs" in changed.detail
    assert result["downscaled/unet/test.zarr"].ok  # the stores were not touched

    # the same small change with another thread count recorded: within the tolerance, explained
    record_path = rerun / "runtime/train_unet.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "threads": 1}))
    changed = {c.artifact: c for c in compare_campaigns(reference, rerun)}["models/unet/model.pt"]
    assert changed.ok and "train_unet.threads: 2 → 1" in changed.detail

    # a large change fails, naming the artifact and the differing item
    save_model(model, {**weights, first: weights[first] * 2}, card)
    failed = [c for c in compare_campaigns(reference, rerun) if not c.ok]
    assert [c.artifact for c in failed] == ["models/unet/model.pt"]
    assert "train_unet.threads: 2 → 1" in failed[0].detail and "tolerance 0.05" in failed[0].detail


def test_compute_threads_fix_the_stage_threads_and_the_slices(tmp_path):
    cfg = load_config(
        _write(tmp_path / "c.yaml", "compute: {threads: 3}\nmethods: {unet: {threads: 1}}")
    )
    assert cfg.torch_threads("unet") == 1  # the method's own threads win
    assert cfg.torch_threads("bicubic") == 3
    assert load_config(_write(tmp_path / "d.yaml", "seed: 0")).compute.threads == 2
    assert stage_slice(cfg, "train", "unet")["compute"] == {"threads": 3, "deterministic": False}
    assert "compute" in stage_slice(cfg, "infer", "unet") and "compute" not in stage_slice(
        cfg, "evaluate", "unet"
    )


def test_deterministic_mode_sets_torch_and_cublas(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        configure_torch(1, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 1
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        configure_torch(2, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_default_non_deterministic_mode_does_not_load_the_compiler():
    """``torch.use_deterministic_algorithms`` imports torch._inductor (~2.5 s of every train and
    infer job on a 2-core AMD EPYC); keeping the default (off) must not call it."""
    code = (
        "import sys; from climai.runtime import configure_torch; configure_torch(1, False); "
        "import torch; assert not torch.are_deterministic_algorithms_enabled(); "
        "print('torch._inductor' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert run.stdout.strip() == "False", run.stdout + run.stderr


@pytest.mark.slow
def test_deterministic_training_on_cpu_is_bitwise_the_default_one(two_runs, tmp_path):
    """On the CPU the kernels are deterministic already: the switch changes nothing but the
    record (on a GPU it makes reruns on the same GPU model bitwise)."""
    config = prepare_campaign(
        tmp_path,
        methods={"bicubic": None, "unet": SMALL_UNET},
        infer=INFER,
        compute={"threads": 2, "deterministic": True},
    )
    argv = ["train", "--configfile", str(config), "--method", "unet", "--threads", "1"]
    try:
        assert cli.main(argv) == 0
    finally:
        configure_torch(2, deterministic=False)
    root = tmp_path / "results/tiny"
    assert json.loads((root / "runtime/train_unet.json").read_text())["deterministic"] is True
    # the weights, bitwise (the files' checksums differ: each card holds its own config)
    mine, _ = load_model_file(root / "models/unet/model.pt")
    default, _ = load_model_file(two_runs[0] / "models/unet/model.pt")
    assert mine.keys() == default.keys()
    assert all(torch.equal(mine[k], default[k]) for k in mine)


def _write(path: Path, text: str) -> Path:
    path.write_text(f"campaign: tiny\nresults: {path.parent / 'results'}\n{text}\n")
    return path


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_workflow_commit_comes_from_the_workflow_checkout(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "Snakefile").write_text("# a workflow\n")
    _git(repo, "add", "Snakefile")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = _git(repo, "rev-parse", "HEAD")
    monkeypatch.setenv(WORKFLOW_DIR_ENV, str(repo))
    checkout_state.cache_clear()
    assert workflow_code() == {"path": str(repo.resolve()), "commit": head, "dirty": False}
    assert provenance_attrs("0" * 64, "ingest")["git_commit"] == head
    (repo / "Snakefile").write_text("# changed\n")
    checkout_state.cache_clear()
    assert provenance_attrs("0" * 64, "ingest")["git_commit"] == f"{head}-dirty"
    monkeypatch.setenv(WORKFLOW_DIR_ENV, str(tmp_path))  # not a checkout
    checkout_state.cache_clear()
    assert workflow_code()["commit"] == "unknown"
    checkout_state.cache_clear()


def test_the_snakefile_names_its_folder_for_the_jobs():
    common = (Path(__file__).parents[2] / "workflow/rules/common.smk").read_text()
    assert f"os.environ.update({WORKFLOW_DIR_ENV}=str(workflow.basedir))" in common


def test_the_package_commit_is_read_from_a_vcs_version():
    assert commit_of_version("0.1.dev42+g1a2b3c4") == ("1a2b3c4", False)
    assert commit_of_version("0.1.dev42+g1a2b3c4d.d20261204") == ("1a2b3c4d", True)
    assert commit_of_version("0.1.0") == ("unknown", False)
    attrs = provenance_attrs("0" * 64, "ingest")
    assert {"climai_version", "climai_commit", "git_commit"} <= set(attrs)


def test_cpu_features_name_the_instruction_sets_that_change_results():
    text = "model name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n"
    got = cpu_features(text)
    assert got["cpu_model"] == "Some CPU"
    assert got["cpu_flags"]["avx512_bf16"] and got["cpu_flags"]["amx_tile"]
    assert not got["cpu_flags"]["amx_bf16"]
    assert set(cpu_features("")["cpu_flags"].values()) == {None}


def test_verify_reruns_the_workflow_checkouts_snakefile(tmp_path, monkeypatch):
    """A non-editable install has no Snakefile beside the package: verify takes the checkout's."""
    from climai.verify import snakefile

    (tmp_path / "Snakefile").write_text("# a checkout\n")
    monkeypatch.setenv(WORKFLOW_DIR_ENV, str(tmp_path))
    assert snakefile() == tmp_path.resolve() / "Snakefile"
    monkeypatch.setenv(WORKFLOW_DIR_ENV, str(tmp_path / "elsewhere"))
    assert snakefile() == Path(__file__).resolve().parents[2] / "Snakefile"


def test_more_threads_than_cpus_keep_the_count_and_warn(caplog, monkeypatch):
    import climai.runtime

    monkeypatch.setattr(climai.runtime, "available_cpus", lambda: 1)
    try:
        with caplog.at_level("WARNING", logger="climai"):
            configure_torch(2, deterministic=False)
        assert torch.get_num_threads() == 2  # the numbers depend on it: never lowered
        assert "compute.threads=2 but this process may use 1 CPU(s)" in caplog.text
    finally:
        configure_torch(2, deterministic=False)


def test_library_versions_name_torch_onednn_and_mkl():
    from climai.runtime import library_versions

    got = library_versions(torch.device("cpu"))
    assert got["torch"] == torch.__version__ and got["cuda"] == got["gpu"] == "none"
    assert re.fullmatch(r"v\d+\.\d+(\.\d+)?|none", got["onednn"])
    assert re.fullmatch(r"\d{4}\.\d+(\.\d+)?|none", got["mkl"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deterministic_gpu_training_reruns_bitwise(tmp_path):
    """compute.deterministic on a GPU: two trainings of the tiny unet give the same weights."""
    config = prepare_campaign(
        tmp_path,
        methods={"bicubic": None, "unet": SMALL_UNET},
        infer=INFER,
        compute={"threads": 2, "deterministic": True},
    )
    root = tmp_path / "results/tiny"
    sums = []
    try:
        for _ in range(2):
            shutil.rmtree(root / "models", ignore_errors=True)
            argv = ["train", "--configfile", str(config), "--method", "unet", "--threads", "2"]
            assert cli.main(argv) == 0
            sums.append(artifact_checksum(root / "models/unet/model.pt"))
    finally:
        configure_torch(2, deterministic=False)
    record = json.loads((root / "runtime/train_unet.json").read_text())
    assert record["device"] == "cuda" and record["gpu"] != "none" and record["deterministic"]
    assert record["cublas_workspace_config"] == ":4096:8" and record["cudnn"] != "none"
    assert sums[0] == sums[1]
