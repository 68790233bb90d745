"""Checkpoints resume only on the same data and parent, and survive a corrupt newest one
(issue 20, item 3)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from climai.testing import prepare_campaign
from climai.training.checkpoint import checkpoints, load_latest, save_checkpoint

IDENTITY = {
    "config_sha256": "c" * 64,
    "dataset_sha256": "d" * 64,
    "stats_sha256": "s" * 64,
    "parent_sha256": "",
}


def _save(folder: Path, step: int, identity: dict[str, str] | None = IDENTITY) -> Path:
    state: dict = {"step": step, "w": torch.full((3,), float(step))}
    if identity is not None:
        state["identity"] = identity
    return save_checkpoint(folder, state)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


# (case, what the folder holds, step resumed or None, what the log says)
CASES = [
    ("same data and parent", lambda f: _save(f, 10), 10, None),
    ("dataset changed", lambda f: _save(f, 10, {**IDENTITY, "dataset_sha256": "x"}), None,
     "the prepared dataset changed since; starting afresh"),
    ("statistics changed", lambda f: _save(f, 10, {**IDENTITY, "stats_sha256": "x"}), None,
     "the normalisation statistics changed since"),
    ("parent model changed", lambda f: _save(f, 10, {**IDENTITY, "parent_sha256": "x"}), None,
     "the parent model changed since"),
    ("config changed", lambda f: _save(f, 10, {**IDENTITY, "config_sha256": "x"}), None,
     "the configuration changed since"),
    ("written before identities", lambda f: _save(f, 10, None), None,
     "records no data identity"),
    ("newest truncated", lambda f: (_save(f, 10), _truncate(_save(f, 20))), 10,
     "step-000000020.pt is unreadable"),
    ("every one truncated", lambda f: (_truncate(_save(f, 10)), _truncate(_save(f, 20))), None,
     "step-000000010.pt is unreadable"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "resumed", "says"), CASES, ids=[c[0] for c in CASES])
def test_a_checkpoint_is_resumed_only_on_the_same_identity(tmp_path, case, make, resumed, says):
    make(tmp_path)
    lines: list[str] = []
    state = load_latest(tmp_path, IDENTITY, lines.append)
    assert (state["step"] if state else None) == resumed, case
    if says is None:
        assert not lines
    else:
        assert any(says in line for line in lines), lines


def test_a_fresh_run_removes_checkpoints_of_later_steps_that_are_not_its_own(tmp_path):
    _save(tmp_path, 100, {**IDENTITY, "dataset_sha256": "old"})
    _save(tmp_path, 200, {**IDENTITY, "dataset_sha256": "old"})
    _save(tmp_path, 50)
    assert [p.name for p in checkpoints(tmp_path)] == ["step-000000050.pt"]
    _save(tmp_path, 60)
    _save(tmp_path, 70)
    assert [p.name for p in checkpoints(tmp_path)] == ["step-000000060.pt", "step-000000070.pt"]


def _train(config: Path, **kw) -> subprocess.Popen:
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "climai.cli", "train", "--configfile", str(config)]
    return subprocess.Popen([*cmd, "--method", "unet", "--threads", "1"], env=env, text=True, **kw)


@pytest.mark.slow
def test_an_interrupted_training_does_not_resume_on_changed_data(tmp_path):
    """The reproducer: interrupt training, change the prepared data under the same path, rerun."""
    method = {"epochs": 2, "checkpoint_every": 2, "patch": 16, "batch": 4, "channels": [8, 16]}
    config = prepare_campaign(tmp_path, methods={"bicubic": {}, "unet": method})
    model_dir = tmp_path / "results" / "tiny" / "models" / "unet"
    proc = _train(config, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not checkpoints(model_dir / "checkpoints" / "all"):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    stats = tmp_path / "results" / "tiny" / "prep" / "stats.json"
    stats.write_text(re.sub(r'"mean": ([0-9.]+)', r'"mean": 1\1', stats.read_text(), count=1))
    rerun = _train(config, stderr=subprocess.PIPE)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    assert "resumed from step" not in err
    assert "the normalisation statistics changed since; starting afresh" in err
