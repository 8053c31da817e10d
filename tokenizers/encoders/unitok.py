"""UniTok's encoder: timm's ViTamin tower, then UniTok's attention projection down to the code width.

The ViTamin hybrid (two MBConv stages and a strided convolution to stride 16, then a
ViT with GeGLU MLPs; :func:`vtok.nets.unitok.vitamin_tower`) is built from timm with
random weights, with UniTok's settings: no position embedding, class or register token,
the tokens after the final norm. The attention projection (:class:`vtok.nets.unitok.AttnProjection`,
``embed_dim / z_channels`` heads averaged into one) maps each token to the quantizer's
width; it mixes tokens, so it belongs to the encoder rather than to a 1x1 ``quant_conv``
(a converted model's ``quant_conv`` is the identity).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from vtok.config import AT_LEAST_1, ranged
from vtok.errors import VtokError
from vtok.interfaces import Encoder
from vtok.nets.unitok import AttnProjection, vitamin_tower
from vtok.registry import register


@register("encoder", "unitok")
class UniTokEncoder(Encoder):
    """images (B, 3, H, W) in [-1, 1] at ``img_size`` -> (B, z_channels, H/16, W/16).

    Defaults are UniTok's ``vitamin_large`` (stem 160, MBConv stages 160 / 320 with 2 / 4
    blocks, a 31-block ViT of width 1024 and 16 heads) projected to 64 channels.
    """

    @dataclass
    class Config:
        img_size: int = ranged(256, AT_LEAST_1)
        stem_width: int = ranged(160, AT_LEAST_1)  # the convolutional stem's width
        stage_dims: list[int] = ranged([160, 320, 1024], AT_LEAST_1)  # MBConv stage 1, 2; the ViT width
        stage_depths: list[int] = ranged([2, 4], AT_LEAST_1)  # MBConv blocks per stage
        depth: int = ranged(31, AT_LEAST_1)  # ViT blocks
        # Attention heads of each ViT block (the ViT width, stage_dims[-1], must be a multiple)
        num_heads: int = ranged(16, AT_LEAST_1)
        z_channels: int = ranged(64, AT_LEAST_1)  # the projection's output width (UniTok's vocab_width)
        # The projection's heads; None: stage_dims[-1] // z_channels (UniTok's)
        proj_heads: int | None = ranged(None, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        if len(cfg.stage_dims) != 3 or len(cfg.stage_depths) != 2:
            raise VtokError("unitok encoder: stage_dims takes 3 widths (2 MBConv stages, the ViT), stage_depths 2")
        width = cfg.stage_dims[-1]
        if cfg.img_size % 16 or width % cfg.num_heads:
            raise VtokError(f"unitok encoder: img_size {cfg.img_size} must be a multiple of 16, width {width} of heads")
        heads = cfg.proj_heads or max(width // cfg.z_channels, 1)
        if width % heads or (width % cfg.z_channels and cfg.z_channels % width):
            raise VtokError(f"unitok encoder: width {width} and z_channels {cfg.z_channels} do not fit {heads} heads")
        from vtok.compat import ensure_torchvision

        ensure_torchvision()  # timm imports torchvision
        self.tower = vitamin_tower(
            cfg.img_size, cfg.stem_width, cfg.stage_dims, cfg.stage_depths, cfg.depth, cfg.num_heads
        )
        self.proj = AttnProjection(width, cfg.z_channels, heads)
        self.img_size = cfg.img_size
        self.out_channels = cfg.z_channels
        self.downsample_factor = 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> (B, z_channels, H/16, W/16)."""
        if tuple(images.shape[-2:]) != (self.img_size, self.img_size):
            raise VtokError(f"unitok encoder takes {self.img_size}px images, got {tuple(images.shape[-2:])}")
        tokens = self.proj(self.tower(images))  # (B, h*w, z_channels)
        return rearrange(tokens, "b (h w) c -> b c h w", h=self.img_size // 16)
