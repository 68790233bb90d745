"""Pre-emption and multi-process training, through the real ``climai train`` command."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from climai.io.checkpoints import load_model_file
from climai.testing import prepare_campaign
from climai.training.checkpoint import checkpoints

pytestmark = pytest.mark.slow

SMALL = {"patch": 16, "batch": 4, "channels": [8, 16], "warmup_steps": 4}


def _env() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", PYTHONUNBUFFERED="1")


def _train_cmd(config: Path, method: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "climai.cli",
        "train",
        "--configfile",
        str(config),
        "--method",
        method,
        "--threads",
        "1",
    ]


def test_sigterm_mid_epoch_then_resume_gives_bitwise_identical_weights(tmp_path):
    method = {"epochs": 2, "checkpoint_every": 2, "bf16": False, **SMALL}
    config = prepare_campaign(tmp_path, methods={"bicubic": {}, "unet": None, "unet-crps": method})
    model_dir = tmp_path / "results" / "tiny" / "models" / "unet-crps"

    # uninterrupted reference
    ref = subprocess.run(
        _train_cmd(config, "unet-crps"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    reference, _ = load_model_file(model_dir / "model.pt")
    ref_history = (model_dir / "history.csv").read_text()
    shutil.rmtree(model_dir)

    # the same run, killed with SIGTERM as soon as its first periodic checkpoint exists
    proc = subprocess.Popen(
        _train_cmd(config, "unet-crps"), env=_env(), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not checkpoints(model_dir / "checkpoints" / "all"):
        assert proc.poll() is None and time.monotonic() < deadline, (
            "training ended before a checkpoint"
        )
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "rerun to resume" in err and not (model_dir / "model.pt").exists()
    step = int(re.search(r"stopped by SIGTERM at step (\d+)", err)[1])
    last = torch.load(checkpoints(model_dir / "checkpoints" / "all")[-1], weights_only=True)
    assert last["step"] == step and 0 < last["batch"] < 16, "not stopped mid-epoch"

    # rerunning resumes from the SIGTERM checkpoint by itself
    res = subprocess.run(
        _train_cmd(config, "unet-crps"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resumed from step {step} " in res.stderr
    resumed, card = load_model_file(model_dir / "model.pt")
    assert set(resumed) == set(reference)
    for k, v in reference.items():
        assert torch.equal(v, resumed[k]), k
    assert card["architecture"]["members"] == 8 and card["data_checksums"]["stats_sha256"]
    ref_rows = list(csv.DictReader(ref_history.splitlines()))
    res_rows = list(csv.DictReader((model_dir / "history.csv").read_text().splitlines()))
    for key in ("val_loss", "train_loss", "lr"):  # the resumed history is the same run's history
        assert [r[key] for r in res_rows] == [r[key] for r in ref_rows]
    assert not (model_dir / "checkpoints").exists()  # cleaned once model.pt is written


def test_torchrun_two_cpu_processes_stay_in_sync_and_learn(tmp_path):
    method = {"epochs": 3, "lr": 3e-3, **SMALL}
    config = prepare_campaign(tmp_path, methods={"bicubic": {}, "unet": method})
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "climai.cli",
        "train",
        "--configfile",
        str(config),
        "--method",
        "unet",
        "--threads",
        "2",
    ]
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "world size 2" in run.stderr
    sums = re.findall(r"parameter checksums per rank: (\S+) (\S+)", run.stderr)
    assert len(sums) == 3, run.stderr[-3000:]
    assert all(a == b for a, b in sums)  # identical to the last digit on both ranks
    assert len({a for a, _ in sums}) == 3  # and they move: the ranks really train
    rows = list(
        csv.DictReader((tmp_path / "results/tiny/models/unet/history.csv").read_text().splitlines())
    )
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
