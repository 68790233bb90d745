"""Shared fixtures: everything runs in a temporary folder on tiny seeded grids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside an empty temporary working folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))


def shared_data() -> Path:
    """The shared real-data folder: ``../shared/data`` beside the repository (CI layout), else
    ``$CLIMAI_SHARED_DATA``; skips the test with a reason when neither exists."""
    candidates = [REPO.parent / "shared" / "data"]
    if os.environ.get("CLIMAI_SHARED_DATA"):
        candidates.append(Path(os.environ["CLIMAI_SHARED_DATA"]))
    for path in candidates:
        if (path / "SOURCES.md").is_file():
            return path
    pytest.skip(
        "shared real data not found (../shared/data beside the repo or $CLIMAI_SHARED_DATA)"
    )
    raise AssertionError("unreachable")
