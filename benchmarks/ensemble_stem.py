"""An ensemble's members sharing the noise-free first block (issue 19, session 44).

    python benchmarks/ensemble_stem.py [--tile 512] [--batch 4] [--members 8] [--repeats 5]

Times, alternating in one process (these machines are shared and noisy), one tile batch of the
transfer campaigns' ensemble (``ResidualUNet`` [16, 32, 64, 128] with 4 noise channels, ``batch``
tile steps × ``members`` draws of ``tile``² HR cells, fp32 on the CPU, 3 input channels):

- ``per member``: every member a whole forward pass (the engine before session 44);
- ``shared``: the engine now (:func:`climai.inference.predict.emulator_predictor`): the first
  block, which no noise reaches, run once per batch and every member started from it.

Checks that both give the same members, bit for bit, and prints the medians and their ratio.
"""

from __future__ import annotations

import statistics
import time

import torch
from departure_blur import ensemble_batch_args

from climai.inference.distributed import chunk_seed
from climai.inference.predict import Emulator, emulator_predictor
from climai.models.unet import ResidualUNet


def main() -> None:
    args = ensemble_batch_args(__doc__)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = ResidualUNet(3, 1, [16, 32, 64, 128], noise_channels=4).eval()
    torch.nn.init.normal_(net.head.weight, std=0.1)  # a trained head: members that differ
    emulator = Emulator({"pr": net}, {"pr": ["pr"]}, "none", members=args.members)
    shared = emulator_predictor(emulator, ["pr"], torch.device("cpu"), bf16=False)
    x = torch.randn(args.batch, 3, args.tile, args.tile).contiguous(
        memory_format=torch.channels_last
    )
    base = torch.randn(args.batch, 1, args.tile, args.tile)
    out = torch.empty(args.batch, args.members, 1, args.tile, args.tile)

    @torch.no_grad()
    def per_member() -> torch.Tensor:
        for m in range(args.members):
            torch.manual_seed(chunk_seed(7, m))
            out[:, m] = net(x, base)
        return out

    runs = {"per member": per_member, "shared": lambda: shared(x, base, 7)}
    same = torch.equal(per_member().clone(), runs["shared"]())  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    print(
        f"tile {args.tile}, batch {args.batch}, members {args.members}, threads {args.threads}, "
        f"repeats {args.repeats} (medians); members bitwise equal: {same}"
    )
    base_s = statistics.median(times["per member"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:10s} {med:8.3f} s   {med / base_s:6.3f} of per member")


if __name__ == "__main__":
    main()
