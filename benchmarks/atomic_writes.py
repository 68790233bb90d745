"""Cost of durable atomic writes (issue 20, item 4): fsync of every file and folder of an output
before its rename, the output lock and the writer-named temporaries.

Runs the write-heavy stages of the default toy campaign (``ingest``, ``preprocess``: their stores
are the campaign's largest) in this process, alternately with fsync and with fsync replaced by a
no-op, and a burst of small JSON writes (the metrics and records of every job); prints the
median wall time of each and the ratio, measured in the same run.

    python benchmarks/atomic_writes.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

import climai.io.atomic as atomic
from climai.cli import main as climai_main

REPO = Path(__file__).resolve().parents[1]


def _timed(fn: Callable[[], object], fsync: bool, counter: list[int]) -> float:
    real = os.fsync

    def counted(fd: int) -> None:
        counter[0] += 1
        if fsync:
            real(fd)

    os.fsync = counted  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        os.fsync = real  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-writes", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO) as tmp:
        root = Path(tmp)
        config = root / "c.yaml"
        config.write_text(yaml.safe_dump({"results": str(root / "results")}))
        cfgs = ["--configfile", str(REPO / "config/config.yaml"), "--configfile", str(config)]

        def stage(name: str) -> Callable[[], object]:
            return lambda: climai_main([name, *cfgs, "--threads", "2"])

        def json_burst() -> None:
            for i in range(args.json_writes):
                atomic.write_json(root / "j" / f"{i % 20}.json", {"i": i, "x": list(range(50))})

        jobs = {"ingest": stage("ingest"), "preprocess": stage("preprocess"), "json": json_burst}
        times: dict[str, dict[bool, list[float]]] = {k: {True: [], False: []} for k in jobs}
        counts: dict[str, int] = {}
        stage("ingest")()  # warm caches and imports once
        for _ in range(args.repeats):
            for fsync in (True, False):
                for name, fn in jobs.items():
                    counter = [0]
                    times[name][fsync].append(_timed(fn, fsync, counter))
                    counts[name] = counter[0]
    out = {}
    for name in jobs:
        on, off = (statistics.median(times[name][f]) for f in (True, False))
        out[name] = {
            "fsync_s": round(on, 3),
            "no_fsync_s": round(off, 3),
            "ratio": round(on / off, 3),
            "fsyncs": counts[name],
        }
    print(json.dumps({"repeats": args.repeats, "cpus": os.cpu_count(), **out}, indent=2))


if __name__ == "__main__":
    main()
