"""What ``departure_blur`` adds to an ensemble's inference (issue 19, session 43).

    python benchmarks/departure_blur.py [--tile 512] [--batch 4] [--members 8] [--repeats 5]

Times, alternating in one process (these machines are shared and noisy), one batch of the
transfer campaigns' ensemble forward (``ResidualUNet`` [16, 32, 64, 128] with noise, ``batch``
tile steps × ``members`` draws of ``tile``² HR cells, fp32 on the CPU, as the engine runs it)
and the Gaussian smoothing of those members' departures at sigma 1 and 2
(:func:`climai.models.constraints.blur_departures`). Prints the medians and the blur's time as a
fraction of the forward's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from climai.models.constraints import blur_departures
from climai.models.unet import ResidualUNet


def ensemble_batch_args(doc: str) -> argparse.Namespace:
    """The options of the scripts that time one tile batch of the transfer campaigns' ensemble
    (this one and ``ensemble_stem.py``), parsed."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


def main() -> None:
    args = ensemble_batch_args(__doc__)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # the transfer campaigns' inputs: the LR's base and nearest channels and the grid channel
    net = ResidualUNet(3, 1, [16, 32, 64, 128], noise_channels=4).eval()
    x = torch.randn(args.batch, 3, args.tile, args.tile).contiguous(
        memory_format=torch.channels_last
    )
    base = torch.randn(args.batch, 1, args.tile, args.tile)
    out = torch.empty(args.batch, args.members, 1, args.tile, args.tile)

    @torch.no_grad()
    def forward() -> None:
        for m in range(args.members):
            out[:, m] = net(x, base)

    times: dict[str, list[float]] = {"forward": [], "blur 1": [], "blur 2": []}
    runs = {
        "forward": forward,
        "blur 1": lambda: blur_departures(out, 1.0),
        "blur 2": lambda: blur_departures(out, 2.0),
    }
    forward()  # warm-up
    for _ in range(args.repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    fwd = statistics.median(times["forward"])
    print(
        f"tile {args.tile}, batch {args.batch}, members {args.members}, "
        f"threads {args.threads}, repeats {args.repeats} (medians)"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:8s} {med:8.3f} s   {med / fwd:7.4f} of the forward")


if __name__ == "__main__":
    main()
