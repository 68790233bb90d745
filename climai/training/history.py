"""The training history: one row per epoch (losses, learning rate, samples/s, time), written to
``history.csv`` as the run goes (:class:`EpochLog`), so that its learning curves can be watched."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from climai.io.history import CsvLog

# history.csv's columns (in this order); val_loss is the validation metric that selects the model
HISTORY_FIELDS = (
    "epoch",
    "group",
    "train_loss",
    "val_loss",
    "lr",
    "samples_per_s",
    "seconds",
    "val_seconds",
    "time",
)


def epoch_row(epoch: int, losses: list[float], lr: float, samples: int, seconds: float) -> dict:
    """The history row of ``epoch`` (1-based): mean batch loss, the learning rate at its end,
    throughput, duration and the wall-clock time (UTC) it ended; ``val_loss`` comes later.
    ``samples``: those trained in this process's ``seconds``; none (a run resumed from a
    checkpoint of the epoch's last step) leaves the throughput unknown (NaN), not 0."""
    return {
        "epoch": epoch,
        "train_loss": float(sum(losses) / len(losses)) if losses else math.nan,
        "lr": lr,
        "samples_per_s": samples / seconds if samples and seconds > 0 else math.nan,
        "seconds": seconds,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def selection(history: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Which epoch's weights a training kept (the first with the lowest ``val_loss``: a later
    epoch must be strictly better) and why it stopped, for the model card and validation.json."""
    scored = [row for row in history if "val_loss" in row]
    best = min(scored, key=lambda row: row["val_loss"]) if scored else None
    return {
        "best_epoch": int(best["epoch"]) if best else None,
        "best_val_loss": float(best["val_loss"]) if best else None,
        "epochs_run": len(history),
        "epochs": epochs,
        "stopped_early": len(history) < epochs,
    }


class EpochLog:
    """``history.csv`` of a training run of one or more variable groups, rewritten empty when the
    run starts and then one appended line per epoch (:meth:`record`)."""

    def __init__(self, path: str | Path) -> None:
        self.csv = CsvLog(path, HISTORY_FIELDS)
        self.csv.reset([])
        self.done: list[dict[str, Any]] = []  # the rows of the groups already trained

    def record(self, group: str, rows: list[dict[str, Any]]) -> None:
        """Called after each epoch with ``group``'s history so far: append its last row (or, after
        a resume from a checkpoint, write every row of the resumed history)."""
        tagged = [{**r, "group": group} for r in rows]
        if len(self.csv.rows) == len(self.done) + len(tagged) - 1:
            self.csv.append(tagged[-1])
        else:
            self.csv.reset(self.done + tagged)

    def finish_group(self, group: str, rows: list[dict[str, Any]]) -> None:
        """``group`` is trained: its rows stay before those of the next group."""
        self.done += [{**r, "group": group} for r in rows]
        if len(self.csv.rows) != len(self.done):
            self.csv.reset(self.done)
