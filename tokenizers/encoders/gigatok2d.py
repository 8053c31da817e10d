"""GigaTok's 2D hybrid encoder: CNN -> transformer over the grid -> (B, z_channels, g, g) (Xiong et al., 2025).

The CNN's grid cells are layer-normed and embedded to the transformer width, learned
positions are added once, pre-norm transformer layers run over the g*g cells
(:class:`~vtok.nets.gigatok.TransformerLayer`, GigaTok's ``transformer_layer_type:
TransformerLayer``), and a layer norm and a 1x1 conv give back ``z_channels`` a cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.errors import VtokError
from vtok.interfaces import Encoder
from vtok.nets.gigatok import CNNEncoder, GigaTok2DShape, QFormerLayer, TransformerLayer, grid_layers
from vtok.registry import register


@register("encoder", "gigatok2d")
class GigaTok2DEncoder(Encoder):
    """images (B, 3, H, W) in [-1, 1] -> (B, z_channels, H/f, W/f) grid features."""

    @dataclass
    class Config(GigaTok2DShape):
        pass

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.out_channels = cfg.z_channels
        self.downsample_factor = 2 ** (len(cfg.ch_mult) - 1)
        self.cnn = CNNEncoder(cfg)
        self.ln_pre = nn.LayerNorm(cfg.z_channels)
        self.encoder_embed = nn.Linear(cfg.z_channels, cfg.width)
        self.positional_embedding = nn.Parameter(cfg.width**-0.5 * torch.randn(1, cfg.grid**2, cfg.width))
        layer = QFormerLayer if cfg.qformer_layers else TransformerLayer
        self.transformer = nn.ModuleList(
            layer(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.ln_post = nn.LayerNorm(cfg.width)
        self.conv_out = nn.Conv2d(cfg.width, cfg.z_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [-1, 1], H = W = image_size -> (B, z_channels, g, g)."""
        size = self.cfg.image_size
        if images.shape[-2:] != (size, size):
            raise VtokError(
                f"this GigaTok tokenizer takes {size}x{size} images, got {images.shape[-2]}x{images.shape[-1]}"
            )
        grid = self.cnn(images)  # (B, z, g, g)
        x = self.encoder_embed(self.ln_pre(rearrange(grid, "b c h w -> b (h w) c")))  # (B, g*g, D)
        x = grid_layers(self.transformer, x, self.positional_embedding, self.cfg.qformer_layers)
        return self.conv_out(rearrange(self.ln_post(x), "b (h w) d -> b d h w", h=grid.shape[2]))  # (B, z, g, g)
