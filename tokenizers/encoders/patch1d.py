"""A 1D encoder on the patch network: residual conv blocks on the patch grid, then a global linear map to N tokens.

The ViT encoders of the 1D family learn slowly at demo scale (RESULTS.md, "1D
tokenizer"); the patch network of the grid demos learns in minutes. Here its grid
of features is read out into N latent tokens by one linear map over the whole grid,
so every token can draw on every position, as a ViT's latent tokens do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.errors import VtokError
from vtok.interfaces import Encoder
from vtok.nets.patch import Patch1DShape
from vtok.registry import register
from vtok.tokenizers.encoders.patch import PatchEncoder


@register("encoder", "patch1d")
class Patch1DEncoder(Encoder):
    """images (B, 3, S, S) -> (B, N, token_width): the patch encoder's (B, z, g, g) grid, flattened, mapped to N tokens."""

    @dataclass
    class Config(Patch1DShape):
        pass

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.grid = cfg.grid()
        self.body = PatchEncoder(PatchEncoder.Config(cfg.patch_size, cfg.width, cfg.num_blocks, cfg.z_channels))
        self.to_tokens = nn.Linear(cfg.z_channels * self.grid**2, cfg.num_latent_tokens * cfg.token_width)
        self.out_channels = cfg.token_width
        self.downsample_factor = cfg.patch_size
        self.num_latent_tokens = cfg.num_latent_tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, S, S) in [-1, 1] -> (B, N, token_width)."""
        if images.shape[-1] != self.cfg.image_size or images.shape[-2] != self.cfg.image_size:
            raise VtokError(f"this 1D tokenizer codes {self.cfg.image_size}px images, got {tuple(images.shape[-2:])}")
        grid = self.body(images)  # (B, z, g, g)
        tokens = self.to_tokens(rearrange(grid, "b c h w -> b (c h w)"))  # (B, N * width)
        return rearrange(tokens, "b (n d) -> b n d", n=self.num_latent_tokens)  # (B, N, width)
