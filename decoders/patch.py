"""Patch decoder: residual conv blocks on the latent grid, then a linear unpatchify.

The mirror of :mod:`vtok.tokenizers.encoders.patch`. Each latent position draws its
own p x p patch, seeing its neighbours through the 3x3 blocks (which is what lets
it blend across patch edges, where a classic patch codec is blocky). A linear path
from the latent straight to the patch pixels sits beside the blocks, so training
starts as a linear patch code. ``refine_blocks`` adds residual blocks at full
resolution on a narrow width, to soften what patch edges remain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, ranged
from vtok.interfaces import Decoder
from vtok.nets.patch import PatchShape
from vtok.nets.vqgan import ResnetBlock, group_norm, zero_init_block
from vtok.registry import register


@register("decoder", "patch")
class PatchDecoder(Decoder):
    """(B, z_channels, h, w) -> (B, 3, h*p, w*p): residual blocks + linear unpatchify (+ full-resolution refinement)."""

    @dataclass
    class Config(PatchShape):
        # Residual blocks at full resolution after the unpatchify, to soften patch edges (0: none)
        refine_blocks: int = ranged(0, NON_NEGATIVE)
        refine_width: int = ranged(32, AT_LEAST_1)  # channels of those full-resolution blocks (a multiple of 32)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.in_channels = cfg.z_channels
        self.upsample_factor = cfg.patch_size
        pixels = 3 * cfg.patch_size * cfg.patch_size
        self.conv_in = nn.Conv2d(cfg.z_channels, cfg.width, 3, padding=1)
        self.blocks = nn.Sequential(
            *(zero_init_block(ResnetBlock(cfg.width, cfg.width)) for _ in range(cfg.num_blocks))
        )
        self.norm_out = group_norm(cfg.width)
        self.to_pixels = nn.Conv2d(cfg.width, pixels, 1)
        self.linear_pixels = nn.Conv2d(cfg.z_channels, pixels, 1)
        self.refine = None
        if cfg.refine_blocks:
            self.refine = nn.Sequential(
                nn.Conv2d(3, cfg.refine_width, 3, padding=1),
                *(zero_init_block(ResnetBlock(cfg.refine_width, cfg.refine_width)) for _ in range(cfg.refine_blocks)),
                group_norm(cfg.refine_width),
                nn.SiLU(),
                nn.Conv2d(cfg.refine_width, 3, 3, padding=1),
            )
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, z_channels, h, w) -> (B, 3, h*p, w*p), unbounded (about [-1, 1])."""
        h = self.blocks(self.conv_in(z))  # (B, W, h, w)
        patches = self.to_pixels(F.silu(self.norm_out(h))) + self.linear_pixels(z)  # (B, 3*p*p, h, w)
        p = self.cfg.patch_size
        images = rearrange(patches, "b (c p q) h w -> b c (h p) (w q)", c=3, p=p, q=p)  # (B, 3, H, W)
        return images if self.refine is None else images + self.refine(images)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.to_pixels.weight
