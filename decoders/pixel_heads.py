"""Pixel heads for the 1D ViT decoder: patch features on the decoder's grid -> an image.

- ``maskgit_vqgan``: TiTok's stage-2 head. A 1x1 conv MLP (tanh) predicts, at each
  patch, logits over the codes of a MaskGIT-VQGAN; the softmax-weighted sum of those
  codes is decoded by MaskGIT-VQGAN's CNN (:mod:`vtok.decoders.maskgit_vqgan`), so
  each patch is upsampled 2^(levels-1) times.
- ``patch_conv``: TiTok's direct-RGB head: a 1x1 conv to p*p*3 values per patch,
  laid out (p, q, channel), then a 3x3 conv over the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import einsum, rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, ranged
from vtok.decoders.maskgit_vqgan import MaskGitDecoder
from vtok.registry import register


@register("pixel_head", "maskgit_vqgan")
class MaskGitHead(nn.Module):
    """(B, g*g, width) patch features -> (B, 3, g * 2^(levels-1), g * 2^(levels-1)) images."""

    @dataclass
    class Config:
        width: int = ranged(1024, AT_LEAST_1)  # the ViT decoder's width
        hidden: int = ranged(2048, AT_LEAST_1)  # the 1x1-conv MLP's width (TiTok: 2 x width)
        # Codes of the MaskGIT-VQGAN codebook the head predicts a softmax over at each patch
        codebook_size: int = ranged(1024, AT_LEAST_1)
        code_dim: int = ranged(256, AT_LEAST_1)  # width of those codes: the channels the MaskGIT-VQGAN decoder reads
        # channels[i]: the width of level i of that decoder (level 0 at full resolution); a patch is upsampled
        # 2^(len - 1) times
        channels: list[int] = ranged([128, 128, 256, 256, 512], AT_LEAST_1)
        num_res_blocks: int = ranged(2, NON_NEGATIVE)  # residual blocks per resolution level of that decoder

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.upsample_factor = 2 ** (len(cfg.channels) - 1)
        self.ffn = nn.Sequential(
            nn.Conv2d(cfg.width, cfg.hidden, 1), nn.Tanh(), nn.Conv2d(cfg.hidden, cfg.codebook_size, 1)
        )
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, cfg.code_dim) / cfg.code_dim**0.5)
        self.decoder = MaskGitDecoder(cfg.code_dim, cfg.channels, cfg.num_res_blocks)

    def forward(self, x: torch.Tensor, grid: int) -> torch.Tensor:
        x = rearrange(x, "b (h w) d -> b d h w", h=grid)  # (B, D, g, g)
        probs = self.ffn(x).softmax(dim=1)  # (B, K, g, g)
        z = einsum(probs, self.codebook.to(probs.dtype), "b k h w, k d -> b d h w")  # (B, code_dim, g, g)
        return self.decoder(z)  # (B, 3, H, W)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


@register("pixel_head", "patch_conv")
class PatchConvHead(nn.Module):
    """(B, g*g, width) patch features -> (B, 3, g*p, g*p) images."""

    @dataclass
    class Config:
        width: int = ranged(768, AT_LEAST_1)  # the ViT decoder's width (channels of each patch feature)
        # Side p of the square patch each feature becomes (must equal the decoder's patch_size)
        patch_size: int = ranged(16, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.upsample_factor = cfg.patch_size
        self.ffn = nn.Conv2d(cfg.width, 3 * cfg.patch_size**2, 1)
        self.conv_out = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, grid: int) -> torch.Tensor:
        x = self.ffn(rearrange(x, "b (h w) d -> b d h w", h=grid))  # (B, p*p*3, g, g)
        p = self.cfg.patch_size
        return self.conv_out(rearrange(x, "b (p q c) h w -> b c (h p) (w q)", p=p, q=p))  # (B, 3, H, W)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.conv_out.weight
