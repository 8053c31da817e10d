"""Patch encoder: a linear patch embedding, then residual conv blocks on the latent grid.

A VQGAN CNN starts far below a linear code of raw patches and needs thousands of
steps to pass it (DESIGN.md, quality floors). This encoder starts as that linear
patch code (its residual blocks are zero-initialised, so at step 0 the latent is a
linear function of the patch) and learns the rest on the f-times smaller grid,
where each block costs f^2 less than at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vtok.interfaces import Encoder
from vtok.nets.patch import PatchShape
from vtok.nets.vqgan import ResnetBlock, group_norm, zero_init_block
from vtok.registry import register


@register("encoder", "patch")
class PatchEncoder(Encoder):
    """images (B, 3, H, W) -> (B, z_channels, H/p, W/p): linear patch embedding + residual blocks."""

    @dataclass
    class Config(PatchShape):
        pass

    def __init__(self, cfg: Config):
        super().__init__()
        self.out_channels = cfg.z_channels
        self.downsample_factor = cfg.patch_size
        self.patch_embed = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.blocks = nn.Sequential(
            *(zero_init_block(ResnetBlock(cfg.width, cfg.width)) for _ in range(cfg.num_blocks))
        )
        self.norm_out = group_norm(cfg.width)
        self.conv_out = nn.Conv2d(cfg.width, cfg.z_channels, 1)
        # The linear path beside the blocks: at initialisation the latent is a linear patch code.
        self.linear_out = nn.Conv2d(cfg.width, cfg.z_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [-1, 1] -> (B, z_channels, H/p, W/p)."""
        x = self.patch_embed(images)  # (B, W, h, w)
        h = self.blocks(x)  # (B, W, h, w)
        return self.linear_out(x) + self.conv_out(F.silu(self.norm_out(h)))  # (B, z, h, w)
