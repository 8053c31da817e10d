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

from dataclasses import dataclass, field

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
        codebook_size: int = ranged(16384, AT_LEAST_1)
        scales: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
        pixel_weight: float = 1.0
        decay: float = ranged(0.99, DECAY)
        dead_code_share: float = ranged(1.0, NON_NEGATIVE)  # restart under this share of a code's mean use
        dead_code_threshold: float = ranged(0.0, NON_NEGATIVE)  # > 0: an absolute EMA count instead of the share
        commitment_weight: float = ranged(0.25, NON_NEGATIVE)
        scale_drop: float = ranged(0.1, UNIT)  # training: chance of stopping after a random coarser scale

    def __init__(self, cfg: Config):
        super().__init__()
        if sorted(cfg.scales) != cfg.scales or len(set(cfg.scales)) != len(cfg.scales):
            raise VtokError("quantizer: tokenflow scales must increase strictly, e.g. [1, 2, 4, 8, 16]")
        self.cfg = cfg
        self.sem_dim, self.pix_dim = cfg.semantic_dim, cfg.pixel_dim
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
        sem = F.normalize(r[:, : self.sem_dim], dim=-1) @ F.normalize(codes[:, : self.sem_dim], dim=-1).t()
        pix = F.normalize(r[:, self.sem_dim :], dim=-1) @ F.normalize(codes[:, self.sem_dim :], dim=-1).t()
        # |a - b|^2 = 2 - 2 a.b for unit vectors: the argmin of the weighted sum is the argmax of this.
        return (sem + self.cfg.pixel_weight * pix).argmax(-1)

    def _quantize(
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

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        """latents: (B, L, D) [semantic | pixel] -> z_q (B, L, D), ids (B, sum s^2, 1) over all scales."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            side = self._grid(latents.shape[1])
            # Both halves are l2-normalised per position (TokenFlow): bounded residuals keep the EMA
            # code values and the commitment term on one scale while the encoder trains.
            x = latents.float()
            x = torch.cat(
                [F.normalize(x[..., : self.sem_dim], dim=-1), F.normalize(x[..., self.sem_dim :], dim=-1)], -1
            )
            z = rearrange(x, "b (h w) d -> b d h w", h=side)
            scales = list(self.cfg.scales)
            dropped = 0
            if self.training and self.cfg.scale_drop > 0 and torch.rand(()) < self.cfg.scale_drop:
                keep = int(torch.randint(1, len(scales), ()))
                dropped, scales = len(scales) - keep, scales[:keep]
            z_hat, ids, inputs = self._quantize(z, scales)
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

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
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
        return f"{self.cfg.codebook_size} codes, semantic {self.sem_dim}-d + pixel {self.pix_dim}-d, scales {self.cfg.scales}"


@register("quantizer", "tokenflow_learned")
class LearnedSharedMultiScaleQuantizer(Quantizer):
    """TokenFlow's published quantizer: two gradient-learned codebooks read l2-normalised, one id per position.

    Unlike ``tokenflow`` (EMA code values, latents normalised once up front), the
    latents enter as they are and at each scale the area-pooled residual's halves
    are l2-normalised before the search and the commitment terms; the codes are
    the l2-normalised rows of ``semantic_codes`` / ``pixel_codes`` (trained by the
    codebook loss, as LlamaGen's VQ). The distance is TokenFlow's
    ``|z|^2 + |e|^2 - 2 z.e`` per half, summed with ``pixel_weight`` on the pixel half,
    computed in that form so near-ties resolve as in the published code. Each scale's
    output is the straight-through ``z + (e - z).detach()`` of the normalised residual,
    bicubic-upsampled to the last scale and subtracted from the residual.
    """

    @dataclass
    class Config:
        semantic_dim: int = ranged(32, AT_LEAST_1)
        pixel_dim: int = ranged(8, AT_LEAST_1)
        codebook_size: int = ranged(32768, AT_LEAST_1)
        scales: list[int] = field(default_factory=lambda: [1, 2, 4, 6, 8, 10, 12, 14, 16])
        pixel_weight: float = 1.0
        commitment_weight: float = ranged(0.25, NON_NEGATIVE)  # TokenFlow's vq_train default beta
        # Training: chance of leaving out one random scale other than the first (TokenFlow: 10%, one scale).
        scale_drop: float = ranged(0.1, UNIT)

    def __init__(self, cfg: Config):
        super().__init__()
        if sorted(cfg.scales) != cfg.scales or len(set(cfg.scales)) != len(cfg.scales):
            raise VtokError("quantizer: tokenflow_learned scales must increase strictly, e.g. [1, 2, 4, 8, 16]")
        self.cfg = cfg
        self.sem_dim, self.pix_dim = cfg.semantic_dim, cfg.pixel_dim
        self.dim = cfg.semantic_dim + cfg.pixel_dim
        self.codebook_sizes = (cfg.codebook_size,)
        k = cfg.codebook_size
        self.semantic_codes = torch.nn.Parameter(F.normalize(torch.empty(k, self.sem_dim).uniform_(-1 / k, 1 / k), dim=-1))
        self.pixel_codes = torch.nn.Parameter(F.normalize(torch.empty(k, self.pix_dim).uniform_(-1 / k, 1 / k), dim=-1))

    token_scales = SharedMultiScaleQuantizer.token_scales
    token_positions = SharedMultiScaleQuantizer.token_positions
    _grid = SharedMultiScaleQuantizer._grid

    def codes(self) -> torch.Tensor:
        """(K, D_sem + D_pix): the l2-normalised [semantic | pixel] code of every id."""
        return torch.cat([F.normalize(self.semantic_codes, dim=-1), F.normalize(self.pixel_codes, dim=-1)], -1)

    def _scale(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """r: (B, D, s, s) pooled residual -> (ids (B, s*s), normalised residual (B, s*s, D), codes (B, s*s, D))."""
        flat = rearrange(r, "b d h w -> b (h w) d")
        z = torch.cat([F.normalize(flat[..., : self.sem_dim], dim=-1), F.normalize(flat[..., self.sem_dim :], dim=-1)], -1)
        codes = self.codes()
        d = 0
        for part, weight in ((slice(0, self.sem_dim), 1.0), (slice(self.sem_dim, self.dim), self.cfg.pixel_weight)):
            x, e = z[..., part].reshape(-1, z[..., part].shape[-1]), codes[:, part]
            d = d + weight * ((x**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * x @ e.t())  # (B*s*s, K)
        ids = rearrange(d.argmin(1), "(b n) -> b n", b=r.shape[0])
        return ids, z, codes[ids]

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        """latents: (B, L, D) [semantic | pixel] -> z_q (B, L, D) summed over scales, ids (B, sum s^2, 1)."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            side = self._grid(latents.shape[1])
            residual = rearrange(latents.float(), "b (h w) d -> b d h w", h=side)
            kept = list(range(len(self.cfg.scales)))
            if self.training and self.cfg.scale_drop > 0 and len(kept) > 2 and torch.rand(()) < self.cfg.scale_drop:
                kept.pop(int(torch.randint(1, len(kept), ())))
            z_q, ids, codebook, commit = torch.zeros_like(residual), [], [], []
            for i, s in enumerate(self.cfg.scales):
                if i not in kept:  # a left-out scale carries no code
                    ids.append(torch.full((latents.shape[0], s * s), -1, dtype=torch.long, device=latents.device))
                    continue
                idx, z, e = self._scale(F.interpolate(residual, size=(s, s), mode="area"))  # (B, s*s) ...
                q = rearrange(z + (e - z).detach(), "b (h w) d -> b d h w", h=s)  # straight-through, (B, D, s, s)
                q = F.interpolate(q, size=(side, side), mode="bicubic")  # (B, D, side, side)
                z_q, residual = z_q + q, residual - q.detach()
                ids.append(idx)
                codebook.append(F.mse_loss(e, z.detach()))
                commit.append(F.mse_loss(e.detach(), z))
            losses = {
                "codebook": sum(codebook) / len(codebook),
                "commit": self.cfg.commitment_weight * sum(commit) / len(commit),
            }
            ids = torch.cat(ids, dim=1)  # (B, sum s^2)
        stats = batch_code_stats(ids.clamp(min=0), self.cfg.codebook_size)
        return QuantizerOutput(rearrange(z_q, "b d h w -> b (h w) d"), ids[..., None], losses, stats)

    def code_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, N, 1) -> (B, N, D): each token's own normalised [semantic | pixel] code."""
        return self.codes()[ids[..., 0].clamp(min=0)] * (ids >= 0).float()

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, sum s^2, 1) -> z_q: (B, h*w, D), the bicubic-upsampled codes of every scale summed."""
        side, expected = self.cfg.scales[-1], sum(s * s for s in self.cfg.scales)
        if ids.shape[1] != expected:
            raise VtokError(f"tokenflow ids need {expected} positions over scales {self.cfg.scales}, got {ids.shape[1]}")
        vectors = self.code_vectors(ids)  # (B, sum s^2, D)
        z_hat = 0
        for part, s in zip(vectors.split([s * s for s in self.cfg.scales], dim=1), self.cfg.scales):
            q = rearrange(part, "b (h w) d -> b d h w", h=s)
            z_hat = z_hat + F.interpolate(q, size=(side, side), mode="bicubic")  # (B, D, side, side)
        return rearrange(z_hat, "b d h w -> b (h w) d")

    def extra_repr(self) -> str:
        return f"{self.cfg.codebook_size} codes, semantic {self.sem_dim}-d + pixel {self.pix_dim}-d, scales {self.cfg.scales}"
