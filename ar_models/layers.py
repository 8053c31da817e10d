"""LlamaGen-style transformer parts: RMSNorm, SwiGLU, rotary embeddings (1D and 2D), cached attention.

Written here rather than taken from timm because the decode step needs a
preallocated key/value cache that is written in place at a tensor position (one
compiled graph for every step), and rotary angles that
follow the token layout (2D for grids, 1D for sequences, identity for the class
prefix); timm's blocks have neither.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def swiglu_hidden(dim: int, multiple_of: int = 256) -> int:
    """LlamaGen's FFN width: 2/3 of 4 * dim, rounded up to ``multiple_of``."""
    hidden = int(2 * 4 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.w2(F.silu(self.w1(x)) * self.w3(x)))


def rope_angles(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Rotation angles for integer positions.

    Args:
        positions: (T, A) coordinates per token; A = 1 (sequence) or 2 (grid row, column).
            Rows of -1 mark prefix tokens, which get no rotation (angle 0).
    Returns:
        (T, head_dim // 2) angles: the head dimension is split evenly across the A axes.
    """
    t, axes = positions.shape
    per_axis = head_dim // (2 * axes)
    freqs = 1.0 / (base ** (torch.arange(per_axis, dtype=torch.float64) * 2 / (2 * per_axis)))  # (per_axis,)
    angles = torch.cat([positions[:, a : a + 1].double() * freqs for a in range(axes)], dim=1)  # (T, axes*per_axis)
    angles[(positions < 0).any(1)] = 0.0
    pad = head_dim // 2 - angles.shape[1]
    return F.pad(angles, (0, pad)).float()  # leftover pairs (head_dim not divisible) stay unrotated


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (..., T, hd) with pairs (2i, 2i+1) rotated by the angles behind cos/sin (T, hd/2).

    Any leading dims, so that queries and keys rotate in one call ((2, B, H, T, hd)); plain views rather than
    einops here, because a one-token decoding step is bound by per-call overhead (same values either way).
    """
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (..., T, hd / 2) each
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)  # (..., T, hd / 2, 2)
    return out.flatten(-2).type_as(x)


class KVCache(nn.Module):
    """Preallocated keys and values of one layer, (B, H, T_max, hd) each. Buffers, so that a compiled (on GPU,
    CUDA-graphed) decoding step is handed the same storage at every call."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str):
        super().__init__()
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        qkv = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        q, k = apply_rope(qkv[:2], cos, sin)  # both rotated in one call
        return q, k, qkv[2]  # (B, H, T, hd) each

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D), causal over T -> (B, T, D)."""
        q, k, v = self._qkv(x, cos, sin)
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=x.shape[1] > 1, dropout_p=drop)  # (B, H, T, hd)
        return self.proj(rearrange(out, "b h t d -> b t (h d)"))

    def step(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, pos: torch.Tensor
    ) -> torch.Tensor:
        """One token x: (B, 1, D) at step ``pos`` (0-dim long): its key and value written into ``cache``, then
        attention over the steps up to ``pos``. Compiled, it reads the whole cache with the later steps masked,
        so no shape depends on ``pos`` and the step compiles once, not once per token."""
        q, k, v = self._qkv(x, cos, sin)
        q, k, v = q.to(cache.k.dtype), k.to(cache.k.dtype), v.to(cache.k.dtype)
        if torch.compiler.is_compiling():  # one shape for every step: written by index, the whole cache, masked
            cache.k.index_copy_(2, pos.view(1), k)
            cache.v.index_copy_(2, pos.view(1), v)
            visible = (torch.arange(cache.k.shape[2], device=x.device) <= pos)[None]  # (1, T_max)
            out = F.scaled_dot_product_attention(q, cache.k, cache.v, attn_mask=visible)  # (B, H, 1, hd)
        else:  # eager: a slice write and only the filled part (index_copy_ along dim 2 is slow on CPU)
            end = int(pos) + 1
            cache.k[:, :, end - 1 : end] = k
            cache.v[:, :, end - 1 : end] = v
            out = F.scaled_dot_product_attention(q, cache.k[:, :, :end], cache.v[:, :, :end])  # (B, H, 1, hd)
        return self.proj(rearrange(out, "b h t d -> b t (h d)").to(x.dtype))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.attention_norm = RMSNorm(dim)
        self.attention = Attention(dim, heads, dropout)
        self.ffn_norm = RMSNorm(dim)
        self.feed_forward = SwiGLU(dim, hidden, dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)  # (B, T, D)
        return x + self.feed_forward(self.ffn_norm(x))

    def step(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, pos: torch.Tensor):
        """One cached decoding step of x: (B, 1, D) (see :meth:`Attention.step`)."""
        x = x + self.attention.step(self.attention_norm(x), cos, sin, cache, pos)  # (B, 1, D)
        return x + self.feed_forward(self.ffn_norm(x))
