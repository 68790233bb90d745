"""Provenance attributes carried by every zarr and NetCDF output (architecture contract 4)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import climai


@functools.cache
def git_commit() -> str:
    """The commit of the climai checkout in use (``unknown`` outside a git checkout)."""
    root = Path(climai.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def provenance_attrs(config_sha256: str, rule: str) -> dict[str, str]:
    """The attributes that say which code, config and rule made an output."""
    return {
        "climai_version": climai.__version__,
        "config_sha256": config_sha256,
        "git_commit": git_commit(),
        "created_by_rule": rule,
        "Conventions": "CF-1.10",
    }
