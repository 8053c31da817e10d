"""VQGAN's convolutional building blocks (Esser et al., "Taming Transformers", 2021), shared by CNN encoders
and decoders.

They compute exactly the functions of the published VQGAN code (taming-transformers,
LlamaGen), so released checkpoints load into them: GroupNorm(32, eps 1e-6), swish,
stride-2 3x3 downsampling after (0, 1, 0, 1) padding, nearest x2 upsampling then a
3x3 conv, single-head spatial attention with 1x1 q/k/v/proj convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """VQGAN's normalisation: GroupNorm with 32 groups, eps 1e-6, affine (``channels`` a multiple of 32)."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv3x3, twice, plus a (1x1-projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


def zero_init_block(block: ResnetBlock) -> ResnetBlock:
    """A residual block that starts as the identity: its last conv is zeroed."""
    nn.init.zeros_(block.conv2.weight)
    nn.init.zeros_(block.conv2.bias)
    return block


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with a residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        height = x.shape[2]
        q, k, v = (rearrange(f(h), "b c x y -> b 1 (x y) c") for f in (self.q, self.k, self.v))  # (B, 1, HW, C)
        # Fused attention: the same softmax(q k^T / sqrt(C)) v as the reference, one kernel.
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b 1 (x y) c -> b c x y", x=height)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve H and W: asymmetric (0, 1, 0, 1) zero padding, then a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """The bottleneck: res -> attn -> res."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def attention_levels(levels: list[int], num_levels: int) -> set[int]:
    """Level indices (negative ones count from the lowest resolution) as a set."""
    out = set()
    for level in levels:
        if not -num_levels <= level < num_levels:
            raise ValueError(f"attention level {level} is outside the {num_levels} levels")
        out.add(level % num_levels)
    return out
