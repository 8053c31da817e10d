"""FlexTok's register encoder over its VAE's latents (apple/ml-flextok; Bachmann et al., 2025).

images -> the VAE encoder's posterior mean x ``scaling_factor`` (B, c, H/8, W/8) -> patches of p x p latents
(features in (row, col, channel) order) -> linear -> + a fixed 2D sin-cos table cropped to the grid -> then
``num_latent_tokens`` learned registers appended -> FlexTok transformer blocks (:mod:`vtok.nets.flextok`)
under FlexTok's "causal_last" mask (patches attend to patches; register i attends to every patch and to
registers 0..i) -> the registers, LayerNorm'd without affine. The tokenizer's ``to_code`` is then FlexTok's
``enc_to_latents`` projection.

FlexTok may sample the posterior (``sample_posterior``); vtok takes its mean so that tokens are a function of
the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from vtok.interfaces import Encoder
from vtok.nets.flextok import Block, FlexTokShape, plain_norm, sincos_grid, vae_encoder
from vtok.registry import register


@register("encoder", "flextok")
class FlexTokEncoder(Encoder):
    """images (B, 3, H, W) in [-1, 1] -> (B, num_latent_tokens, width) register features."""

    @dataclass
    class Config(FlexTokShape):
        pass

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.out_channels = cfg.width
        self.downsample_factor = cfg.factor * cfg.patch_size
        self.num_latent_tokens = cfg.num_latent_tokens
        self.vae_encoder = vae_encoder(cfg)
        c = cfg.latent_channels
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)
        self.patch_in = nn.Linear(c * cfg.patch_size**2, cfg.width)
        self.register_buffer("patch_pos", sincos_grid(cfg.pos_grid, cfg.pos_grid, cfg.width))
        self.registers = nn.Parameter(torch.randn(cfg.num_latent_tokens, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.head_dim, cfg.mlp_ratio) for _ in range(cfg.depth))

    def vae_latents(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> scaled posterior means (B, c, H/8, W/8)."""
        moments = self.quant_conv(self.vae_encoder(images))  # (B, 2c, h, w)
        return moments[:, : self.cfg.latent_channels] * self.cfg.scaling_factor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.cfg.patch_size
        lat = self.vae_latents(images)  # (B, c, h, w)
        patches = rearrange(lat, "b c (h p) (w q) -> b h w (p q c)", p=p, q=p)
        gh, gw = patches.shape[1:3]
        pos = rearrange(self.patch_pos[:, :, :gh, :gw], "1 d h w -> 1 h w d")
        x = rearrange(self.patch_in(patches) + pos, "b h w d -> b (h w) d")  # (B, P, D)
        regs = repeat(self.registers, "n d -> b n d", b=x.shape[0])
        x = torch.cat([x, regs.to(x.dtype)], dim=1)  # (B, P + N, D)
        mask = causal_last_mask(x.shape[1] - self.num_latent_tokens, self.num_latent_tokens, x.device)
        for block in self.blocks:
            x = block(x, mask)
        return plain_norm(x[:, -self.num_latent_tokens :])  # (B, N, D)


def causal_last_mask(prefix: int, n: int, device: torch.device) -> torch.Tensor:
    """(prefix + n, prefix + n) bool: every token sees the prefix; the last n tokens also see themselves causally."""
    idx = torch.arange(prefix + n, device=device)
    return (idx[None, :] < prefix) | ((idx[:, None] >= prefix) & (idx[None, :] <= idx[:, None]))
