"""Training checkpoints: written atomically every N steps and on signals; resumed by themselves.

A checkpoint holds model, optimiser, scheduler, EMA, RNG states, the global step and the sampler
position (epoch and batch within it), the best weights so far and the history; it loads with
``weights_only=True``. Checkpoints of another configuration (a different ``config_sha256``) are
ignored, so a changed config starts afresh.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import torch

from climai.io.atomic import atomic_path

_NAME = re.compile(r"^step-(\d{9})\.pt$")


def save_checkpoint(folder: Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as ``folder/step-<step>.pt`` atomically; keep the ``keep`` newest."""
    path = folder / f"step-{int(state['step']):09d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def load_latest(folder: Path, config_sha256: str) -> dict[str, Any] | None:
    """The newest checkpoint of this configuration, or None."""
    for path in reversed(checkpoints(folder)):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("config_sha256") == config_sha256:
            return state
    return None


def rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU and every GPU)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SignalFlags:
    """SIGTERM: checkpoint and stop; SIGUSR1: checkpoint and go on (e.g. SLURM's warning)."""

    def __init__(self) -> None:
        self.stop = False
        self.save = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGTERM:
            self.stop = True
        self.save = True

    def __enter__(self) -> SignalFlags:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
