"""MAGVIT-v2's image decoder as Open-MAGVIT2 releases it: (B, z_channels, h, w) latents -> images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vtok.config import AT_LEAST_1, ranged
from vtok.interfaces import Decoder
from vtok.nets.magvit2 import AdaptiveGroupNorm, DepthToSpaceUpsample, Magvit2Shape, MagvitResBlock
from vtok.nets.vqgan import group_norm
from vtok.registry import register


@register("decoder", "magvit2")
class Magvit2Decoder(Decoder):
    """conv_in -> ``num_res_blocks`` mid blocks -> per level from the lowest resolution: adaptive
    group norm on the input latents, ``num_res_blocks`` residual blocks, conv + depth-to-space x2
    -> norm -> swish -> conv_out. ``up[i]`` and ``adaptive[i]`` are level i of ``ch_mult``.
    """

    @dataclass
    class Config(Magvit2Shape):
        out_channels: int = ranged(3, AT_LEAST_1)  # channels of the output images (3: RGB)

    def __init__(self, cfg: Config):
        super().__init__()
        self.in_channels = cfg.z_channels
        self.upsample_factor = 2 ** (len(cfg.ch_mult) - 1)
        channels = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, channels, 3, padding=1)
        self.mid_block = nn.ModuleList(MagvitResBlock(channels, channels) for _ in range(cfg.num_res_blocks))
        up, adaptive = [], []
        for level in reversed(range(len(cfg.ch_mult))):
            adaptive.insert(0, AdaptiveGroupNorm(cfg.z_channels, channels))
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(MagvitResBlock(channels, cfg.ch * cfg.ch_mult[level]))
                channels = cfg.ch * cfg.ch_mult[level]
            if level != 0:
                stage.upsample = DepthToSpaceUpsample(channels)
            up.insert(0, stage)
        self.up = nn.ModuleList(up)
        self.adaptive = nn.ModuleList(adaptive)
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, z_channels, h, w) -> (B, 3, h*f, w*f), unbounded (about [-1, 1])."""
        h = self.conv_in(z)  # (B, C, h, w)
        for block in self.mid_block:
            h = block(h)
        for level in reversed(range(len(self.up))):
            h = self.adaptive[level](h, z)  # scale and shift from z's statistics
            stage = self.up[level]
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)  # (B, C, 2h, 2w)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, H, W)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.conv_out.weight
