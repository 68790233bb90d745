"""history.csv as training goes: one whole line appended per epoch (a reader never sees a half
line), the whole file rewritten atomically only on a resume or a new column."""

from __future__ import annotations

import csv
import os

import pytest

from climai.config import UNetConfig
from climai.io import history as csv_log
from climai.io.history import CsvLog
from climai.testing import tiny_sources
from climai.training.distributed import DistContext
from climai.training.history import HISTORY_FIELDS, EpochLog
from climai.training.loop import fit
from tests.unit.test_training import _loaders


def _rows(path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _row(epoch: int, **extra) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "lr": 1e-3, **extra}


def test_each_row_is_one_whole_line_written_at_once(tmp_path, monkeypatch):
    writes: list[bytes] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:  # the history file's writes (not a lock's)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("history.csv"):
            writes.append(data)
        return real_write(fd, data)

    monkeypatch.setattr(csv_log.os, "write", write)
    log = CsvLog(tmp_path / "history.csv", HISTORY_FIELDS)
    log.reset([])
    assert (tmp_path / "history.csv").read_text() == ",".join(HISTORY_FIELDS) + "\n"
    for epoch in (1, 2, 3):
        log.append(_row(epoch, group="all"))
        assert len(_rows(tmp_path / "history.csv")) == epoch
    assert len(writes) == 3 and all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)
    assert [r["epoch"] for r in _rows(tmp_path / "history.csv")] == ["1", "2", "3"]
    assert _rows(tmp_path / "history.csv")[1]["val_loss"] == "1.0"


def test_a_new_column_rewrites_the_file_with_it(tmp_path):
    log = CsvLog(tmp_path / "h.csv", ["epoch", "train_loss"])
    log.reset([{"epoch": 1, "train_loss": 0.5}])
    log.append({"epoch": 2, "train_loss": 0.4, "extra": 7})
    assert (tmp_path / "h.csv").read_text() == "epoch,train_loss,extra\n1,0.5,\n2,0.4,7\n"


@pytest.mark.parametrize(
    ("calls", "epochs"),
    [
        # group pr: epochs 1, 2; then tas: epochs 1, 2 (per-variable training)
        ([("pr", 1), ("pr", 2), ("done", "pr"), ("tas", 1), ("tas", 2)], ["1", "2", "1", "2"]),
        # resumed from a checkpoint after epoch 2: the first call brings three rows at once
        ([("all", 3), ("all", 4)], ["1", "2", "3", "4"]),
    ],
)
def test_epoch_log_appends_per_epoch_and_rewrites_on_resume(tmp_path, calls, epochs):
    path = tmp_path / "history.csv"
    path.write_text("stale,from,an,earlier,run\n")
    log = EpochLog(path)
    assert _rows(path) == []  # a new run starts an empty history
    for group, n in calls:
        if group == "done":
            log.finish_group(n, [_row(e) for e in (1, 2)])
        else:
            log.record(group, [_row(e) for e in range(1, n + 1)])
    rows = _rows(path)
    assert [r["epoch"] for r in rows] == epochs
    assert list(rows[0]) == list(HISTORY_FIELDS)


@pytest.mark.slow
def test_fit_reports_every_epoch_as_it_ends(tmp_path):
    spec, train, val, _ = tiny_sources(steps=24)
    cfg = UNetConfig(epochs=2, patch=16, batch=4, channels=[8, 16])
    log = EpochLog(tmp_path / "history.csv")
    seen = []

    def on_epoch(rows):
        log.record("all", rows)
        seen.append(_rows(tmp_path / "history.csv"))

    result = fit(cfg, spec, _loaders(train, val, spec), DistContext(), log=lambda _: None,
                 on_epoch=on_epoch)  # fmt: skip
    assert [len(s) for s in seen] == [1, 2]  # on disk after each epoch, not at the end
    last = seen[-1][-1]
    assert float(last["val_loss"]) == result.history[-1]["val_loss"]
    assert float(last["samples_per_s"]) > 0 and last["time"].endswith("+00:00")


def test_a_run_resumed_at_an_epochs_last_step_reports_no_throughput_not_zero(tmp_path):
    """A checkpoint written at the last step of an epoch: the resumed run trains no batch of it,
    so its samples/s is unknown (NaN), not 0.0; its train loss is the interrupted run's."""
    import math

    spec, train, val, _ = tiny_sources()
    loaders = _loaders(train, val, spec)
    steps = len(loaders.train) // loaders.batch
    cfg = UNetConfig(epochs=1, patch=16, batch=4, channels=[4, 8], checkpoint_every=steps)
    first = fit(cfg, spec, loaders, DistContext(), tmp_path, "sha", log=lambda _m: None)
    again = fit(cfg, spec, loaders, DistContext(), tmp_path, "sha", log=lambda _m: None)
    assert again.history[0]["train_loss"] == first.history[0]["train_loss"]
    assert first.history[0]["samples_per_s"] > 0
    assert math.isnan(again.history[0]["samples_per_s"])
