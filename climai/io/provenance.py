"""Provenance attributes carried by every zarr and NetCDF output (architecture contract 4).

Two pieces of code make an output, and both are recorded:

- the *workflow checkout* (the Snakefile's folder, ``$CLIMAI_WORKFLOW_DIR`` as the Snakefile sets
  it for its jobs, else the working folder): its git commit and whether it had uncommitted
  changes (attribute ``git_commit``, ``<sha>-dirty`` when dirty);
- the *installed climai package*: its version (VCS-derived by setuptools-scm when built from a
  git checkout: ``0.1.devN+g<sha>[.dYYYYMMDD]``) and its commit (attributes ``climai_version``,
  ``climai_commit``): from git when the package is a source tree (editable install), else from
  the ``+g<sha>`` of its version. ``unknown`` only when neither says.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import climai

#: The variable the Snakefile sets to its own folder for every job it runs.
WORKFLOW_DIR_ENV = "CLIMAI_WORKFLOW_DIR"
UNKNOWN = "unknown"


def _git(root: Path, *args: str) -> str | None:
    """``git -C root args`` stripped output, None when git fails or is missing."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.cache
def checkout_state(root: Path) -> dict[str, Any]:
    """``{"commit", "dirty", "toplevel"}`` of the git checkout holding ``root`` (commit
    ``unknown`` outside one). Untracked files do not make it dirty."""
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return {"commit": UNKNOWN, "dirty": False, "toplevel": ""}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "dirty": bool(status),
        "toplevel": _git(root, "rev-parse", "--show-toplevel") or "",
    }


def workflow_dir() -> Path:
    """The workflow checkout: ``$CLIMAI_WORKFLOW_DIR`` (the Snakefile's folder), else the cwd."""
    return Path(os.environ.get(WORKFLOW_DIR_ENV) or os.getcwd()).resolve()


def workflow_code() -> dict[str, Any]:
    """The workflow checkout's folder, commit and dirty flag."""
    root = workflow_dir()
    state = checkout_state(root)
    return {"path": str(root), "commit": state["commit"], "dirty": state["dirty"]}


def git_commit() -> str:
    """The workflow checkout's commit, ``<sha>-dirty`` with uncommitted changes, else ``unknown``."""
    code = workflow_code()
    return code["commit"] + ("-dirty" if code["dirty"] else "")


def commit_of_version(version: str) -> tuple[str, bool]:
    """The commit (short sha) and dirty flag a setuptools-scm version carries
    (``0.1.dev3+g1a2b3c4.d20261204`` → ``("1a2b3c4", True)``); ``unknown`` when none."""
    found = re.search(r"\+g([0-9a-f]{7,40})(\.d\d{8})?", version)
    return (found[1], bool(found[2])) if found else (UNKNOWN, False)


def package_code() -> dict[str, Any]:
    """The installed climai: version, commit and dirty flag, and where it was imported from."""
    source = Path(climai.__file__).resolve().parent.parent
    state = checkout_state(source)
    if state["commit"] != UNKNOWN and Path(state["toplevel"]).resolve() == source:
        commit, dirty = state["commit"], state["dirty"]  # a source tree (editable install)
    else:
        commit, dirty = commit_of_version(climai.__version__)
    return {"version": climai.__version__, "commit": commit, "dirty": dirty, "path": str(source)}


def code_provenance() -> dict[str, str]:
    """The code attributes: ``climai_version``, ``climai_commit`` (the installed package, with
    ``-dirty`` when built from a modified tree) and ``git_commit`` (the workflow checkout)."""
    package = package_code()
    return {
        "climai_version": package["version"],
        "climai_commit": package["commit"] + ("-dirty" if package["dirty"] else ""),
        "git_commit": git_commit(),
    }


def cpuinfo_text(path: str | Path = "/proc/cpuinfo") -> str:
    """The machine's CPU description (``""`` where there is none, e.g. macOS)."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance_attrs(config_sha256: str, rule: str) -> dict[str, str]:
    """The attributes that say which code, config and rule made an output."""
    return {
        **code_provenance(),
        "config_sha256": config_sha256,
        "created_by_rule": rule,
        "Conventions": "CF-1.10",
    }


_LARGE = 256 * 2**20  # files above this size are identified by size, mtime and edge hashes


def _sha256_file(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        if limit is None:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
        else:
            h.update(fh.read(limit))
            fh.seek(max(0, path.stat().st_size - limit))
            h.update(fh.read(limit))
    return h.hexdigest()


def path_identity(path: str | Path) -> dict[str, Any]:
    """A cheap but faithful identity of an input file or store.

    Small files get their full sha256; large files their size, mtime and a hash of the first and
    last MiB; folders (zarr stores) the sizes of all files and the hashes of metadata files.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input {str(p)!r} does not exist")
    if p.is_file():
        size = p.stat().st_size
        if size <= _LARGE:
            return {"path": str(p), "size": size, "sha256": _sha256_file(p)}
        return {
            "path": str(p),
            "size": size,
            "mtime": p.stat().st_mtime,
            "edges_sha256": _sha256_file(p, 2**20),
        }
    files = sorted(f for f in p.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        rel = f.relative_to(p).as_posix()
        h.update(f"{rel}:{f.stat().st_size}\n".encode())
        if f.name in ("zarr.json", ".zarray", ".zattrs", ".zgroup"):
            h.update(f.read_bytes())
    return {"path": str(p), "files": len(files), "identity_sha256": h.hexdigest()}
