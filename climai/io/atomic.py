"""Atomic writes: write to a temporary name beside the target, then rename.

An interrupted job therefore never leaves a file or store that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    On any error the temporary file or folder is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        _remove(stale)  # left by a killed job: never complete, never read
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if target.exists():
            _remove(target)
        os.replace(tmp, target)
    except BaseException:
        _remove_settled(tmp)
        raise


def _remove_settled(path: Path, tries: int = 50) -> None:
    """Remove the temporary ``path`` of a failed write. The writer's other threads (dask tasks
    already running when one of them failed) may still add a chunk for a moment, which makes a
    single ``rmtree`` fail with "directory not empty": retry until the folder is gone."""
    for attempt in range(tries):
        try:
            _remove(path)
            return
        except OSError:
            if attempt == tries - 1:
                raise
            time.sleep(0.1)


def write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically (fsync before the rename)."""
    with atomic_path(target) as tmp, tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_json(target: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``target`` atomically."""
    write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")
