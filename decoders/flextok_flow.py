"""FlexTok's rectified-flow decoder with its VAE decoder (apple/ml-flextok; Bachmann et al., 2025).

Reads the token latents (B, N, width) (the tokenizer's ``from_code`` is FlexTok's ``dec_from_latents``), with
positions past each sample's length already holding ``mask_token`` (FlexTok's nested-dropout token). A learned
position embedding is added to the kept positions only, as FlexTok adds it before masking.

The flow runs in the VAE's latent space: x_t = t * noise + (1 - t) * latents, the network predicts
v = noise - latents. One network call sees [noisy latent patches | registers] with full attention, its
blocks modulated by the time embedding (:mod:`vtok.nets.flextok`), and a time-modulated linear head maps the
patch tokens back to latent patches. Sampling takes ``steps`` Euler steps t = 1, 1 - 1/steps, ..., 1/steps
(x <- x - v / steps) from noise drawn per sample, in batch order, from one generator seeded with ``seed``
(FlexTok's pipeline given ``torch.Generator().manual_seed(seed)``). With ``guidance_scale`` != 1 each step
also runs the unconditional pass, whose registers are all the learned ``null_token`` (FlexTok's null
condition; with ``null_single_token`` a single such token replaces the sequence), and combines the two by
classifier-free guidance or, with ``norm_guidance``, by adaptive projected guidance (APG, arXiv 2410.02416:
momentum -0.5, norm threshold 2.5, eta 0). The result / ``scaling_factor`` goes through the VAE decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, ranged
from vtok.errors import VtokError
from vtok.interfaces import Decoder
from vtok.nets.flextok import Block, FlexTokShape, plain_norm, sincos_grid, time_frequencies, vae_decoder
from vtok.registry import register


@register("decoder", "flextok_flow")
class FlexTokFlowDecoder(Decoder):
    """(B, N, width) token latents -> (B, 3, H, W) images, sampled by FlexTok's rectified flow."""

    @dataclass
    class Config(FlexTokShape):
        time_features: int = ranged(256, AT_LEAST_1)  # sin-cos features of the flow time
        max_timestep: float = ranged(1.0, POSITIVE)  # the time embedding's frequencies scale by 1000 / max_timestep
        modulation_sets: int = ranged(2, AT_LEAST_1)  # adaLN sets: 1 shared, 2 for patches and registers apart
        null_single_token: bool = False  # the unconditional pass reads one null token instead of a sequence of them
        # Euler steps of the flow per decode: more steps, slower and closer to the flow's solution
        steps: int = ranged(25, AT_LEAST_1)
        # Classifier-free guidance on the tokens; 1: none (one network call per step, not two)
        guidance_scale: float = ranged(1.0, NON_NEGATIVE)
        norm_guidance: bool = False  # combine by adaptive projected guidance (APG) instead of plain CFG
        # Seed of the starting noise (one generator, samples in batch order): a decode is a function of its tokens
        seed: int = ranged(0, NON_NEGATIVE)

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.modulation_sets > 2:
            raise VtokError("model.decoder.modulation_sets: FlexTok modulates with 1 or 2 sets")
        self.cfg = cfg
        self.in_channels = cfg.width
        c, w = cfg.latent_channels, cfg.width
        self.mask_token = nn.Parameter(torch.randn(w) * 0.02)
        self.latent_pos = nn.Parameter(torch.randn(1, cfg.num_latent_tokens, w) * 0.02)
        self.null_token = nn.Parameter(torch.randn(w) * 0.02)
        self.patch_in = nn.Linear(c * cfg.patch_size**2, w)
        self.register_buffer("patch_pos", sincos_grid(cfg.pos_grid, cfg.pos_grid, w))
        self.time_embed = nn.Sequential(nn.Linear(cfg.time_features, w), nn.SiLU(), nn.Linear(w, w))
        self.blocks = nn.ModuleList(
            Block(w, cfg.head_dim, cfg.mlp_ratio, sets=cfg.modulation_sets) for _ in range(cfg.depth)
        )
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.out_proj = nn.Linear(w, c * cfg.patch_size**2)
        self.post_quant_conv = nn.Conv2d(c, c, 1)
        self.vae_decoder = vae_decoder(cfg)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, registers: torch.Tensor) -> torch.Tensor:
        """x_t: (B, c, h, w) noisy latents, t: (B,) in (0, 1], registers: (B, n, D) -> v: (B, c, h, w)."""
        p = self.cfg.patch_size
        patches = rearrange(x_t, "b c (h p) (w q) -> b h w (p q c)", p=p, q=p)
        gh, gw = patches.shape[1:3]
        pos = rearrange(self.patch_pos[:, :, :gh, :gw], "1 d h w -> 1 h w d")
        h = rearrange(self.patch_in(patches) + pos, "b h w d -> b (h w) d")  # (B, P, D)
        counts = [h.shape[1], registers.shape[1]]
        h = torch.cat([h, registers.to(h.dtype)], dim=1)  # (B, P + n, D)
        temb = self.time_embed(time_frequencies(t, self.cfg.time_features, self.cfg.max_timestep).to(h.dtype))
        for block in self.blocks:
            h = block(h, mod=block.modulation(temb, counts))
        shift, scale = self.out_modulation(temb)[:, None].chunk(2, dim=-1)  # (B, 1, D) each
        out = self.out_proj(plain_norm(h[:, : counts[0]]) * (1 + scale) + shift)  # (B, P, c p p)
        return rearrange(out, "b (h w) (p q c) -> b c (h p) (w q)", h=gh, p=p, q=p)

    def registers(self, latents: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Kept positions get their position embedding; filled ones stay ``mask_token`` (B, N, D)."""
        if lengths is None:
            return latents + self.latent_pos
        keep = torch.arange(latents.shape[1], device=latents.device)[None, :] < lengths[:, None]  # (B, N)
        return torch.where(keep[..., None], latents + self.latent_pos, latents)

    def null_registers(self, like: torch.Tensor) -> torch.Tensor:
        """The unconditional pass's registers: (B, N, D), or (B, 1, D) with ``null_single_token``."""
        n = 1 if self.cfg.null_single_token else like.shape[1]
        return self.null_token.to(like.dtype).expand(like.shape[0], n, -1)

    def noise(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(B, c, h, w): one draw per sample, in order, from a generator seeded with ``seed`` (on the CPU)."""
        side = self.cfg.image_size // self.cfg.factor
        g = torch.Generator().manual_seed(self.cfg.seed)
        draws = [torch.randn((1, self.cfg.latent_channels, side, side), generator=g) for _ in range(batch)]
        return torch.cat(draws).to(device=device, dtype=dtype)

    @torch.no_grad()
    def sample_latents(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Token latents (B, N, D) -> the flow's final VAE latents (B, c, h, w) (before 1 / scaling_factor)."""
        cfg = self.cfg
        regs = self.registers(latents, lengths)
        x = self.noise(latents.shape[0], latents.device, latents.dtype)
        guided = cfg.guidance_scale != 1.0
        momentum = torch.zeros_like(x)
        for i in range(cfg.steps, 0, -1):
            t = torch.full((x.shape[0],), i / cfg.steps, device=x.device)
            v = self.velocity(x, t, regs)
            if guided:
                v_null = self.velocity(x, t, self.null_registers(regs))
                if cfg.norm_guidance:
                    v, momentum = projected_guidance(v, v_null, cfg.guidance_scale, momentum)
                else:
                    v = v_null + cfg.guidance_scale * (v - v_null)
            x = x - v / cfg.steps
        return x

    def forward(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Sample images (B, 3, H, W) for ``latents`` (B, N, width)."""
        z = self.sample_latents(latents, lengths) / self.cfg.scaling_factor
        with torch.no_grad():
            return self.vae_decoder(self.post_quant_conv(z))

    inference_only = "the flextok_flow decoder is converted from FlexTok's weights; vtok does not train it"

    def training_recon(self, latents: torch.Tensor, lengths: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        raise VtokError(self.inference_only)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.out_proj.weight


def projected_guidance(
    cond: torch.Tensor, null: torch.Tensor, scale: float, momentum: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """APG (arXiv 2410.02416) per sample over (c, h, w): momentum -0.5, norm threshold 2.5, eta 0.

    Returns the guided velocity and the new running average.
    """
    diff = cond - null + (-0.5) * momentum  # the running average of the differences
    momentum = diff
    norm = diff.norm(p=2, dim=(-1, -2, -3), keepdim=True)
    diff = diff * torch.minimum(torch.ones_like(diff), 2.5 / norm)
    unit = torch.nn.functional.normalize(cond.double(), dim=(-1, -2, -3))
    d = diff.double()
    orthogonal = (d - (d * unit).sum(dim=(-1, -2, -3), keepdim=True) * unit).to(cond.dtype)
    return cond + (scale - 1) * orthogonal, momentum
