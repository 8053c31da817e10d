"""UniTok's decoder: attention projection up to the ViT width, a ViTamin-width ViT, a convolutional upsampler.

UniTok's ``ViTaminDecoder`` keeps the blocks and final norm of a ViTamin tower (timm
ViT blocks with UniTok's GeGLU; :func:`vtok.nets.unitok.vitamin_blocks`) and
mirrors the tower's MBConv stages with an upsampler: a 2x upsampling convolution to
the second stage's width, ``up_depths[0]`` inverted MBConv blocks (the first
upsampling), ``up_depths[1]`` more to the first stage's width (the first upsampling
again), and an inverted stem (upsampling, LayerNorm + GELU, 3x3 convolution to RGB):
stride 16 in all. Before it, UniTok's attention projection maps the code width up to
the ViT's (``width / in_channels`` heads, concatenated); it mixes tokens, so it belongs
here rather than to a 1x1 ``post_quant_conv`` (a converted model's is the identity).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, ranged
from vtok.errors import VtokError
from vtok.interfaces import Decoder
from vtok.nets.unitok import AttnProjection, InvMbConvBlock, InvStem, Upsample2d, vitamin_blocks
from vtok.registry import register


@register("decoder", "unitok")
class UniTokDecoder(Decoder):
    """(B, in_channels, h, w) codes -> (B, 3, 16h, 16w) images (about [-1, 1]).

    Defaults are UniTok's ``vitamin_large`` decoder: 64 code channels, a 31-block ViT of
    width 1024 and 16 heads, upsampler widths 320 / 160 with 4 / 2 blocks.
    """

    @dataclass
    class Config:
        # Channels of the codes it reads (the quantizer's dim; UniTok's vocab_width)
        in_channels: int = ranged(64, AT_LEAST_1)
        width: int = ranged(1024, AT_LEAST_1)  # viT width
        depth: int = ranged(31, AT_LEAST_1)  # viT blocks
        num_heads: int = ranged(16, AT_LEAST_1)  # attention heads of each ViT block (width must be a multiple)
        # Widths of the two upsampling stages after the ViT
        up_dims: list[int] = ranged([320, 160], AT_LEAST_1)
        # Inverted-MBConv blocks of those two stages (at least 1 each; the first of each upsamples)
        up_depths: list[int] = ranged([4, 2], AT_LEAST_1)
        # The projection's heads; None: width // in_channels (UniTok's)
        proj_heads: int | None = ranged(None, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        if len(cfg.up_dims) != 2 or len(cfg.up_depths) != 2 or min(cfg.up_depths) < 1:
            raise VtokError("unitok decoder: up_dims and up_depths take 2 entries each, depths at least 1")
        heads = cfg.proj_heads or max(cfg.width // cfg.in_channels, 1)
        if cfg.width % heads or cfg.width % cfg.num_heads:
            raise VtokError(f"unitok decoder: width {cfg.width} does not split into {heads} / {cfg.num_heads} heads")
        from vtok.compat import ensure_torchvision

        ensure_torchvision()  # timm imports torchvision
        mid, low = cfg.up_dims
        self.in_channels = cfg.in_channels
        self.proj = AttnProjection(cfg.in_channels, cfg.width, heads)
        self.blocks = vitamin_blocks(cfg.width, cfg.depth, cfg.num_heads)
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.up_conv1 = Upsample2d(cfg.width, mid)
        self.up_conv2 = nn.Sequential(*[InvMbConvBlock(mid, mid, upsample=d == 0) for d in range(cfg.up_depths[0])])
        self.up_conv3 = nn.Sequential(
            *[InvMbConvBlock(mid if d == 0 else low, low, upsample=d == 0) for d in range(cfg.up_depths[1])]
        )
        self.up_conv4 = InvStem(low, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, in_channels, h, w) -> (B, 3, 16h, 16w)."""
        h = z.shape[-2]
        x = self.proj(rearrange(z, "b c h w -> b (h w) c"))  # (B, h*w, width)
        x = self.norm(self.blocks(x))  # (B, h*w, width)
        x = rearrange(x, "b (h w) c -> b c h w", h=h)
        return self.up_conv4(self.up_conv3(self.up_conv2(self.up_conv1(x))))  # (B, 3, 16h, 16w)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.up_conv4.conv2.weight
