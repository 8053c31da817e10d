"""MAGVIT-v2's image encoder as Open-MAGVIT2 releases it: images -> (B, z_channels, H/f, W/f)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vtok.config import AT_LEAST_1, ranged
from vtok.interfaces import Encoder
from vtok.nets.magvit2 import Magvit2Shape, MagvitResBlock
from vtok.nets.vqgan import group_norm
from vtok.registry import register


@register("encoder", "magvit2")
class Magvit2Encoder(Encoder):
    """conv_in (no bias) -> per level: ``num_res_blocks`` residual blocks and a stride-2 3x3 conv
    -> ``num_res_blocks`` mid blocks -> norm -> swish -> 1x1 conv_out. No attention.

    The downsampling factor is 2 ** (len(ch_mult) - 1): Open-MAGVIT2's 256 px model uses
    ch_mult [1, 1, 2, 2, 4] (f16), its 128 px model [1, 2, 2, 4] (f8).
    """

    @dataclass
    class Config(Magvit2Shape):
        in_channels: int = ranged(3, AT_LEAST_1)  # channels of the input images (3: RGB)

    def __init__(self, cfg: Config):
        super().__init__()
        self.out_channels = cfg.z_channels
        self.downsample_factor = 2 ** (len(cfg.ch_mult) - 1)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1, bias=False)
        self.down = nn.ModuleList()
        channels = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(MagvitResBlock(channels, cfg.ch * mult))
                channels = cfg.ch * mult
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
            self.down.append(stage)
        self.mid_block = nn.ModuleList(MagvitResBlock(channels, channels) for _ in range(cfg.num_res_blocks))
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, cfg.z_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [-1, 1] -> (B, z_channels, H/f, W/f)."""
        h = self.conv_in(images)  # (B, ch, H, W)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)  # (B, C, H/2, W/2)
        for block in self.mid_block:
            h = block(h)  # (B, C, h, w)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, z, h, w)
