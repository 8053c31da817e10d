"""ViT encoder with N learnable latent tokens (TiTok): patches and latents attend jointly; latents come out.

Blocks are timm's ``Block``. With ``causal_latents`` a latent token attends to the
patches and to the latents before it only, and patches never attend to latents, so
a prefix of the sequence is computed without knowing what follows (One-D-Piece,
FlexTok). ``class_token`` and ``legacy_reshape`` exist to run TiTok's released
weights exactly (see :mod:`vtok.convert`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.errors import VtokError
from vtok.interfaces import Encoder
from vtok.nets.vit import ViTShape, transformer_blocks
from vtok.registry import register


def latent_attention_mask(patches: int, latents: int, causal: bool) -> torch.Tensor | None:
    """(S, S) boolean mask (True: may attend) for [patches | latents], or None for full attention."""
    if not causal:
        return None
    s = patches + latents
    allowed = torch.zeros(s, s, dtype=torch.bool)
    allowed[:, :patches] = True  # everyone sees the patches
    allowed[patches:, patches:] = torch.tril(torch.ones(latents, latents, dtype=torch.bool))
    return allowed


@register("encoder", "vit1d")
class ViTLatentEncoder(Encoder):
    """images (B, 3, H, W) in [-1, 1] -> (B, N, width) latent-token features."""

    @dataclass
    class Config(ViTShape):
        # A latent token attends to the patches and the latents before it only, so any prefix is computed alone
        # (One-D-Piece, FlexTok)
        causal_latents: bool = False
        class_token: bool = False  # a learned token in front of the patches (TiTok's CLIP-style layout)
        # TiTok's released checkpoints (its ``is_legacy``) read the latent features through a reshape of
        # (B, N, D) as (B, D, N), not a transpose, so each code mixes features of several tokens. Only for
        # loading those weights; new models leave it off.
        legacy_reshape: bool = False

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise VtokError("vit1d encoder: image_size must be a multiple of patch_size")
        self.cfg = cfg
        self.grid = cfg.image_size // cfg.patch_size
        self.out_channels = cfg.width
        self.num_latent_tokens = cfg.num_latent_tokens
        self.downsample_factor = cfg.patch_size
        self.patch_embed = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, cfg.width) * 0.02)
        self.latent_tokens = nn.Parameter(torch.randn(1, cfg.num_latent_tokens, cfg.width) * 0.02)
        self.latent_pos = nn.Parameter(torch.randn(1, cfg.num_latent_tokens, cfg.width) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02) if cfg.class_token else None
        self.norm_pre = nn.LayerNorm(cfg.width)
        self.blocks = transformer_blocks(cfg)
        self.norm = nn.LayerNorm(cfg.width)
        prefix = self.grid * self.grid + int(cfg.class_token)
        mask = latent_attention_mask(prefix, cfg.num_latent_tokens, cfg.causal_latents)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.cfg.image_size, self.cfg.image_size):
            raise VtokError(
                f"this 1D tokenizer takes {self.cfg.image_size}x{self.cfg.image_size} images, got "
                f"{images.shape[-2]}x{images.shape[-1]}"
            )
        x = rearrange(self.patch_embed(images), "b d h w -> b (h w) d") + self.pos_embed  # (B, P, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + P, D)
        latents = (self.latent_tokens + self.latent_pos).expand(x.shape[0], -1, -1)  # (B, N, D)
        x = self.norm_pre(torch.cat([x, latents], dim=1))  # (B, P + N, D)
        for block in self.blocks:
            x = block(x, attn_mask=self.attn_mask)
        z = self.norm(x[:, -self.num_latent_tokens :])  # (B, N, D)
        if self.cfg.legacy_reshape:
            z = rearrange(z.reshape(z.shape[0], z.shape[2], z.shape[1]), "b d n -> b n d")
        return z
