"""FlexTok's network blocks (Bachmann et al., "FlexTok: Resampling Images into 1D Token Sequences of Flexible
Length", 2025), shared by its register encoder and its rectified-flow decoder.

Both are stacks of pre-norm transformer blocks with: LayerNorms without weight or bias (computed in float32),
separate q/k/v/out projections without bias, a LayerNorm without affine on each head's queries and keys
(QK-norm), the attention scale 8 / head_dim (muP; 1/sqrt(64) at head_dim 64), and a SwiGLU MLP whose hidden
width is int(2/3 * mlp_ratio * width). The decoder's blocks are modulated by the flow time (adaLN-zero):
each block maps the time embedding to ``sets`` groups of (gate_attn, gate_mlp, shift_attn, scale_attn,
shift_mlp, scale_mlp), one group for the image patches and (when ``sets`` is 2) another for the registers.

The FlexTok VAE (a diffusers ``AutoencoderKL``) is built from diffusers' own encoder and decoder halves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, POSITIVE, ranged


@dataclass
class VAEShape:
    """The FlexTok VAE (a diffusers AutoencoderKL with DownEncoderBlock2D / UpDecoderBlock2D blocks)."""

    latent_channels: int = ranged(16, AT_LEAST_1)  # channels of the VAE's latents, the space the flow works in
    # Width of each VAE level; a factor 2 between levels (f = 2^(len - 1))
    block_out_channels: list[int] = ranged([128, 256, 512, 512], AT_LEAST_1)
    layers_per_block: int = ranged(2, AT_LEAST_1)  # residual layers per VAE level
    norm_num_groups: int = ranged(32, AT_LEAST_1)  # GroupNorm groups in the VAE (block widths must be multiples)
    scaling_factor: float = ranged(1.0, POSITIVE)  # latents are multiplied by it after encoding

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class FlexTokShape(VAEShape):
    """What FlexTok's encoder and flow decoder share: the VAE, the image and patch size in VAE latents, the
    transformer (width, depth, head width, MLP ratio), the register count and the patch position table's side
    (cropped to the image's grid)."""

    image_size: int = ranged(256, AT_LEAST_1)  # side of the square images in pixels
    patch_size: int = ranged(2, AT_LEAST_1)  # in VAE latents
    width: int = ranged(1152, AT_LEAST_1)  # transformer width
    depth: int = ranged(18, AT_LEAST_1)  # transformer blocks
    head_dim: int = ranged(64, AT_LEAST_1)  # width of each attention head (heads = width / head_dim)
    mlp_ratio: float = ranged(4.0, POSITIVE)  # hidden width of each block's MLP, as a multiple of width
    num_latent_tokens: int = ranged(256, AT_LEAST_1)  # registers per image: the 1D tokens
    # Side of the fixed sin-cos table of patch positions, cropped to the image's patch grid
    pos_grid: int = ranged(16, AT_LEAST_1)


def vae_encoder(shape: VAEShape) -> nn.Module:
    """diffusers' AutoencoderKL encoder: images (B, 3, H, W) -> moments (B, 2 * latent_channels, H/f, W/f)."""
    from diffusers.models.autoencoders.vae import Encoder

    n = len(shape.block_out_channels)
    return Encoder(
        in_channels=3,
        out_channels=shape.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        block_out_channels=tuple(shape.block_out_channels),
        layers_per_block=shape.layers_per_block,
        norm_num_groups=shape.norm_num_groups,
        act_fn="silu",
        double_z=True,
    )


def vae_decoder(shape: VAEShape) -> nn.Module:
    """diffusers' AutoencoderKL decoder: latents (B, latent_channels, h, w) -> images (B, 3, h*f, w*f)."""
    from diffusers.models.autoencoders.vae import Decoder

    n = len(shape.block_out_channels)
    return Decoder(
        in_channels=shape.latent_channels,
        out_channels=3,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(shape.block_out_channels),
        layers_per_block=shape.layers_per_block,
        norm_num_groups=shape.norm_num_groups,
        act_fn="silu",
    )


def plain_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis without weight or bias, computed in float32 (FlexTok's norm layers)."""
    return F.layer_norm(x.float(), x.shape[-1:]).type_as(x)


def sincos_grid(rows: int, cols: int, dim: int) -> torch.Tensor:
    """(1, dim, rows, cols) fixed 2D position table: [sin(r w), cos(r w), sin(c w), cos(c w)], w = 1e4^(-k/(dim/4))."""
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    r = torch.arange(rows, dtype=torch.float32)[:, None, None] * omega  # (R, 1, D/4)
    c = torch.arange(cols, dtype=torch.float32)[None, :, None] * omega  # (1, C, D/4)
    r, c = r.expand(rows, cols, quarter), c.expand(rows, cols, quarter)
    table = torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=-1)  # (R, C, D)
    return rearrange(table, "r c d -> 1 d r c")


def time_frequencies(t: torch.Tensor, size: int, max_timestep: float) -> torch.Tensor:
    """t: (B,) flow times -> (B, size) [cos | sin] features, periods from 1 to 256 steps of 1000 / max_timestep."""
    half = size // 2
    freqs = (1000.0 / max_timestep) * torch.exp(-math.log(256) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs.to(t.device)[None]
    features = torch.cat([args.cos(), args.sin()], dim=-1)  # (B, 2 * half)
    return F.pad(features, (0, size % 2))  # an odd size ends with a zero feature


class Attention(nn.Module):
    """Multi-head self-attention with QK-norm and FlexTok's scale 8 / head_dim."""

    def __init__(self, width: int, head_dim: int):
        super().__init__()
        self.heads = width // head_dim
        self.scale = 8.0 / head_dim
        self.wq = nn.Linear(width, width, bias=False)
        self.wk = nn.Linear(width, width, bias=False)
        self.wv = nn.Linear(width, width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, S, D), mask: (S, S) bool (True: may attend) or None -> (B, S, D)."""
        q, k, v = (rearrange(f(x), "b s (h d) -> b h s d", h=self.heads) for f in (self.wq, self.wk, self.wv))
        out = F.scaled_dot_product_attention(plain_norm(q), plain_norm(k), v, attn_mask=mask, scale=self.scale)
        return self.proj(rearrange(out, "b h s d -> b s (h d)"))


class GatedMlp(nn.Module):
    """SwiGLU: fc2(silu(fc1 x) * fc3 x), hidden width int(2 * int(mlp_ratio * width) / 3)."""

    def __init__(self, width: int, mlp_ratio: float):
        super().__init__()
        hidden = int(2 * int(width * mlp_ratio) / 3)
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, width, bias=False)
        self.fc3 = nn.Linear(width, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


class Block(nn.Module):
    """Pre-norm block; with ``sets`` > 0 it is modulated (adaLN-zero) by a per-token (B, S, 6 D) vector."""

    def __init__(self, width: int, head_dim: int, mlp_ratio: float, sets: int = 0):
        super().__init__()
        self.attn = Attention(width, head_dim)
        self.mlp = GatedMlp(width, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, sets * 6 * width)) if sets else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, mod: torch.Tensor | None = None):
        """x: (B, S, D); mod: (B, S, 6 D) from :meth:`modulation` (modulated blocks only) -> (B, S, D)."""
        if mod is None:
            x = x + self.attn(plain_norm(x), mask)
            return x + self.mlp(plain_norm(x))
        gate_a, gate_m, shift_a, scale_a, shift_m, scale_m = mod.chunk(6, dim=-1)
        x = x + gate_a * self.attn(plain_norm(x) * (1 + scale_a) + shift_a, mask)
        return x + gate_m * self.mlp(plain_norm(x) * (1 + scale_m) + shift_m)

    def modulation(self, temb: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """temb: (B, D) -> (B, sum(counts), 6 D): set i modulates the next counts[i] tokens (the last set the rest)."""
        sets = self.adaLN_modulation(temb)  # (B, sets * 6 D)
        sets = rearrange(sets, "b (n d) -> b n d", d=6 * temb.shape[-1])
        parts = [sets[:, min(i, sets.shape[1] - 1), None].expand(-1, n, -1) for i, n in enumerate(counts)]
        return torch.cat(parts, dim=1)
