"""ViT decoder from a prefix of 1D tokens: quantized latents (mask tokens past each sample's length) + patch queries -> pixels.

Positions at or past a sample's kept length are replaced before decoding (by a
learned mask token, or as the ordering part says), so one batch may hold samples
of different lengths. Patch outputs are unpatchified linearly; ``conv_head``
adds a small CNN on the pixels (TiTok's pixel decoder idea, kept light).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn
from vtok.tokenizers.encoders.vit import ViTShape

from vtok.registry import register


def unpatchify(patches: torch.Tensor, grid: int, patch: int) -> torch.Tensor:
    """(B, grid*grid, 3*patch*patch) -> images (B, 3, grid*patch, grid*patch)."""
    return rearrange(patches, "b (h w) (c p q) -> b c (h p) (w q)", h=grid, p=patch, q=patch, c=3)


@register("decoder", "vit1d")
class ViTLatentDecoder(nn.Module):
    """(B, N, code_dim) latents, with positions past ``lengths`` already filled -> (B, 3, H, W)."""

    @dataclass
    class Config(ViTShape):
        conv_head: int = 0  # 3x3 conv layers after unpatchify (0: linear unpatchify only)

    def __init__(self, cfg: Config):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.cfg = cfg
        self.grid = cfg.image_size // cfg.patch_size
        self.in_channels = cfg.width
        self.mask_token = nn.Parameter(torch.zeros(cfg.width))
        self.latent_pos = nn.Parameter(torch.randn(1, cfg.num_latent_tokens, cfg.width) * 0.02)
        self.patch_queries = nn.Parameter(torch.randn(1, self.grid * self.grid, cfg.width) * 0.02)
        self.norm_pre = nn.LayerNorm(cfg.width)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio, qkv_bias=True) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.to_pixels = nn.Linear(cfg.width, 3 * cfg.patch_size * cfg.patch_size)
        head: list[nn.Module] = []
        for _ in range(cfg.conv_head):
            head += [nn.Conv2d(3, 64, 3, padding=1), nn.SiLU(), nn.Conv2d(64, 3, 3, padding=1)]
        self.head = nn.Sequential(*head)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: (B, N, width), already masked past each length -> images (B, 3, H, W)."""
        b = latents.shape[0]
        x = torch.cat([latents + self.latent_pos, self.patch_queries.expand(b, -1, -1)], dim=1)  # (B, N + P, D)
        x = self.norm_pre(x)
        for block in self.blocks:
            x = block(x)
        x = self.to_pixels(self.norm(x[:, self.cfg.num_latent_tokens :]))  # (B, P, 3 p p)
        images = unpatchify(x, self.grid, self.cfg.patch_size)
        return images + self.head(images) if self.cfg.conv_head else images

    @property
    def last_layer(self) -> torch.Tensor:
        return self.to_pixels.weight
