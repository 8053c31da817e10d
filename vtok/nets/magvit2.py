"""MAGVIT-v2's convolutional blocks (Yu et al., "Language Model Beats Diffusion", 2024), as Open-MAGVIT2's
image tokenizer builds them.

They differ from VQGAN's (:mod:`vtok.nets.vqgan`) in ways a released checkpoint depends on:
residual blocks have bias-free convolutions and no attention anywhere, downsampling is a
stride-2 3x3 conv with symmetric padding, upsampling is a 3x3 conv to 4x the channels
then depth-to-space, and every decoder level starts with an adaptive group norm whose
scale and shift are linear maps of the per-channel spread and mean of the decoder's
input latents. Parameter names follow Open-MAGVIT2's, so its weights load by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, ranged
from vtok.errors import VtokError
from vtok.nets.vqgan import group_norm


@dataclass
class Magvit2Shape:
    """What the MAGVIT-v2 encoder and decoder share (Open-MAGVIT2's ``ddconfig``): base width, width
    multiplier a level (one level a factor 2), residual blocks a level, latent channels."""

    # Base channels; level i has ch x ch_mult[i] (multiples of 32: GroupNorm's 32 groups)
    ch: int = ranged(128, AT_LEAST_1)
    # Channel multiplier per resolution level; a factor 2 between levels: f = 2^(len - 1)
    ch_mult: list[int] = ranged([1, 1, 2, 2, 4], AT_LEAST_1)
    num_res_blocks: int = ranged(4, AT_LEAST_1)
    z_channels: int = ranged(18, AT_LEAST_1)  # channels of the latent grid (18: Open-MAGVIT2's 18 LFQ bits)

    def __post_init__(self) -> None:
        if not self.ch_mult or any(m < 1 or self.ch * m % 32 for m in self.ch_mult):
            raise VtokError(
                f"ch x ch_mult must be multiples of 32 (GroupNorm's 32 groups), got {self.ch} x {self.ch_mult}"
            )


class MagvitResBlock(nn.Module):
    """norm -> swish -> conv3x3 (no bias), twice, plus a bias-free 1x1 shortcut where the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x)


class DepthToSpaceUpsample(nn.Module):
    """Double H and W: a 3x3 conv to 4C channels, then depth-to-space in DCR order.

    DCR: output pixel (2y + i, 2x + j) of channel c reads input channel (2i + j) * C + c,
    which is not ``F.pixel_shuffle``'s order (c * 4 + 2i + j); the weights are trained for DCR.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4 * channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.conv1(x), "b (i j c) h w -> b c (h i) (w j)", i=2, j=2)  # (B, C, 2H, 2W)


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then scale = gamma(std of z) and shift = beta(mean of z), per sample.

    ``z`` is the decoder's input latent grid (B, z_channels, h, w); its per-channel
    statistics over positions condition every decoder level.
    """

    def __init__(self, z_channels: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.gn = nn.GroupNorm(32, channels, eps=eps, affine=False)
        self.gamma = nn.Linear(z_channels, channels)
        self.beta = nn.Linear(z_channels, channels)
        self.eps = eps

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        flat = rearrange(z, "b c h w -> b c (h w)")
        if flat.shape[-1] < 2:
            raise VtokError(
                "the MAGVIT-v2 decoder needs a latent grid of at least 2 positions (its norm uses their spread)"
            )
        # Unbiased variance (n - 1): what Open-MAGVIT2's code computes and its weights are trained with.
        std = (flat.var(dim=-1, correction=1) + self.eps).sqrt()  # (B, z_channels)
        scale = rearrange(self.gamma(std), "b c -> b c 1 1")
        shift = rearrange(self.beta(flat.mean(dim=-1)), "b c -> b c 1 1")
        return scale * self.gn(x) + shift
