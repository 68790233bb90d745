"""Rule ``infer_block`` (``climai infer_block --method M --block I --blocks N``): block ``I`` of ``N``
of a method's infer that is too long for one job of its partition (climai/sizing.py): an
emulator's or a baseline's (not a whole-series one, qdm).

Relevant settings: those of ``infer`` (the same config slice, so the same values and provenance).
Inputs: those of ``infer``.
Outputs: ``downscaled/<method>/blocks/test_<I>.zarr``: the template of the whole
``test.zarr`` with only this block's time chunks written (share ``I`` of ``N`` of the time chunks,
contiguous, as the ranks of one job share them: the same seeds, so the same values), and
``runtime/infer_block_<method>_<I>.json``. Rule ``infer_gather`` joins the blocks.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from climai.paths import CampaignPaths
from climai.stages import StageContext


@dataclass(frozen=True)
class BlockPaths(CampaignPaths):
    """The campaign's paths, with ``infer``'s store and runtime record those of one block."""

    block: int = 0

    def downscaled(self, method: str, split: str = "test") -> Path:
        return self.downscaled_block(method, self.block, split)

    def runtime(self, rule: str, method: str) -> Path:
        return super().runtime("infer_block", f"{method}_{self.block}")


@dataclass(frozen=True)
class BlockContext(StageContext):
    """A stage context whose infer writes one block (the rule name stays ``infer``, as in the
    store's provenance of an unsplit infer)."""

    block: int = 0

    @property
    def paths(self) -> CampaignPaths:
        return BlockPaths(self.cfg.campaign_dir, self.cfg.prepared_dir, self.block)


def run(ctx: StageContext, method: str, block: int, blocks: int) -> None:
    """Downscale block ``block`` of ``blocks`` of the test split with ``method``."""
    from climai.stages import infer

    if not 0 <= block < blocks:
        raise ValueError(f"--block {block} is not in 0..{blocks - 1} (--blocks {blocks})")
    bctx = BlockContext(ctx.cfg, ctx.config_sha256, "infer", ctx.threads, block)
    infer.run(bctx, method, "test", (block, blocks))


def main(ctx: StageContext, args: argparse.Namespace) -> None:
    """Relaunched under torchrun on every GPU of the job, as ``climai infer``."""
    from climai.launch import relaunched_on_every_gpu

    if not (ctx.cfg.infer.device != "cpu" and relaunched_on_every_gpu(args, ctx.threads)):
        run(ctx, args.method, args.block, args.blocks)
