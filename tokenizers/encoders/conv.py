"""VQGAN / LlamaGen CNN encoder: images -> (B, z_channels, H/f, W/f) latents."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vtok.config import AT_LEAST_1, LEVEL, NON_NEGATIVE, UNIT, ranged
from vtok.interfaces import Encoder
from vtok.nets.vqgan import AttnBlock, Downsample, MidBlock, ResnetBlock, attention_levels, group_norm
from vtok.registry import register


@register("encoder", "conv")
class ConvEncoder(Encoder):
    """conv_in -> per level: res blocks (+ attention) and a stride-2 downsample -> mid -> conv_out.

    The downsampling factor is 2 ** (len(ch_mult) - 1).
    """

    @dataclass
    class Config:
        in_channels: int = ranged(3, AT_LEAST_1)  # channels of the input images (3: RGB)
        # Base channel count; level i has ch x ch_mult[i] channels (multiples of 32: GroupNorm's 32 groups)
        ch: int = ranged(128, AT_LEAST_1)
        # Channel multiplier per resolution level; a stride-2 downsample between levels: factor 2^(len - 1)
        ch_mult: list[int] = ranged([1, 1, 2, 2, 4], AT_LEAST_1)
        num_res_blocks: int = ranged(2, NON_NEGATIVE)  # residual blocks per resolution level
        # Levels with self-attention after each res block (negative counts from the lowest resolution; -1: the lowest)
        attn_levels: list[int] = ranged([-1], LEVEL)
        # Channels of the latent grid it outputs (the model's quant_conv maps them to the quantizer's dim)
        z_channels: int = ranged(256, AT_LEAST_1)
        dropout: float = ranged(0.0, UNIT)  # dropout inside every residual block (training only)

    def __init__(self, cfg: Config):
        super().__init__()
        self.out_channels = cfg.z_channels
        self.downsample_factor = 2 ** (len(cfg.ch_mult) - 1)
        attn = attention_levels(cfg.attn_levels, len(cfg.ch_mult))
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        channels = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(channels, cfg.ch * mult, cfg.dropout))
                channels = cfg.ch * mult
                if level in attn:
                    stage.attn.append(AttnBlock(channels))
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(channels)
            self.down.append(stage)
        self.mid = MidBlock(channels, cfg.dropout)
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, cfg.z_channels, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [-1, 1] -> (B, z_channels, H/f, W/f)."""
        h = self.conv_in(images)  # (B, ch, H, W)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)  # (B, C, H/2, W/2)
        h = self.mid(h)  # (B, C, h, w)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, z, h, w)
