"""A 1D decoder on the patch network: N tokens, a global linear map to the patch grid, then the patch decoder.

The mirror of :mod:`vtok.tokenizers.encoders.patch1d`. Positions past a sample's
length arrive filled with ``mask_token`` (the ordering part puts it there), so the
linear map reads every prefix length with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, ranged
from vtok.decoders.patch import PatchDecoder
from vtok.interfaces import Decoder
from vtok.nets.patch import Patch1DShape
from vtok.registry import register


@register("decoder", "patch1d")
class Patch1DDecoder(Decoder):
    """(B, N, token_width) -> (B, 3, S, S): tokens flattened, mapped to a (z, g, g) grid, decoded by the patch decoder."""

    @dataclass
    class Config(Patch1DShape):
        # Residual blocks at full resolution after the unpatchify, to soften patch edges (0: none)
        refine_blocks: int = ranged(0, NON_NEGATIVE)
        refine_width: int = ranged(32, AT_LEAST_1)  # channels of those full-resolution blocks (a multiple of 32)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.grid = cfg.grid()
        self.in_channels = cfg.token_width
        self.mask_token = nn.Parameter(torch.zeros(cfg.token_width))
        self.to_grid = nn.Linear(cfg.num_latent_tokens * cfg.token_width, cfg.z_channels * self.grid**2)
        self.body = PatchDecoder(
            PatchDecoder.Config(
                cfg.patch_size, cfg.width, cfg.num_blocks, cfg.z_channels, cfg.refine_blocks, cfg.refine_width
            )
        )

    def forward(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """latents: (B, N, token_width), filled past each length -> images (B, 3, S, S)."""
        grid = self.to_grid(rearrange(latents, "b n d -> b (n d)"))  # (B, z * g * g)
        z = rearrange(grid, "b (c h w) -> b c h w", h=self.grid, w=self.grid)  # (B, z, g, g)
        return self.body(z)  # (B, 3, S, S)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.body.last_layer

    @torch.no_grad()
    def zero_output_(self) -> None:
        """The layers that write pixels at zero (the refinement's last conv already is)."""
        for layer in (self.body.to_pixels, self.body.linear_pixels):
            layer.weight.zero_()
            layer.bias.zero_()
