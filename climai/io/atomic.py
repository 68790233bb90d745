"""Atomic writes: write to a temporary name beside the target, then rename.

An interrupted job therefore never leaves a file or store that looks complete, and two processes
writing the same output never corrupt it:

- **one writer per output**: a lock file ``.<name>.lock`` beside the target (``fcntl`` record
  lock, which NFS and Lustre with ``-o flock`` honour across hosts) is held from before the
  temporary is created until after the rename. A second writer fails at once with
  :class:`OutputBusyError`, naming the holder (host, pid, start time).
- **temporaries carry their writer's identity**: ``.<name>.tmp-<host>-<pid>-<pid start>-<began>``.
  A writer deletes another's temporary only when its owner is dead (same host, and that pid is
  gone or is another process) or when its write began more than :data:`STALE_AFTER_S` ago.
- **durable**: every file and folder of the temporary is fsynced before the rename, and the
  parent folder after it.
- **no window**: an existing target is swapped with the new one in one step (Linux
  ``renameat2(RENAME_EXCHANGE)``), elsewhere renamed aside first; the old one is deleted only once
  the new one is in place. An existing *folder* is replaced only when it is a zarr store.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("climai")

#: A temporary whose owner cannot be checked (another host) is deleted once its write began this
#: many seconds ago: longer than any single write of a campaign output.
STALE_AFTER_S = 24 * 3600


class OutputBusyError(OSError):
    """Another process is writing the same output; the message names it."""


@dataclass(frozen=True)
class Writer:
    """Who writes a temporary: host, pid, the pid's start (clock ticks since boot, or 0 where
    unknown) and when the write began (unix seconds)."""

    host: str
    pid: int
    pid_start: int
    began: int

    def tag(self) -> str:
        return f"{self.host}-{self.pid}-{self.pid_start}-{self.began}"

    def describe(self) -> str:
        began = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.began))
        return f"host {self.host}, pid {self.pid}, writing since {began}"

    def alive(self) -> bool | None:
        """Whether the writer still runs: None when that cannot be known (another host)."""
        if self.host != _host():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, another user's
        start = _pid_start(self.pid)
        return not (start and self.pid_start and start != self.pid_start)


_TMP = re.compile(r"^(?P<host>.+)-(?P<pid>\d+)-(?P<start>\d+)-(?P<began>\d+)$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def _pid_start(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), 0 where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def this_writer() -> Writer:
    pid = os.getpid()
    return Writer(_host(), pid, _pid_start(pid), int(time.time()))


def parse_writer(tag: str) -> Writer | None:
    """The :class:`Writer` of a temporary's suffix, None when it has no identity (old names)."""
    m = _TMP.match(tag)
    if m is None:
        return None
    return Writer(m["host"], int(m["pid"]), int(m["start"]), int(m["began"]))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold the lock of ``target`` (``.<name>.lock`` beside it) or raise :class:`OutputBusyError`.

    The lock file holds its owner's identity for that message and is removed on release; a lock
    taken on a file that was meanwhile removed is retried on the new one.
    """
    lock = target.with_name(f".{target.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputBusyError(_busy_message(target, lock)) from None
            if err.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            log.warning("%s: this file system has no file locks (%s); writing unlocked", lock, err)
            fd = -1
            break
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # removed by its previous owner between our open and our lock: retry
    if fd < 0:
        yield
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, this_writer().tag().encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _busy_message(target: Path, lock: Path) -> str:
    try:
        owner = parse_writer(lock.read_text().strip())
    except OSError:
        owner = None
    who = owner.describe() if owner else "another process"
    return (
        f"output {str(target)!r} is being written by {who} (lock {str(lock)!r}); "
        "wait for it to finish or stop it, then run again"
    )


def remove_stale(target: Path) -> None:
    """Delete the temporaries (and set-aside old versions) of ``target`` whose writer is dead or
    began more than :data:`STALE_AFTER_S` ago. Call while holding ``target``'s lock."""
    now = time.time()
    for kind in ("tmp", "old"):
        for path in target.parent.glob(f".{target.name}.{kind}-*"):
            owner = parse_writer(path.name.removeprefix(f".{target.name}.{kind}-"))
            if owner is None:
                continue  # not a name climai gives: leave it
            alive = owner.alive()
            if alive is False or (alive is None and now - owner.began > STALE_AFTER_S):
                log.info("removing %s, left by a writer that is gone (%s)", path, owner.describe())
                _remove(path)


def fsync_tree(path: Path) -> None:
    """fsync ``path`` (a file) or every file and folder under it (a store)."""
    if not path.is_dir():
        _fsync(path, os.O_RDONLY)
        return
    for root, _, files in os.walk(path):
        for name in files:
            _fsync(Path(root) / name, os.O_RDONLY)
        _fsync(Path(root), os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one step (Linux renameat2); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {str(b)!r} with its new version: {os.strerror(err)}")


def replace(tmp: Path, target: Path, writer: Writer) -> None:
    """Put ``tmp`` in place of ``target`` with no moment where neither exists."""
    if target.is_dir() and not target.is_symlink():
        if not (target / "zarr.json").is_file():
            raise FileExistsError(
                f"{str(target)!r} is a folder but not a zarr store; climai replaces only its own "
                "outputs: move it away and run again"
            )
        if _exchange(tmp, target):  # tmp now holds the old store
            _remove(tmp)
            return
        aside = target.with_name(f".{target.name}.old-{writer.tag()}")
        os.rename(target, aside)
        os.rename(tmp, target)
        _remove(aside)
        return
    os.replace(tmp, target)  # one step for a file, or for a target that does not exist


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    Holds ``target``'s lock throughout (:class:`OutputBusyError` when another process writes it).
    On any error the temporary is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = this_writer()
    with output_lock(target):
        remove_stale(target)
        tmp = target.with_name(f".{target.name}.tmp-{writer.tag()}")
        try:
            yield tmp
            fsync_tree(tmp)
            replace(tmp, target, writer)
            _fsync(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        except BaseException:
            _remove_settled(tmp)
            raise


@contextlib.contextmanager
def scratch_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside ``target`` for intermediate files of a write of it (e.g. a
    zarr store a NetCDF file is made from), removed afterwards. Named and locked as
    :func:`atomic_path` names its temporaries (``.<target>.staging.tmp-<writer>``, the lock of
    ``<target>.staging``), so the next write removes the folder of a writer that was killed."""
    stage = Path(target).with_name(f"{Path(target).name}.staging")  # a name only, never made
    stage.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(stage):
        remove_stale(stage)
        tmp = stage.with_name(f".{stage.name}.tmp-{this_writer().tag()}")
        tmp.mkdir()
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


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


def _strict(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v) for v in obj]
    return obj


def write_json(target: str | Path, data: Any) -> None:
    """Write ``data`` as indented, strict JSON (RFC 8259) to ``target`` atomically. A NaN or
    infinite float (a score that could not be computed) is written as ``null``, since strict
    readers (``jq``, JavaScript's ``JSON.parse``, most languages' parsers) refuse Python's
    bare ``NaN`` token; :func:`read_values` reads such a file back with NaN for every null."""
    write_text(target, json.dumps(_strict(data), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _nan_for_null(obj: Any) -> Any:
    if obj is None:
        return math.nan
    if isinstance(obj, dict):
        return {k: _nan_for_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_for_null(v) for v in obj]
    return obj


def read_values(path: str | Path) -> Any:
    """A JSON file of numbers (metrics.json, curves.json) with NaN for every ``null``: the
    scores :func:`write_json` could not write as numbers."""
    return _nan_for_null(json.loads(Path(path).read_text()))
