"""GigaTok's hybrid encoder: CNN -> Q-Former -> N 1D tokens (Xiong et al., 2025; blocks in :mod:`vtok.nets.gigatok`).

The CNN's (B, z_channels, g, g) grid is flattened, layer-normed and embedded to the
Q-Former width; it is the memory the queries read. The N queries start as block
averages of the embedded grid, coarse to fine (:func:`~vtok.nets.gigatok.multi_level_queries`,
GigaTok's ``multi_level_query_init``), through a linear map; learned positions go on
the grid's keys and on the queries. The queries leave through a layer norm and a
linear map back to ``z_channels`` (GigaTok's 1x1 ``conv_out`` over its fake (1, N) grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.errors import VtokError
from vtok.interfaces import Encoder
from vtok.nets.gigatok import CNNEncoder, GigaTok1DShape, QFormerLayer, multi_level_queries
from vtok.registry import register


@register("encoder", "gigatok")
class GigaTokEncoder(Encoder):
    """images (B, 3, H, W) in [-1, 1] -> (B, num_latent_tokens, z_channels) 1D token features."""

    @dataclass
    class Config(GigaTok1DShape):
        pass

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.out_channels = cfg.z_channels
        self.num_latent_tokens = cfg.num_latent_tokens
        self.downsample_factor = 2 ** (len(cfg.ch_mult) - 1)
        scale = cfg.width**-0.5
        self.cnn = CNNEncoder(cfg)
        self.ln_pre = nn.LayerNorm(cfg.z_channels)
        self.encoder_embed = nn.Linear(cfg.z_channels, cfg.width)
        self.positional_embedding = nn.Parameter(scale * torch.randn(1, cfg.grid**2, cfg.width))
        self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(1, cfg.num_latent_tokens, cfg.width))
        self.global_proj = nn.Linear(cfg.width, cfg.width)
        self.transformer = nn.ModuleList(
            QFormerLayer(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.ln_post = nn.LayerNorm(cfg.width)
        self.proj_out = nn.Linear(cfg.width, cfg.z_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [-1, 1], H = W = image_size -> (B, N, z_channels)."""
        size = self.cfg.image_size
        if images.shape[-2:] != (size, size):
            raise VtokError(
                f"this GigaTok tokenizer takes {size}x{size} images, got {images.shape[-2]}x{images.shape[-1]}"
            )
        grid = self.cnn(images)  # (B, z, g, g)
        memory = self.encoder_embed(self.ln_pre(rearrange(grid, "b c h w -> b (h w) c")))  # (B, g*g, D)
        pooled = multi_level_queries(rearrange(memory, "b (h w) d -> b d h w", h=grid.shape[2]), self.num_latent_tokens)
        queries = self.global_proj(pooled)  # (B, N, D)
        for layer in self.transformer:
            queries = layer(queries, memory, self.latent_token_positional_embedding, self.positional_embedding)
        return self.proj_out(self.ln_post(queries))  # (B, N, z)
