"""A residual U-Net: the output is the interpolated LR field plus a learned correction.

With ``noise_channels > 0`` the network is stochastic: Gaussian noise is drawn at every level of
the encoder (after its block) and of the decoder (before its block), every scale from the patch
size down to the coarsest level, and added through a learned 1×1 projection, so each forward pass
draws one ensemble member; no noise reaches the output without passing through convolutions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from climai.config.methods import UNetConfig


class ChannelNorm(nn.Module):
    """Normalisation over the channels of each cell (a per-pixel layer norm), with affine terms.

    Unlike group or batch norm over the image, its statistics never mix cells: the output at a cell
    depends only on the receptive field, so a model applied tile by tile equals the model applied
    to the whole domain (seamless tiled inference) and patches and domains of any size behave alike.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels last: the per-cell channel vectors are contiguous, layer_norm's fast path
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class _Block(nn.Sequential):
    """Two 3×3 convolutions, each followed by a per-cell channel norm and SiLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            ChannelNorm(cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            ChannelNorm(cout),
            nn.SiLU(),
        )


class _Noise(nn.Module):
    """Adds ``proj(z)`` with ``z`` standard normal noise of ``k`` channels at the input's size."""

    def __init__(self, k: int, channels: int) -> None:
        super().__init__()
        self.k = k
        self.proj = nn.Conv2d(k, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.randn(x.shape[0], self.k, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + self.proj(z.contiguous(memory_format=torch.channels_last)).to(x.dtype)


class ResidualUNet(nn.Module):
    """U-Net that predicts a residual on top of ``base`` (the interpolated LR, normalised).

    ``forward(x, base)`` returns ``base + net(x)``; the last layer starts at zero, so an untrained
    model reproduces its interpolation baseline exactly. Upsampling is bilinear interpolation
    followed by convolution (no transposed convolutions: they leave checkerboard power).
    """

    def __init__(
        self, in_channels: int, out_channels: int, channels: list[int], noise_channels: int = 0
    ) -> None:
        super().__init__()
        self.noise_channels = noise_channels
        self.down = nn.ModuleList()
        cin = in_channels
        for c in channels:
            self.down.append(_Block(cin, c))
            cin = c
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for c_skip, c_deep in zip(channels[-2::-1], channels[:0:-1], strict=True):
            self.up.append(nn.Conv2d(c_deep, c_skip, 3, padding=1))
            self.fuse.append(_Block(2 * c_skip, c_skip))
        self.head = nn.Conv2d(channels[0], out_channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if noise_channels:
            self.noise_down = nn.ModuleList(_Noise(noise_channels, c) for c in channels)
            self.noise_up = nn.ModuleList(_Noise(noise_channels, c) for c in channels[-2::-1])

    @property
    def stochastic(self) -> bool:
        return self.noise_channels > 0

    @property
    def multiple(self) -> int:
        """Spatial sizes must be a multiple of this (one halving per level)."""
        return 2 ** (len(self.down) - 1)

    @property
    def receptive_radius(self) -> int:
        """HR cells an output cell sees on each side: 9 · 2^(levels − 1) − 7 (2 convolutions per
        block, one before each upsampling, pooling and bilinear reach; 29 for 3 levels, 65 for 4).
        Tiles are exact when ``infer.overlap`` is at least 4 × this."""
        return 9 * 2 ** (len(self.down) - 1) - 7

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The first block's output: no noise reaches it, so every member of an ensemble drawn
        from the same input shares it (``forward(x, base, stem=...)``), a tenth of a member's
        cost at the transfer campaigns' widths."""
        return self.down[0](x)  # type: ignore[no-any-return]

    def forward(
        self, x: torch.Tensor, base: torch.Tensor, stem: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``base`` + the network's correction; ``stem``: :meth:`stem` of this ``x``, if known
        (the same result, the first block not run again)."""
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.avg_pool2d(x, 2)
            x = block(x) if i or stem is None else stem
            if self.noise_channels:
                x = self.noise_down[i](x)
            skips.append(x)
        for j, (up, fuse, skip) in enumerate(zip(self.up, self.fuse, skips[-2::-1], strict=True)):
            x = up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            if self.noise_channels:
                # before the block, not after: every draw passes through two 3×3 convolutions
                # that give it spatial structure (noise added after the last block reached the
                # output as white noise: 3–4× the true power at 2–4 cells, BENCHMARKS.md)
                x = self.noise_up[j](x)
            x = fuse(torch.cat([x, skip], dim=1))
        return base + self.head(x).to(base.dtype)


def build_unet(cfg: UNetConfig, in_channels: int, out_channels: int) -> ResidualUNet:
    """The network of the ``unet`` and ``unet-crps`` method types (their registry ``build``):
    stochastic, with ``noise_channels`` at every level, for a CRPS config."""
    noise = int(getattr(cfg, "noise_channels", 0))
    return ResidualUNet(in_channels, out_channels, list(cfg.channels), noise)
