"""The VQGAN / LlamaGen quantizer: a codebook learned by gradient, optionally l2-normalised.

Written by hand because vector-quantize-pytorch refuses a cosine codebook learned by
gradient (``VectorQuantize(use_cosine_sim=True, learnable_codebook=True)`` asserts),
and that is LlamaGen's published setting: codes and inputs l2-normalised, the
codebook pulled to the inputs by ``|sg(z) - e|^2`` and the encoder by ``beta |z -
sg(e)|^2``, uniform init in [-1/K, 1/K], no k-means init and no restarts. It is here
so a recipe study can compare the published dynamics with the library's (EMA,
k-means init, dead-code restarts) on the same network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, ranged
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats
from vtok.tokenizers.quantizers.vq import code_entropy_loss


@register("quantizer", "vq_learned")
class LearnedVQ(Quantizer):
    """One codebook learned by gradient: ids (B, L, 1), ``z_q`` straight-through."""

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes (the model's quant_conv maps the encoder's output to it)
        dim: int = ranged(8, AT_LEAST_1)
        codebook_size: int = ranged(16384, AT_LEAST_1)  # number of codes K: ids lie in [0, K)
        l2_norm: bool = True  # l2-normalise inputs and codes before the search (LlamaGen's setting): a cosine codebook
        beta: float = ranged(0.25, NON_NEGATIVE)  # commitment weight; the codebook term has weight 1
        # Weight of LlamaGen's entropy loss (sharp per-latent code choice, spread over the batch); 0: off
        entropy_weight: float = ranged(0.0, NON_NEGATIVE)
        # Softmax temperature over negative squared distances in that entropy loss; lower is sharper
        entropy_temperature: float = ranged(0.01, POSITIVE)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        self.codebook_sizes = (cfg.codebook_size,)
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size)

    def _codes(self) -> torch.Tensor:
        codes = self.embedding.weight.float()
        return F.normalize(codes, dim=-1) if self.cfg.l2_norm else codes

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.cfg.l2_norm else x

    def _nearest(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        flat = rearrange(x, "b l d -> (b l) d")
        distance = (flat * flat).sum(-1, keepdim=True) - 2 * flat @ codes.t() + (codes * codes).sum(-1)  # (N, K)
        return rearrange(distance.argmin(-1), "(b l) -> b l", b=x.shape[0])

    def _quantize(self, latents: torch.Tensor) -> QuantizerOutput:
        """latents: (B, L, D) float32 -> z_q (B, L, D), ids (B, L, 1)."""
        x = self._prepare(latents)  # (B, L, D)
        codes = self._codes()  # (K, D)
        ids = self._nearest(x, codes)  # (B, L)
        q = codes[ids]  # (B, L, D)
        losses = {
            "codebook": F.mse_loss(q, x.detach()),
            "commit": self.cfg.beta * F.mse_loss(x, q.detach()),
        }
        if self.training and self.cfg.entropy_weight > 0:
            losses["entropy"] = self.cfg.entropy_weight * code_entropy_loss(x, codes, self.cfg.entropy_temperature)
        z_q = x + (q - x).detach()  # straight-through
        stats = batch_code_stats(ids, self.cfg.codebook_size)
        return QuantizerOutput(z_q=z_q, ids=ids.unsqueeze(-1), losses=losses, stats=stats)

    def _quantize_ids(self, latents: torch.Tensor) -> torch.Tensor:
        """The nearest codes alone, no losses: (B, L, 1)."""
        return self._nearest(self._prepare(latents), self._codes()).unsqueeze(-1)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, 1) -> z_q: (B, L, D)."""
        return self._codes()[ids[..., 0]]
