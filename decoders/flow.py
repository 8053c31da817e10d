"""Rectified-flow pixel decoder conditioned on 1D tokens (FlexTok), built from diffusers' parts.

A transformer of diffusers ``BasicTransformerBlock``s reads noisy image patches
(plus a timestep token) and cross-attends to the token latents; it predicts the
flow velocity v = noise - image, with diffusers' convention x_t = s * noise +
(1 - s) * image. Decoding integrates from noise with diffusers'
``FlowMatchEulerDiscreteScheduler`` in a few Euler steps; the noise comes from a fixed
seed and is the same for every sample, so a decode depends on its tokens alone.

Training needs no loss of its own: ``training_recon`` returns the one-step estimate
x_t - s * v. The VQGAN loss's L1 on that estimate equals s * |v - (noise - image)|,
a weighted flow-matching loss, and its perceptual term applies as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, ranged
from vtok.decoders.vit import LatentDecoder
from vtok.nets.vit import ViTShape, unpatchify
from vtok.registry import register


@register("decoder", "flow1d")
class FlowDecoder(LatentDecoder):
    """(B, N, width) token latents -> (B, 3, H, W) images, sampled by a rectified flow."""

    @dataclass
    class Config(ViTShape):
        steps: int = ranged(8, AT_LEAST_1)  # Euler steps at decoding
        # Seed of the starting noise, the same for every sample: a decode is a function of its tokens
        seed: int = ranged(0, NON_NEGATIVE)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.patch_in = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.patch_pos = nn.Parameter(torch.randn(1, self.grid * self.grid, cfg.width) * 0.02)
        self.time_proj = Timesteps(cfg.width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(cfg.width, cfg.width)
        head_dim = cfg.width // cfg.heads
        self.blocks = nn.ModuleList(
            BasicTransformerBlock(cfg.width, cfg.heads, head_dim, cross_attention_dim=cfg.width, activation_fn="gelu")
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.to_pixels = nn.Linear(cfg.width, 3 * cfg.patch_size * cfg.patch_size)

    def velocity(self, x_t: torch.Tensor, sigma: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x_t: (B, 3, H, W), sigma: (B,) in [0, 1], latents: (B, N, width) -> v: (B, 3, H, W)."""
        h = rearrange(self.patch_in(x_t), "b d h w -> b (h w) d") + self.patch_pos  # (B, P, D)
        t = self.time_embed(self.time_proj(sigma * 1000).to(h.dtype))[:, None]  # (B, 1, D)
        h = torch.cat([t, h], dim=1)  # (B, 1 + P, D)
        cond = latents + self.latent_pos  # (B, N, D)
        for block in self.blocks:
            h = block(h, encoder_hidden_states=cond)
        out = self.to_pixels(self.norm(h[:, 1:]))  # (B, P, 3 p p)
        return unpatchify(out, self.grid, self.cfg.patch_size)

    def training_recon(self, latents: torch.Tensor, lengths: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """One-step image estimate at a random noise level (see the module docstring)."""
        sigma = torch.rand(images.shape[0], device=images.device)  # (B,)
        noise = torch.randn_like(images)
        s = sigma.view(-1, 1, 1, 1)
        x_t = s * noise + (1 - s) * images
        return x_t - s * self.velocity(x_t, sigma, latents)

    @torch.no_grad()
    def forward(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Sample images for ``latents`` (B, N, width): ``steps`` Euler steps from seeded noise.

        Positions past ``lengths`` already hold the ordering's fill, which the decoder reads as such.
        """
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler()
        scheduler.set_timesteps(self.cfg.steps, device=latents.device)
        size = (latents.shape[0], 3, self.cfg.image_size, self.cfg.image_size)
        g = torch.Generator(device=latents.device).manual_seed(self.cfg.seed)
        # One noise image shared by every sample: a decode depends on its tokens only, not on the batch.
        x = torch.randn((1, *size[1:]), generator=g, device=latents.device, dtype=latents.dtype).expand(size)
        for i, t in enumerate(scheduler.timesteps):
            sigma = scheduler.sigmas[i].expand(size[0]).to(latents.dtype)
            x = scheduler.step(self.velocity(x, sigma, latents), t, x, return_dict=False)[0]
        return x

    @property
    def last_layer(self) -> torch.Tensor:
        return self.to_pixels.weight
