"""VAR's multi-scale residual VQ: one codebook, K scales, a refining convolution phi after each scale's codes.

At scale k (side s_k, e.g. 1, 2, 3, 4, 5, 6, 8, 10, 13, 16), the residual is
area-pooled to s_k x s_k, each position takes its nearest code, the codes are
upsampled bicubically to the latent grid and passed through phi (``(1 - r) h + r
conv3x3(h)``), and the result is added to the reconstruction and taken from the
residual. Tokens are the ids of all scales, coarse to fine: (B, sum s_k^2, 1).
``phi_count`` convolutions are shared among the K scales by VAR's rule: scale k
uses the one whose tick (evenly spaced in (0, 1)) is nearest k / (K - 1).

Hand-written because no library has it: vector-quantize-pytorch's residual
quantizers keep every level at the latent resolution, and TokenFlow's multi-scale
part (``tokenflow``) selects over two codebooks with EMA codes and no phi. The codes
here are learned by gradient, with VAR's loss: per scale, beta * |sg(f_hat) - f|^2
+ |f_hat - sg(f)|^2 on the running reconstruction, averaged over scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, UNIT, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats


@register("quantizer", "msvq")
class MultiScaleVQ(Quantizer):
    """ids (B, sum s^2, 1) over ``scales``; the latent grid is ``scales[-1]`` square."""

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes (the model's quant_conv maps the encoder's output to it)
        dim: int = ranged(32, AT_LEAST_1)
        # Codes K of the one codebook every scale shares: ids lie in [0, K)
        codebook_size: int = ranged(4096, AT_LEAST_1)
        # Side s of each scale's s x s token map, coarse to fine (strictly increasing); the last is the latent grid
        scales: list[int] = ranged([1, 2, 3, 4, 5, 6, 8, 10, 13, 16], AT_LEAST_1)
        phi_count: int = ranged(4, NON_NEGATIVE)  # 0: one phi a scale; 1: one for all
        phi_ratio: float = ranged(0.5, UNIT)  # r in (1 - r) h + r conv(h); 0: no phi
        cosine: bool = False  # nearest code by cosine (VAR's using_znorm) instead of Euclidean distance
        # Weight of the commitment term |sg(f_hat) - f|^2 in VAR's per-scale loss (the codebook term has weight 1)
        beta: float = ranged(0.25, NON_NEGATIVE)

    def __init__(self, cfg: Config):
        super().__init__()
        if sorted(cfg.scales) != cfg.scales or len(set(cfg.scales)) != len(cfg.scales) or cfg.scales[0] < 1:
            raise VtokError("quantizer: msvq scales must increase strictly from at least 1, e.g. [1, 2, 4, 8, 16]")
        self.cfg = cfg
        self.dim = cfg.dim
        self.codebook_sizes = (cfg.codebook_size,)
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.dim)
        self.embedding.weight.data.uniform_(-1 / cfg.codebook_size, 1 / cfg.codebook_size)
        k = cfg.phi_count or len(cfg.scales)
        self.phi = nn.ModuleList(nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1) for _ in range(k if cfg.phi_ratio else 0))
        ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)
        last = max(1, len(cfg.scales) - 1)
        self.phi_of_scale = [int(np.argmin(np.abs(ticks - i / last))) for i in range(len(cfg.scales))]
        for unused in set(range(len(self.phi))) - set(self.phi_of_scale):  # fewer scales than phis: VAR's rule
            self.phi[unused].requires_grad_(False)  # skips some; kept for VAR's state layout, never trained

    @property
    def token_scales(self) -> tuple[tuple[int, int], ...]:
        return tuple((s, s) for s in self.cfg.scales)

    def token_positions(self, length: int) -> int:
        self._side(length)
        return sum(s * s for s in self.cfg.scales)

    def _side(self, length: int) -> int:
        side = self.cfg.scales[-1]
        if side * side != length:
            raise VtokError(f"msvq quantizer expects a {side}x{side} latent grid, got {length} positions")
        return side

    def _refine(self, codes: torch.Tensor, k: int, side: int) -> torch.Tensor:
        """(B, D, s, s) codes of scale k -> (B, D, side, side): upsampled bicubically, then phi."""
        codes = codes.contiguous()  # one memory layout on every path, so encode and lookup round alike
        h = F.interpolate(codes, size=(side, side), mode="bicubic") if codes.shape[-1] != side else codes
        if not self.phi:
            return h
        r = self.cfg.phi_ratio
        return h * (1 - r) + self.phi[self.phi_of_scale[k]](h) * r

    def _nearest(self, r: torch.Tensor) -> torch.Tensor:
        """(N, D) residuals -> (N,) ids."""
        codes = self.embedding.weight.detach()
        if self.cfg.cosine:
            return (F.normalize(r, dim=-1) @ F.normalize(codes, dim=-1).t()).argmax(-1)
        dist = (r * r).sum(-1, keepdim=True) + (codes * codes).sum(-1) - 2 * r @ codes.t()  # (N, K)
        return dist.argmin(-1)

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, L, D) float32 -> z_q (B, L, D) straight-through, ids (B, sum s^2, 1)."""
        side = self._side(x.shape[1])
        f = rearrange(x, "b (h w) d -> b d h w", h=side)  # (B, D, side, side)
        rest, f_hat = f.detach().clone(), torch.zeros_like(f)
        ids, loss = [], f.new_zeros(())
        for k, s in enumerate(self.cfg.scales):
            r = F.interpolate(rest, size=(s, s), mode="area") if s != side else rest  # (B, D, s, s)
            idx = self._nearest(rearrange(r, "b d h w -> (b h w) d"))
            codes = rearrange(self.embedding(idx), "(b h w) d -> b d h w", b=f.shape[0], h=s, w=s)
            h = self._refine(codes, k, side)  # (B, D, side, side)
            f_hat = f_hat + h
            rest = rest - h.detach()
            ids.append(rearrange(idx, "(b n) -> b n", b=f.shape[0]))
            loss = loss + self.cfg.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f.detach())
        loss = loss / len(self.cfg.scales)
        # Straight-through to the encoder in training (the codes learn from the loss); in eval exactly lookup(ids).
        z_q = f + (f_hat - f).detach() if self.training else f_hat
        ids = torch.cat(ids, dim=1)  # (B, sum s^2)
        stats = batch_code_stats(ids, self.cfg.codebook_size)
        z_q = rearrange(z_q, "b d h w -> b (h w) d").contiguous()  # the layout lookup returns: the decoder rounds alike
        return QuantizerOutput(z_q, ids[..., None], {"commit": loss}, stats)

    def code_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, N, 1) -> (B, N, D): each token's own code."""
        return self.embedding(ids[..., 0])

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, sum s^2, 1) -> z_q: (B, side*side, D), every scale's refined codes summed."""
        sizes = [s * s for s in self.cfg.scales]
        if ids.shape[1] != sum(sizes):
            raise VtokError(f"msvq ids need {sum(sizes)} positions over scales {self.cfg.scales}, got {ids.shape[1]}")
        side = self.cfg.scales[-1]
        z = 0
        for k, (part, s) in enumerate(zip(ids[..., 0].split(sizes, dim=1), self.cfg.scales)):
            codes = rearrange(self.embedding(part), "b (h w) d -> b d h w", h=s, w=s)
            z = z + self._refine(codes, k, side)
        return rearrange(z, "b d h w -> b (h w) d").contiguous()

    def extra_repr(self) -> str:
        return f"{self.cfg.codebook_size} codes of dim {self.dim}, scales {self.cfg.scales}, {len(self.phi)} phi"
