"""GigaTok's hybrid decoder: N 1D tokens -> Q-Former -> grid features -> CNN -> pixels (Xiong et al., 2025).

The tokens are layer-normed and embedded to the Q-Former width; they are the memory,
with learned positions on their keys. The g*g grid queries all start as the first
embedded token, with learned grid positions; after the layers a layer norm and a 3x3
conv give the (B, z_channels, g, g) grid the CNN decoder (adaptive group norm on that
grid's statistics, depth-to-space upsampling) turns into pixels.

A prefix of the tokens decodes as GigaTok computes it on the shorter sequence: the
memory positions past each sample's length are left out of the cross-attention, so
``mask_token`` (what the ordering part fills them with) never reaches the output; it
is a zero buffer, not a weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.interfaces import Decoder
from vtok.nets.gigatok import CNNDecoder, GigaTok1DShape, QFormerLayer
from vtok.registry import register


@register("decoder", "gigatok")
class GigaTokDecoder(Decoder):
    """(B, N, z_channels) token latents (positions past ``lengths`` ignored) -> images (B, 3, H, W)."""

    @dataclass
    class Config(GigaTok1DShape):
        pass

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.in_channels = cfg.z_channels
        self.upsample_factor = 2 ** (len(cfg.ch_mult) - 1)
        self.register_buffer("mask_token", torch.zeros(cfg.z_channels), persistent=False)
        scale = cfg.width**-0.5
        self.ln_pre = nn.LayerNorm(cfg.z_channels)
        self.decoder_embed = nn.Linear(cfg.z_channels, cfg.width)
        self.positional_embedding = nn.Parameter(scale * torch.randn(1, cfg.grid**2, cfg.width))
        self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(1, cfg.num_latent_tokens, cfg.width))
        self.transformer = nn.ModuleList(
            QFormerLayer(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.ln_post = nn.LayerNorm(cfg.width)
        self.conv_out = nn.Conv2d(cfg.width, cfg.z_channels, 3, padding=1)
        self.cnn = CNNDecoder(cfg)

    def forward(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """latents: (B, N, z_channels); lengths: (B,) kept tokens (None: all) -> (B, 3, H, W), unbounded."""
        b, n = latents.shape[:2]
        memory = self.decoder_embed(self.ln_pre(latents))  # (B, N, D)
        padding = None
        if lengths is not None and bool((lengths < n).any()):
            padding = torch.arange(n, device=latents.device)[None, :] >= lengths[:, None]  # (B, N)
        grid = self.cfg.grid
        queries = memory[:, :1].expand(b, grid * grid, -1)  # (B, g*g, D): every query starts as token 0
        memory_pos = self.latent_token_positional_embedding[:, :n]
        for layer in self.transformer:
            queries = layer(queries, memory, self.positional_embedding, memory_pos, padding)
        features = rearrange(self.ln_post(queries), "b (h w) d -> b d h w", h=grid)  # (B, D, g, g)
        return self.cnn(self.conv_out(features))  # (B, 3, H, W)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.cnn.conv_out.weight
