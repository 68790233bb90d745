"""The weight layouts of climai's networks (registry ``layout``), without torch: the config
checks a fine-tuned method's parent against them when it is validated (at Snakefile parse and in
every job), where importing torch would cost each ingest, preprocess or evaluate job ~1.5 s."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climai.config.methods import UNetConfig


def weight_layout(cfg: UNetConfig, groups: dict[str, list[str]]) -> dict[str, Any]:
    """The facts that decide the shapes and names of the U-Net's weights (its registry
    ``layout``), recorded in the model card: a fine-tuned U-Net's parent must have the same ones
    (a deterministic parent may start a stochastic child: only its noise projections are new)."""
    return {
        "name": "ResidualUNet",
        "norm": "channel",
        "channels": list(cfg.channels),
        "noise_channels": int(getattr(cfg, "noise_channels", 0)),
        "groups": groups,
    }
