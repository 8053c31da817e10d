"""TokenFlow's published quantizer (ByteFlow-AI/TokenFlow): one shared id a position over scales, two learned codebooks.

Beside ``tokenflow`` (vtok's EMA variant of the same shared-id layout), this part computes
what TokenFlow's released tokenizers compute, checked against its code (``vtok convert
--from tokenflow``, docs/converting.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from vtok.config import AT_LEAST_1, NON_NEGATIVE, UNIT, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats

from .tokenflow import SharedMultiScaleQuantizer


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
        # Channels of the semantic half of the latents (the first ones) and of its codes
        semantic_dim: int = ranged(32, AT_LEAST_1)
        pixel_dim: int = ranged(8, AT_LEAST_1)  # channels of the pixel half (the rest) and of its codes
        # Codes K in each of the two codebooks; one id in [0, K) addresses a code of each
        codebook_size: int = ranged(32768, AT_LEAST_1)
        # Side s of each scale's s x s id map, coarse to fine (strictly increasing); the last is the latent grid
        scales: list[int] = ranged([1, 2, 4, 6, 8, 10, 12, 14, 16], AT_LEAST_1)
        pixel_weight: float = ranged(1.0, NON_NEGATIVE)
        commitment_weight: float = ranged(0.25, NON_NEGATIVE)  # TokenFlow's vq_train default beta
        # Training: chance of leaving out one random scale other than the first (TokenFlow: 10%, one scale).
        scale_drop: float = ranged(0.1, UNIT)

    def __init__(self, cfg: Config):
        super().__init__()
        if sorted(cfg.scales) != cfg.scales or len(set(cfg.scales)) != len(cfg.scales):
            raise VtokError("quantizer: tokenflow_learned scales must increase strictly, e.g. [1, 2, 4, 8, 16]")
        self.cfg = cfg
        self.semantic_dim, self.pixel_dim = cfg.semantic_dim, cfg.pixel_dim
        self.dim = cfg.semantic_dim + cfg.pixel_dim
        self.codebook_sizes = (cfg.codebook_size,)
        k = cfg.codebook_size
        self.semantic_codes = torch.nn.Parameter(
            F.normalize(torch.empty(k, self.semantic_dim).uniform_(-1 / k, 1 / k), dim=-1)
        )
        self.pixel_codes = torch.nn.Parameter(
            F.normalize(torch.empty(k, self.pixel_dim).uniform_(-1 / k, 1 / k), dim=-1)
        )

    token_scales = SharedMultiScaleQuantizer.token_scales
    token_positions = SharedMultiScaleQuantizer.token_positions
    _grid = SharedMultiScaleQuantizer._grid

    def codes(self) -> torch.Tensor:
        """(K, D_sem + D_pix): the l2-normalised [semantic | pixel] code of every id."""
        return torch.cat([F.normalize(self.semantic_codes, dim=-1), F.normalize(self.pixel_codes, dim=-1)], -1)

    def _scale(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """r: (B, D, s, s) pooled residual -> (ids (B, s*s), normalised residual (B, s*s, D), codes (B, s*s, D))."""
        flat = rearrange(r, "b d h w -> b (h w) d")
        z = torch.cat(
            [F.normalize(flat[..., : self.semantic_dim], dim=-1), F.normalize(flat[..., self.semantic_dim :], dim=-1)],
            -1,
        )
        codes = self.codes()
        d = 0
        for part, weight in (
            (slice(0, self.semantic_dim), 1.0),
            (slice(self.semantic_dim, self.dim), self.cfg.pixel_weight),
        ):
            x, e = z[..., part].reshape(-1, z[..., part].shape[-1]), codes[:, part]
            d = d + weight * ((x**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * x @ e.t())  # (B*s*s, K)
        ids = rearrange(d.argmin(1), "(b n) -> b n", b=r.shape[0])
        return ids, z, codes[ids]

    def _quantize(self, latents: torch.Tensor) -> QuantizerOutput:
        """latents: (B, L, D) float32 [semantic | pixel] -> z_q (B, L, D) summed over scales, ids (B, sum s^2, 1)."""
        side = self._grid(latents.shape[1])
        residual = rearrange(latents, "b (h w) d -> b d h w", h=side)
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

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, sum s^2, 1) -> z_q: (B, h*w, D), the bicubic-upsampled codes of every scale summed."""
        side, expected = self.cfg.scales[-1], sum(s * s for s in self.cfg.scales)
        if ids.shape[1] != expected:
            raise VtokError(
                f"tokenflow ids need {expected} positions over scales {self.cfg.scales}, got {ids.shape[1]}"
            )
        vectors = self.code_vectors(ids)  # (B, sum s^2, D)
        z_hat = 0
        for part, s in zip(vectors.split([s * s for s in self.cfg.scales], dim=1), self.cfg.scales):
            q = rearrange(part, "b (h w) d -> b d h w", h=s)
            z_hat = z_hat + F.interpolate(q, size=(side, side), mode="bicubic")  # (B, D, side, side)
        return rearrange(z_hat, "b d h w -> b (h w) d")

    def extra_repr(self) -> str:
        dims = f"semantic {self.semantic_dim}-d + pixel {self.pixel_dim}-d"
        return f"{self.cfg.codebook_size} codes, {dims}, scales {self.cfg.scales}"
