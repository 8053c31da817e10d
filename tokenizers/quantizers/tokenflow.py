"""TokenFlow's shared mapping over multi-scale residual quantization: one id addresses two codebooks.

Latents arrive as [semantic | pixel] channels per position, each half l2-normalised
first. At every scale s (e.g.
1, 2, 4, ..., 16 for a 16x16 grid), the residual is area-pooled to s x s and each
position picks one index by argmin(d_sem + w * d_pix), the squared distances of the
l2-normalised residual halves to the l2-normalised codes. The chosen semantic and
pixel codes are upsampled back and subtracted, so later scales refine earlier ones.
Tokens are the ids of all scales concatenated coarse to fine: (B, sum s^2, 1).

Hand-written because vector-quantize-pytorch selects each codebook on its own
distance; a joint argmin over two codebooks has no counterpart there. Code values
are EMA means of the residual vectors assigned to them (as VQ-VAE-2), with
dead-code restarts; the statistics are all-reduced across ranks before each
update, so every rank keeps the same codebooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange

from vtok.config import AT_LEAST_1, DECAY, NON_NEGATIVE, UNIT, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats

from .upkeep import restart_levels


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


@register("quantizer", "tokenflow")
class SharedMultiScaleQuantizer(Quantizer):
    """Two EMA codebooks of one size (semantic ``semantic_dim``-d, pixel ``pixel_dim``-d), one id per position."""

    @dataclass
    class Config:
        semantic_dim: int = ranged(32, AT_LEAST_1)
        pixel_dim: int = ranged(8, AT_LEAST_1)
        # Codes K in each of the two codebooks; one id in [0, K) addresses a code of each
        codebook_size: int = ranged(16384, AT_LEAST_1)
        # Side s of each scale's s x s id map, coarse to fine (strictly increasing); the last is the latent grid
        scales: list[int] = ranged([1, 2, 4, 8, 16], AT_LEAST_1)
        # Weight w of the pixel half's distance in the joint choice argmin(d_sem + w d_pix)
        pixel_weight: float = ranged(1.0, NON_NEGATIVE)
        # EMA decay of both codebooks' counts and sums; lower follows the encoder faster
        decay: float = ranged(0.99, DECAY)
        dead_code_share: float = ranged(1.0, NON_NEGATIVE)  # restart under this share of a code's mean use
        dead_code_threshold: float = ranged(0.0, NON_NEGATIVE)  # > 0: an absolute EMA count instead of the share
        # Weight of the commitment loss: MSE of the normalised latents to sg(their reconstruction over the scales)
        commitment_weight: float = ranged(0.25, NON_NEGATIVE)
        scale_drop: float = ranged(0.1, UNIT)  # training: chance of stopping after a random coarser scale

    def __init__(self, cfg: Config):
        super().__init__()
        if sorted(cfg.scales) != cfg.scales or len(set(cfg.scales)) != len(cfg.scales):
            raise VtokError("quantizer: tokenflow scales must increase strictly, e.g. [1, 2, 4, 8, 16]")
        self.cfg = cfg
        self.semantic_dim, self.pixel_dim = cfg.semantic_dim, cfg.pixel_dim
        self.dim = cfg.semantic_dim + cfg.pixel_dim
        self.codebook_sizes = (cfg.codebook_size,)
        k = cfg.codebook_size
        self.register_buffer("codebook", torch.randn(k, self.dim) * 0.1)  # [semantic | pixel] values
        self.register_buffer("ema_count", torch.ones(k))
        self.register_buffer("ema_sum", self.codebook.clone())

    @property
    def token_scales(self) -> tuple[tuple[int, int], ...]:
        return tuple((s, s) for s in self.cfg.scales)

    def token_positions(self, length: int) -> int:
        self._grid(length)
        return sum(s * s for s in self.cfg.scales)

    def _grid(self, length: int) -> int:
        side = self.cfg.scales[-1]
        if side * side != length:
            raise VtokError(f"tokenflow quantizer expects a {side}x{side} latent grid, got {length} positions")
        return side

    def _select(self, r: torch.Tensor) -> torch.Tensor:
        """r: (N, D) residual vectors -> (N,) ids by the joint normalised distance."""
        codes = self.codebook
        sem = F.normalize(r[:, : self.semantic_dim], dim=-1) @ F.normalize(codes[:, : self.semantic_dim], dim=-1).t()
        pix = F.normalize(r[:, self.semantic_dim :], dim=-1) @ F.normalize(codes[:, self.semantic_dim :], dim=-1).t()
        # |a - b|^2 = 2 - 2 a.b for unit vectors: the argmin of the weighted sum is the argmax of this.
        return (sem + self.cfg.pixel_weight * pix).argmax(-1)

    def _quantize_scales(
        self, z: torch.Tensor, scales: list[int]
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """z: (B, D, h, w) -> (z_hat (B, D, h, w), ids per scale (B, s*s), residual vectors per scale)."""
        side = z.shape[-1]
        residual, z_hat = z, torch.zeros_like(z)
        ids, inputs = [], []
        for s in scales:
            r = F.adaptive_avg_pool2d(residual, s) if s != side else residual  # (B, D, s, s)
            flat = rearrange(r, "b d h w -> (b h w) d")
            idx = rearrange(self._select(flat), "(b n) -> b n", b=z.shape[0])  # (B, s*s)
            q = self._scale_codes(idx, s, side)  # (B, D, side, side)
            z_hat = z_hat + q
            residual = residual - q
            ids.append(idx)
            inputs.append(flat)
        return z_hat, ids, inputs

    def _scale_codes(self, idx: torch.Tensor, s: int, side: int) -> torch.Tensor:
        """(B, s*s) ids of one scale -> (B, D, side, side): their codes upsampled to the last scale (-1: zeros)."""
        q = rearrange(self.codebook[idx.clamp(min=0)], "b (h w) d -> b d h w", h=s)
        q = q * (idx >= 0).to(q.dtype).view(idx.shape[0], 1, s, s)
        return F.interpolate(q, size=(side, side), mode="bicubic") if s != side else q

    @torch.no_grad()
    def _ema_update(self, ids: list[torch.Tensor], inputs: list[torch.Tensor]) -> None:
        idx = torch.cat([i.reshape(-1) for i in ids])
        vec = torch.cat(inputs)
        count = torch.bincount(idx, minlength=self.cfg.codebook_size).float()
        total = torch.zeros_like(self.ema_sum).index_add_(0, idx, vec)
        count, total = _all_reduce(count), _all_reduce(total)
        d = self.cfg.decay
        self.ema_count.mul_(d).add_(count, alpha=1 - d)
        self.ema_sum.mul_(d).add_(total, alpha=1 - d)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (n + self.cfg.codebook_size * 1e-5) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        if self.cfg.dead_code_threshold > 0:
            threshold, reset = self.cfg.dead_code_threshold, 1.0
        else:  # relative to this step's mean use of a code, so it means the same at every batch size
            threshold, reset = restart_levels(float(count.sum()), self.cfg.codebook_size, self.cfg.dead_code_share)
        dead = self.ema_count < threshold
        if bool(dead.any()):
            # Restart dead codes on residuals of this batch; rank 0 picks, everyone copies.
            pick = torch.randint(0, vec.shape[0], (int(dead.sum()),), device=vec.device)
            fresh = vec[pick].clone()
            if dist.is_available() and dist.is_initialized():
                dist.broadcast(fresh, 0)
            self.codebook[dead] = fresh
            self.ema_sum[dead] = fresh
            self.ema_count[dead] = reset

    def _quantize(self, latents: torch.Tensor) -> QuantizerOutput:
        """latents: (B, L, D) float32 [semantic | pixel] -> z_q (B, L, D), ids (B, sum s^2, 1) over all scales."""
        side = self._grid(latents.shape[1])
        # Both halves are l2-normalised per position (TokenFlow): bounded residuals keep the EMA
        # code values and the commitment term on one scale while the encoder trains.
        sem, pix = latents[..., : self.semantic_dim], latents[..., self.semantic_dim :]
        x = torch.cat([F.normalize(sem, dim=-1), F.normalize(pix, dim=-1)], -1)
        z = rearrange(x, "b (h w) d -> b d h w", h=side)
        scales = list(self.cfg.scales)
        dropped = 0
        if self.training and self.cfg.scale_drop > 0 and torch.rand(()) < self.cfg.scale_drop:
            keep = int(torch.randint(1, len(scales), ()))
            dropped, scales = len(scales) - keep, scales[:keep]
        z_hat, ids, inputs = self._quantize_scales(z, scales)
        if self.training:
            self._ema_update(ids, inputs)
        commit = self.cfg.commitment_weight * F.mse_loss(z, z_hat.detach())
        z_q = z + (z_hat - z).detach()  # straight-through
        ids = torch.cat(ids, dim=1)  # (B, sum s^2)
        if dropped:
            missing = sum(s * s for s in self.cfg.scales[-dropped:])
            ids = F.pad(ids, (0, missing), value=-1)  # skipped scales carry no code
        stats = batch_code_stats(ids.clamp(min=0), self.cfg.codebook_size)
        return QuantizerOutput(rearrange(z_q, "b d h w -> b (h w) d"), ids[..., None], {"commit": commit}, stats)

    def code_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, N, 1) -> (B, N, D): each token's own [semantic | pixel] code, one vector per token."""
        return self.codebook[ids[..., 0].clamp(min=0)]

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, sum s^2, 1) -> z_q: (B, h*w, D), the upsampled codes of every scale summed."""
        side = self.cfg.scales[-1]
        expected = sum(s * s for s in self.cfg.scales)
        if ids.shape[1] != expected:
            raise VtokError(
                f"tokenflow ids need {expected} positions over scales {self.cfg.scales}, got {ids.shape[1]}"
            )
        parts = ids[..., 0].split([s * s for s in self.cfg.scales], dim=1)  # (B, s*s) per scale
        z_hat = sum(self._scale_codes(part, s, side) for part, s in zip(parts, self.cfg.scales))
        return rearrange(z_hat, "b d h w -> b (h w) d")

    def extra_repr(self) -> str:
        dims = f"semantic {self.semantic_dim}-d + pixel {self.pixel_dim}-d"
        return f"{self.cfg.codebook_size} codes, {dims}, scales {self.cfg.scales}"
