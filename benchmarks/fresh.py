"""The memory benchmarks' loop: each way measured in a fresh child process, the ways alternated.

A child prints one JSON object of figures as its last line of output;
:func:`alternated` runs every way's command ``repeats`` times in turn (so a machine's drift
spreads over all of them) and returns each figure's median per way. :func:`status_mb` reads
the child's own ``VmRSS`` or ``VmHWM``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path


def status_mb(key: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def alternated(
    commands: dict[str, list[str]],
    repeats: int,
    cwd: Path,
    envs: dict[str, dict[str, str]] | None = None,
) -> dict[str, dict[str, float]]:
    """Each figure's median over ``repeats`` runs of every way's command (``envs``: a way's
    environment, where given); raises ``SystemExit`` with the child's stderr when one fails."""
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in commands}
    for _ in range(repeats):
        for way, cmd in commands.items():
            env = (envs or {}).get(way)
            out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{' '.join(cmd[:3])} ({way}) failed:\n{out.stderr[-2000:]}")
            runs[way].append(json.loads(out.stdout.splitlines()[-1]))
    return {
        way: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for way, rs in runs.items()
    }
