"""VQGAN / LlamaGen CNN decoder: (B, z_channels, h, w) latents -> images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vtok.config import AT_LEAST_1, LEVEL, NON_NEGATIVE, UNIT, ranged
from vtok.interfaces import Decoder
from vtok.nets.vqgan import AttnBlock, MidBlock, ResnetBlock, Upsample, attention_levels, group_norm
from vtok.registry import register


@register("decoder", "conv")
class ConvDecoder(Decoder):
    """conv_in -> mid -> per level from the lowest resolution: res blocks (+ attention),
    nearest x2 upsample -> norm -> conv_out. ``up[i]`` is level i of ``ch_mult`` (taming's order).
    """

    @dataclass
    class Config:
        out_channels: int = ranged(3, AT_LEAST_1)  # channels of the output images (3: RGB)
        # Base channel count; level i has ch x ch_mult[i] channels (multiples of 32: GroupNorm's 32 groups)
        ch: int = ranged(128, AT_LEAST_1)
        ch_mult: list[int] = ranged([1, 1, 2, 2, 4], AT_LEAST_1)
        # Residual blocks per resolution level, plus one (taming's decoder)
        num_res_blocks: int = ranged(2, NON_NEGATIVE)
        # Levels with self-attention after each res block (negative counts from the lowest resolution; -1: the lowest)
        attn_levels: list[int] = ranged([-1], LEVEL)
        # Channels of the latent grid it reads (the model's post_quant_conv maps the codes to them)
        z_channels: int = ranged(256, AT_LEAST_1)
        dropout: float = ranged(0.0, UNIT)  # dropout inside every residual block (training only)

    def __init__(self, cfg: Config):
        super().__init__()
        self.in_channels = cfg.z_channels
        self.upsample_factor = 2 ** (len(cfg.ch_mult) - 1)
        attn = attention_levels(cfg.attn_levels, len(cfg.ch_mult))
        channels = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, channels, 3, padding=1)
        self.mid = MidBlock(channels, cfg.dropout)
        up = []
        for level in reversed(range(len(cfg.ch_mult))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(channels, cfg.ch * cfg.ch_mult[level], cfg.dropout))
                channels = cfg.ch * cfg.ch_mult[level]
                if level in attn:
                    stage.attn.append(AttnBlock(channels))
            if level != 0:
                stage.upsample = Upsample(channels)
            up.insert(0, stage)
        self.up = nn.ModuleList(up)
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, z_channels, h, w) -> (B, 3, h*f, w*f), unbounded (about [-1, 1])."""
        h = self.mid(self.conv_in(z))  # (B, C, h, w)
        for stage in reversed(self.up):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)  # (B, C, 2h, 2w)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, H, W)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.conv_out.weight
