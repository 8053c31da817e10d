"""GigaTok's 2D hybrid decoder: (B, z_channels, g, g) -> transformer over the grid -> CNN -> pixels (Xiong et al.,
2025).

The cells are layer-normed and embedded to the transformer width, learned positions
added once, pre-norm transformer layers run over the g*g cells; a layer norm and a 3x3
conv give the (B, z_channels, g, g) grid the CNN decoder (adaptive group norm on that
grid's statistics, depth-to-space upsampling) turns into pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.interfaces import Decoder
from vtok.nets.gigatok import CNNDecoder, GigaTok2DShape, QFormerLayer, TransformerLayer, grid_layers
from vtok.registry import register


@register("decoder", "gigatok2d")
class GigaTok2DDecoder(Decoder):
    """(B, z_channels, g, g) quantized grid features -> images (B, 3, g*f, g*f)."""

    @dataclass
    class Config(GigaTok2DShape):
        pass

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.in_channels = cfg.z_channels
        self.upsample_factor = 2 ** (len(cfg.ch_mult) - 1)
        self.ln_pre = nn.LayerNorm(cfg.z_channels)
        self.decoder_embed = nn.Linear(cfg.z_channels, cfg.width)
        self.positional_embedding = nn.Parameter(cfg.width**-0.5 * torch.randn(1, cfg.grid**2, cfg.width))
        layer = QFormerLayer if cfg.qformer_layers else TransformerLayer
        self.transformer = nn.ModuleList(
            layer(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.ln_post = nn.LayerNorm(cfg.width)
        self.conv_out = nn.Conv2d(cfg.width, cfg.z_channels, 3, padding=1)
        self.cnn = CNNDecoder(cfg)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, z_channels, g, g) -> (B, 3, H, W), unbounded (about [-1, 1])."""
        x = self.decoder_embed(self.ln_pre(rearrange(z, "b c h w -> b (h w) c")))  # (B, g*g, D)
        x = grid_layers(self.transformer, x, self.positional_embedding, self.cfg.qformer_layers)
        features = rearrange(self.ln_post(x), "b (h w) d -> b d h w", h=z.shape[2])  # (B, D, g, g)
        return self.cnn(self.conv_out(features))  # (B, 3, H, W)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.cnn.conv_out.weight
