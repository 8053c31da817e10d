"""MaskGIT-VQGAN's CNN decoder: the pixel decoder behind TiTok's and One-D-Piece's stage-2 weights.

A VQGAN decoder without attention layers. Its released weights fix the function
(facts from the published code): GroupNorm(32 groups, eps 1e-6) and SiLU; the
residual blocks' 3x3 convs carry no bias; each level above the lowest ends with
nearest x2 upsampling and a 3x3 conv; and where a residual block changes the
channel count, its 1x1 shortcut is applied to the block's *output* (h + W h), not
to its input. vtok keeps that so the weights load and compute what they were
trained to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class MaskGitResBlock(nn.Module):
    """x (B, C_in, h, w) -> (B, C_out, h, w)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        # On a channel change the input cannot be added; the released weights map the output instead.
        return h + (self.nin_shortcut(h) if self.nin_shortcut is not None else x)


class MaskGitUpLevel(nn.Module):
    """The residual blocks of one resolution level, then (above level 0) nearest x2 and a 3x3 conv."""

    def __init__(self, cin: int, cout: int, blocks: int, upsample: bool):
        super().__init__()
        self.block = nn.ModuleList(MaskGitResBlock(cin if j == 0 else cout, cout) for j in range(blocks))
        self.upsample_conv = nn.Conv2d(cout, cout, 3, padding=1) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if self.upsample_conv is not None:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class MaskGitDecoder(nn.Module):
    """z (B, z_channels, h, w) -> images (B, 3, h * 2^(levels-1), w * 2^(levels-1)).

    ``channels[i]`` is the width of resolution level i (0: full resolution), as
    MaskGIT's hidden_channels x channel_mult; ``up[i]`` is indexed by level.
    """

    def __init__(self, z_channels: int, channels: list[int], num_res_blocks: int):
        super().__init__()
        top = channels[-1]
        self.conv_in = nn.Conv2d(z_channels, top, 3, padding=1)
        self.mid = nn.ModuleList(MaskGitResBlock(top, top) for _ in range(num_res_blocks))
        self.up = nn.ModuleList(
            MaskGitUpLevel(channels[min(i + 1, len(channels) - 1)], channels[i], num_res_blocks, upsample=i > 0)
            for i in range(len(channels))
        )
        self.norm_out = _norm(channels[0])
        self.conv_out = nn.Conv2d(channels[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)  # (B, C_top, h, w)
        for block in self.mid:
            x = block(x)
        for level in reversed(self.up):
            x = level(x)  # lowest resolution first
        return self.conv_out(F.silu(self.norm_out(x)))  # (B, 3, H, W)
