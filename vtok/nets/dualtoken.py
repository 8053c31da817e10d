"""DualToken's projection blocks (Song et al. 2025, songweii/DualToken), between its SigLIP tower and its codebooks.

- :class:`AttnProjection` changes the width of a token sequence with attention: the sum of a
  linear map of the normalised tokens and a multi-head attention whose width is the larger of the
  two, then a gated-GELU MLP with a residual. Narrowing (tower width -> code dim, before the
  codebooks) runs ``width // dim`` heads of ``dim`` channels over all tokens and averages the
  heads; widening (code dim -> tower width, after them) runs ``width // dim`` heads of ``dim``
  channels causally (token i attends to tokens <= i in raster order) and concatenates them.
  q and v have biases, k none (a zero buffer in the published file).
- :class:`PostQuantBlock` is the residual block between the widened pixel tokens and the CNN
  decoder: GroupNorm -> swish -> 1x1 conv -> GroupNorm -> swish -> 3x3 conv, plus a 1x1 shortcut.

Parameter names are the published ones, so the converter renames prefixes only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.nets.vqgan import group_norm


class ProjectionAttention(nn.Module):
    """(B, N, in_dim) -> (B, N, out_dim) attention with ``max(in, out) // min(in, out)`` heads of ``min`` channels."""

    def __init__(self, in_dim: int, out_dim: int, causal: bool):
        super().__init__()
        wide, narrow = max(in_dim, out_dim), min(in_dim, out_dim)
        if wide % narrow:
            raise ValueError(f"projection widths {in_dim} -> {out_dim}: the larger must be a multiple of the smaller")
        self.heads, self.narrowing, self.causal = wide // narrow, in_dim > out_dim, causal
        self.qkv = nn.Linear(in_dim, 3 * wide, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(wide))
        self.v_bias = nn.Parameter(torch.zeros(wide))
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, in_dim) -> (B, N, out_dim)."""
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])  # k carries no bias
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, N, 3 * wide)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, heads, N, narrow)
        # Narrowing keeps one head's width: the heads are averaged; widening concatenates them.
        out = out.mean(dim=1) if self.narrowing else rearrange(out, "b h n d -> b n (h d)")
        return self.proj(out)  # (B, N, out_dim)


class GatedMlp(nn.Module):
    """LayerNorm (eps 1e-6) -> tanh-GELU(w0 x) * w1 x -> w2: (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.w0 = nn.Linear(dim, hidden)
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.w2(F.gelu(self.w0(x), approximate="tanh") * self.w1(x))


class AttnProjection(nn.Module):
    """Tokens (B, N, in_dim) -> (B, N, out_dim): linear + attention branches, then a gated MLP with a residual.

    Args:
        in_dim: input width.
        out_dim: output width; one of the two widths divides the other.
        causal: causal attention (DualToken's widening projections after the codebooks).
        mlp_ratio: the MLP's hidden width over ``out_dim`` (DualToken's 2).
    """

    def __init__(self, in_dim: int, out_dim: int, causal: bool, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(in_dim)
        self.attn = ProjectionAttention(in_dim, out_dim, causal)
        self.proj = nn.Linear(in_dim, out_dim)
        self.norm3 = nn.LayerNorm(in_dim)
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = GatedMlp(out_dim, out_dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, in_dim) -> (B, N, out_dim)."""
        x = self.proj(self.norm3(x)) + self.attn(self.norm1(x))  # (B, N, out_dim)
        return x + self.mlp(self.norm2(x))


class PostQuantBlock(nn.Module):
    """(B, C_in, h, w) -> (B, C_out, h, w): norm -> swish -> 1x1 conv -> norm -> swish -> 3x3 conv, + 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, h, w)
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h
