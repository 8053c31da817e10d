"""Multi-codebook quantization (UniTok): each position's latent split into chunks, each chunk coded by its own codebook.

UniTok splits the ``dim``-channel latent of a position into ``codebooks`` consecutive
chunks of ``dim / codebooks`` channels; chunk c is l2-normalised and coded by the code
of codebook c with the largest cosine similarity (the codes are l2-normalised too), so a
position carries ``codebooks`` ids, one per codebook, and its quantized latent is the
chosen unit codes concatenated. The ids are stacked codes: ``(B, L, codebooks)``, code c
from codebook c, ``codebook_sizes = (codebook_size,) * codebooks``.

Written by hand rather than with vector-quantize-pytorch's ``VectorQuantize(heads=C,
separate_codebook_per_head=True, use_cosine_sim=True)``, whose chunk layout matches,
because the library refuses a cosine codebook learned by gradient (it asserts against
``learnable_codebook`` with cosine similarity; its cosine codebooks move by EMA of
unit-normalised cluster means), and UniTok learns raw codebook weights by gradient
through the normalisation: ``|sg(z) - e|^2 + beta |z - sg(e)|^2`` on the normalised
chunk z and code e, averaged over codebooks (equal chunks: the mean over all channels).
The search is a per-codebook (N, d) x (d, K) product and its argmax, as published, so
the ids are UniTok's to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats


@register("quantizer", "mcq")
class MultiCodebookVQ(Quantizer):
    """ids (B, L, codebooks): code c is the nearest (cosine) unit code of codebook c to the normalised chunk c."""

    @dataclass
    class Config:
        # Width of the latent vectors, split into `codebooks` equal chunks (dim must be a multiple of codebooks)
        dim: int = ranged(64, AT_LEAST_1)
        # Codebooks, one per chunk of the latent: ids (B, L, codebooks)
        codebooks: int = ranged(8, AT_LEAST_1)
        codebook_size: int = ranged(4096, AT_LEAST_1)  # codes per codebook
        beta: float = ranged(0.25, NON_NEGATIVE)  # commitment weight; the codebook term has weight 1

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.dim % cfg.codebooks:
            raise VtokError(f"quantizer: mcq dim {cfg.dim} does not split into {cfg.codebooks} codebooks")
        self.cfg = cfg
        self.dim = cfg.dim
        self.chunk = cfg.dim // cfg.codebooks
        self.codebook_sizes = (cfg.codebook_size,) * cfg.codebooks
        # UniTok's init: uniform in +-(chunk ** -0.5 / 36) (its vocab_init -1); raw weights, normalised on use.
        bound = self.chunk**-0.5 / 36
        self.codes = nn.Parameter(torch.empty(cfg.codebooks, cfg.codebook_size, self.chunk).uniform_(-bound, bound))

    def _unit_codes(self) -> torch.Tensor:
        return F.normalize(self.codes.float(), dim=-1)  # (C, K, d)

    def _search(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, D) -> normalised chunks (B, L, D), ids (B, L, C)."""
        units = self._unit_codes()
        chunks, ids = [], []
        for c, part in enumerate(x.split(self.chunk, dim=-1)):
            z = F.normalize(part.reshape(-1, self.chunk), dim=-1)  # (N, d)
            ids.append(torch.argmax(z.detach() @ units[c].T, dim=1))  # (N,): largest cosine similarity
            chunks.append(z)
        b, n = x.shape[:2]
        return torch.cat(chunks, -1).view(b, n, -1), torch.stack(ids, -1).view(b, n, -1)

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, L, D) float32 -> z_q (B, L, D) (unit chunks), ids (B, L, codebooks)."""
        z, ids = self._search(x)  # (B, L, D), (B, L, C)
        q = self._lookup(ids)  # (B, L, D)
        losses = {"codebook": F.mse_loss(q, z.detach()), "commit": self.cfg.beta * F.mse_loss(z, q.detach())}
        z_q = z + (q - z).detach() if self.training else q  # straight-through; in eval exactly lookup(ids)
        return QuantizerOutput(z_q, ids, losses, batch_code_stats(ids[..., 0], self.cfg.codebook_size))

    @torch.no_grad()
    def _quantize_ids(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, codebooks)."""
        return self._search(x)[1]

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, codebooks) -> (B, L, D): each codebook's unit code, concatenated in codebook order."""
        units = self._unit_codes()
        return torch.cat([F.embedding(ids[..., c], units[c]) for c in range(self.cfg.codebooks)], dim=-1)
