"""Memory of quantile mapping's seeded sample of train pairs (session 51).

    python benchmarks/qm_sample_memory.py [--pairs 20e6 99e6] [--size 2e6] [--repeats 3]

For each number of valid train pairs, draws quantile mapping's sample of ``size`` indices in a
fresh process, in two ways alternated ``repeats`` times:

- ``choice``: ``np.random.default_rng(seed).choice(n, size, replace=False)`` (before session 51),
  which builds a permutation of all ``n`` pairs (8 bytes each) when ``size > n // 50``;
- ``draw``: :func:`climai.models.quantile_mapping.draw_indices` (now), the same indices in the
  same order in at most ``max(64 MiB, 160 B × size)``.

and prints the process's memory high-water mark above its RSS before the draw (``VmHWM`` minus
``VmRSS``), the wall time, the medians and their ratios (draw / choice).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fresh import alternated, status_mb

REPO = Path(__file__).resolve().parents[1]


def measure(way: str, n: int, size: int) -> dict[str, float]:
    """One process's figures (run in a child: the heap starts clean)."""
    import numpy as np

    from climai.models.quantile_mapping import draw_indices

    before = status_mb("VmRSS")
    t0 = time.perf_counter()
    if way == "choice":
        picks = np.random.default_rng(0).choice(n, size=size, replace=False)
    else:
        picks = draw_indices(n, size, 0)
    seconds = time.perf_counter() - t0
    assert picks.size == size
    return {"added_peak_mb": status_mb("VmHWM") - before, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=float, nargs="+", default=[20e6, 99e6])
    p.add_argument("--size", type=float, default=2e6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        way, n, size = args.child
        print(json.dumps(measure(way, int(n), int(size))))
        return
    size = int(args.size)
    for n in map(int, args.pairs):
        cmd = [sys.executable, __file__, "--child"]
        medians = alternated(
            {way: [*cmd, way, str(n), str(size)] for way in ("choice", "draw")},
            args.repeats,
            REPO,
        )
        c, d = medians["choice"], medians["draw"]
        print(
            f"{n:.3g} pairs, sample {size:.3g} (median of {args.repeats}): "
            f"choice {c['added_peak_mb']:.0f} MB {c['seconds']:.2f} s; "
            f"draw {d['added_peak_mb']:.0f} MB {d['seconds']:.2f} s; "
            f"ratio draw/choice memory {d['added_peak_mb'] / c['added_peak_mb']:.2f}, "
            f"time {d['seconds'] / c['seconds']:.2f}"
        )


if __name__ == "__main__":
    main()
