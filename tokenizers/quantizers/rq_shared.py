"""RQ-VAE's residual quantizer (Lee et al. 2022, stage 1): ``depth`` codes per position from one shared codebook.

What it computes, as the published model does (kakaobrain/rq-vae-transformer):

- Level k picks, for the residual r_k (r_1 = the latent), the code c minimising the squared
  distance ``|r|^2 + |c|^2 - 2 r.c``, evaluated in that order in float32 (ties and near-ties
  resolve as in the published code); r_{k+1} = r_k - c. All levels search the same codebook.
- The decoder receives the sum of all chosen codes; ``lookup`` of the first d levels is the
  sum of their codes (the paper's coarse-to-fine decoding).
- Training: no codebook gradient. The codebook is an EMA of the residuals assigned to each
  code (decay 0.99, Laplace-smoothed counts, eps 1e-5), updated once *per level*, so a later
  level of the same step already searches the codebook its earlier levels moved; codes whose
  EMA count falls under 1 are restarted at a random residual of the batch (tiled with small
  uniform noise when the batch has fewer vectors than codes). The commitment loss is the mean
  over levels of ``|z - sum of the first k codes|^2``, times ``commitment_weight`` (the
  published latent_loss_weight 0.25); the latent passes straight through to the decoder.

Why not vector-quantize-pytorch's ``ResidualVQ`` (the ``rvq`` part): it shares the codebook
but updates it once per step from all levels together, restarts codes by another rule,
k-means-initialises and drops levels at random; none of which the published model does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vtok.config import AT_LEAST_1, DECAY, NON_NEGATIVE, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats


@register("quantizer", "rq_shared")
class SharedResidualQuantizer(Quantizer):
    """``depth`` codes per position, all from one EMA codebook (K, D): ids (B, L, depth)."""

    prefix_decodable = True

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes (the model's quant_conv maps the encoder's output to it)
        dim: int = ranged(256, AT_LEAST_1)
        depth: int = ranged(4, AT_LEAST_1)
        # Codes K of the one codebook all levels share: each of a position's depth ids lies in [0, K)
        codebook_size: int = ranged(16384, AT_LEAST_1)
        # EMA decay of the codebook's counts and sums, applied once per level (RQ-VAE: 0.99)
        decay: float = ranged(0.99, DECAY)
        restart_unused_codes: bool = True  # a code with EMA count under 1 restarts at a batch residual
        eps: float = ranged(1e-5, NON_NEGATIVE)  # Laplace smoothing of the EMA counts
        # Weight of the mean over levels of |z - sum of the first k codes|^2 (RQ-VAE's latent_loss_weight)
        commitment_weight: float = ranged(0.25, NON_NEGATIVE)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        self.codebook_sizes = (cfg.codebook_size,) * cfg.depth
        # A parameter, as in the published model, that no optimiser moves: only the EMA writes it.
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, cfg.dim), requires_grad=False)
        self.register_buffer("cluster_size_ema", torch.zeros(cfg.codebook_size))
        self.register_buffer("embed_ema", self.codebook.detach().clone())

    @torch.no_grad()
    def nearest(self, residual: torch.Tensor) -> torch.Tensor:
        """residual: (N, D) float32 -> (N,) ids of the nearest codes by the published distance formula."""
        codebook_t = self.codebook.t()  # (D, K)
        norms = residual.pow(2.0).sum(dim=1, keepdim=True) + codebook_t.pow(2.0).sum(dim=0, keepdim=True)
        return torch.addmm(norms, residual, codebook_t, alpha=-2.0).argmin(dim=-1)  # (N,)

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """z: (B, L, D) float32 -> z_q (B, L, D) float32 (straight-through), ids (B, L, depth)."""
        if z.shape[-1] != self.dim:
            raise VtokError(f"rq_shared: latents have {z.shape[-1]} channels, the codebook {self.dim}")
        ids, partial_sums = self._residual_codes(z.detach().flatten(0, 1), update=self.training)
        ids = ids.view(*z.shape[:2], -1)  # (B, L, depth)
        partial_sums = [s.view_as(z) for s in partial_sums]
        commit = torch.stack([(z - s).pow(2.0).mean() for s in partial_sums]).mean()
        z_q = z + (partial_sums[-1] - z).detach()  # (B, L, D)
        # All levels draw from one codebook: the batch's usage counts every level's ids.
        stats = batch_code_stats(ids, self.cfg.codebook_size)
        return QuantizerOutput(z_q=z_q, ids=ids, losses={"commit": self.cfg.commitment_weight * commit}, stats=stats)

    @torch.no_grad()
    def _residual_codes(self, x: torch.Tensor, update: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x: (N, D) -> ids (N, depth) and, per level k, the sum of the first k codes (N, D)."""
        residual = x.clone()
        total = torch.zeros_like(x)
        ids, partial_sums = [], []
        for _ in range(self.cfg.depth):
            idx = self.nearest(residual)  # (N,)
            if update:
                self._update_stats(residual, idx)
            code = F.embedding(idx, self.codebook)  # (N, D): the codes before this level's EMA write, as published
            if update:
                self._write_codebook()
            residual.sub_(code)
            total.add_(code)
            ids.append(idx)
            partial_sums.append(total.clone())
        return torch.stack(ids, dim=-1), partial_sums

    @torch.no_grad()
    def _update_stats(self, vectors: torch.Tensor, idx: torch.Tensor) -> None:
        """EMA of the per-code counts and sums of this level's residuals; restarts of unused codes."""
        k = self.cfg.codebook_size
        one_hot = vectors.new_zeros(k, vectors.shape[0])
        one_hot.scatter_(0, idx[None], 1.0)  # (K, N)
        counts, sums = one_hot.sum(dim=1), one_hot @ vectors  # (K,), (K, D)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        self.cluster_size_ema.mul_(self.cfg.decay).add_(counts, alpha=1 - self.cfg.decay)
        self.embed_ema.mul_(self.cfg.decay).add_(sums, alpha=1 - self.cfg.decay)
        if self.cfg.restart_unused_codes:
            self._restart_unused(vectors)

    @torch.no_grad()
    def _restart_unused(self, vectors: torch.Tensor) -> None:
        """Codes whose EMA count is under 1 take a random vector of the batch and a count of 1."""
        k, n = self.cfg.codebook_size, vectors.shape[0]
        if n < k:  # tile the batch with small uniform noise so every code can get its own vector
            repeats = (k + n - 1) // n
            noise_scale = 0.01 / self.dim**0.5
            vectors = vectors.repeat(repeats, 1)
            vectors = vectors + torch.rand_like(vectors) * noise_scale
        candidates = vectors[torch.randperm(vectors.shape[0], device=vectors.device)][:k]  # (K, D)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(candidates, 0)
        used = (self.cluster_size_ema >= 1).float()  # (K,)
        self.embed_ema.mul_(used[:, None]).add_(candidates * (1 - used[:, None]))
        self.cluster_size_ema.mul_(used).add_(1 - used)

    @torch.no_grad()
    def _write_codebook(self) -> None:
        """codebook = EMA sums / Laplace-smoothed EMA counts."""
        k, eps = self.cfg.codebook_size, self.cfg.eps
        n = self.cluster_size_ema.sum()
        counts = n * (self.cluster_size_ema + eps) / (n + k * eps)
        self.codebook.copy_(self.embed_ema / counts[:, None])

    def _quantize_ids(self, z: torch.Tensor) -> torch.Tensor:
        """Inference ids (B, L, depth) of z: (B, L, D) float32; never updates the codebook, also in training mode."""
        ids, _ = self._residual_codes(z.flatten(0, 1), update=False)
        return ids.view(*z.shape[:2], -1)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, d) with 1 <= d <= depth -> z_q: (B, L, D), the sum of the first d levels' codes."""
        d = ids.shape[-1]
        if not 1 <= d <= self.cfg.depth:
            raise VtokError(f"rq_shared ids carry {d} levels; this quantizer has 1..{self.cfg.depth}")
        return F.embedding(ids, self.codebook).sum(dim=-2)  # (B, L, d, D) -> (B, L, D)
