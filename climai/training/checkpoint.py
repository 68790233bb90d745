"""Training checkpoints: written atomically every N steps and on signals; resumed by themselves.

A checkpoint holds model, optimiser, scheduler, EMA, RNG states, the global step and the sampler
position (epoch and batch within it), the best weights so far and the history; it loads with
``weights_only=True``.

A checkpoint also holds the *identity* of what it was trained on: the config hash, the prepared
dataset's checksum (its store manifest), the statistics file's and the parent model's sha256. A
rerun resumes only from a checkpoint of the same identity; otherwise it starts afresh and logs
which of them changed. A checkpoint that cannot be read (truncated, corrupt) is skipped with a log
line, and the previous one is tried.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from climai.io.atomic import atomic_path

_NAME = re.compile(r"^step-(\d{9})\.pt$")


def save_checkpoint(folder: Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as ``folder/step-<step>.pt`` atomically; keep the ``keep`` newest.

    Checkpoints of later steps than ``state``'s are not this run's (another identity, or one that
    could not be read): they are removed, so they never outlive this run's own."""
    step = int(state["step"])
    path = folder / f"step-{step:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    later = [p for p in checkpoints(folder) if _step(p) > step]
    earlier = [p for p in checkpoints(folder) if _step(p) <= step]
    for old in later + earlier[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _step(path: Path) -> int:
    m = _NAME.match(path.name)
    return int(m[1]) if m else -1


def checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


#: What each identity key names, for the log line saying why a checkpoint is not resumed.
IDENTITY_NAMES = {
    "config_sha256": "the configuration",
    "dataset_sha256": "the prepared dataset",
    "stats_sha256": "the normalisation statistics",
    "parent_sha256": "the parent model",
}


def load_latest(
    folder: Path, identity: dict[str, str], log: Callable[[str], None] = print
) -> dict[str, Any] | None:
    """The newest readable checkpoint written with this ``identity`` (config hash, data and
    parent checksums), or None; ``log`` says why each newer one was passed over."""
    for path in reversed(checkpoints(folder)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or corrupt: EOFError, RuntimeError, UnpicklingError
            log(
                f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); trying the previous one"
            )
            continue
        theirs = state.get("identity")
        if theirs == identity:
            return state
        if not isinstance(theirs, dict):
            why = "it records no data identity (written by an older climai)"
        else:
            changed = [
                k
                for k in sorted(identity.keys() | theirs.keys())
                if theirs.get(k) != identity.get(k)
            ]
            why = " and ".join(IDENTITY_NAMES.get(k, k) for k in changed) + " changed since"
        log(f"not resuming from checkpoint {path}: {why}; starting afresh")
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
