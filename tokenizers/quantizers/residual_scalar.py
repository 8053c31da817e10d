"""Residual stacks of implicit-codebook quantizers: ``residual_lfq`` and ``residual_fsq`` (vector-quantize-pytorch's
``ResidualLFQ`` / ``ResidualFSQ``).

Level q codes what the levels before it left, at a scale that shrinks with q (LFQ:
2^-q; FSQ: levels^-q per channel), so ids are (B, L, depth) like ``rvq`` and any
prefix of levels decodes (``prefix_decodable``): the RQ family on codes that
cannot collapse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import ResidualFSQ as LibraryResidualFSQ
from vector_quantize_pytorch import ResidualLFQ as LibraryResidualLFQ

from vtok.config import AT_LEAST_1, NON_NEGATIVE, Range, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats

from .lfq import MAX_GROUP_BITS
from .upkeep import eval_mode_ids


class ResidualScalar(Quantizer):
    """Shared by the residual stacks: the library module is ``self.stack``; ids (B, L, depth)."""

    prefix_decodable = True
    stack: nn.Module
    depth: int

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_q, ids, loss) from the library module."""
        raise NotImplementedError

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, L, dim) float32 -> z_q (B, L, dim), ids (B, L, depth); -1 at levels quantize dropout skipped."""
        z_q, ids, loss = self._run(x)  # (B, L, dim), (B, L, depth), ()
        ids = ids.long()
        stats = batch_code_stats(ids[..., 0].clamp(min=0), self.codebook_sizes[0])
        return QuantizerOutput(z_q=z_q, ids=ids, losses={"commit": loss}, stats=stats)

    def _quantize_ids(self, x: torch.Tensor) -> torch.Tensor:
        """Inference ids at full depth (no dropout in eval mode)."""
        return eval_mode_ids(self, x)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, d) with 1 <= d <= depth -> (B, L, dim): the sum of the first d levels' codes."""
        d = ids.shape[-1]
        if not 1 <= d <= self.depth:
            raise VtokError(f"{type(self).__name__} ids carry {d} levels; this quantizer has 1..{self.depth}")
        # Levels past d are marked -1, which the library masks to zero (it asserts on short ids without dropout).
        ids = F.pad(ids, (0, self.depth - d), value=-1)
        return self.stack.get_output_from_indices(ids)


@register("quantizer", "residual_lfq")
class ResidualLFQ(ResidualScalar):
    """``depth`` levels of ``bits``-bit LFQ. ``commit``: every level's entropy and commitment terms, summed
    (the library returns them as one number per level)."""

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes (projected to bits channels inside when different)
        dim: int = ranged(8, AT_LEAST_1)
        bits: int = ranged(8, Range(1, MAX_GROUP_BITS))
        depth: int = ranged(4, AT_LEAST_1)
        # Weight of each level's entropy loss (MAGVIT-v2: per-sample entropy minus batch entropy)
        entropy_weight: float = ranged(0.1, NON_NEGATIVE)
        # Weight of each level's commitment loss between the projection and its signs
        commitment_weight: float = ranged(0.25, NON_NEGATIVE)
        # Training sometimes stops after a random number of levels, so any first d levels decode
        quantize_dropout: bool = True

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg, self.dim, self.depth = cfg, cfg.dim, cfg.depth
        self.codebook_sizes = (2**cfg.bits,) * cfg.depth
        self.stack = LibraryResidualLFQ(
            dim=cfg.dim,
            num_quantizers=cfg.depth,
            codebook_size=2**cfg.bits,
            quantize_dropout=cfg.quantize_dropout,
            entropy_loss_weight=cfg.entropy_weight,
            commitment_loss_weight=cfg.commitment_weight,
        )

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_q, ids, losses = self.stack(x)  # losses: (depth,)
        return z_q, ids, losses.sum()


@register("quantizer", "residual_fsq")
class ResidualFSQ(ResidualScalar):
    """``depth`` levels of FSQ with ``levels`` per channel; no loss to train (``commit`` is zero)."""

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes (projected to len(levels) channels inside when different)
        dim: int = ranged(8, AT_LEAST_1)
        levels: list[int] = ranged([8, 5, 5, 5], Range(2))
        depth: int = ranged(4, AT_LEAST_1)
        # Training sometimes stops after a random number of levels, so any first d levels decode
        quantize_dropout: bool = True

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg, self.dim, self.depth = cfg, cfg.dim, cfg.depth
        self.codebook_sizes = (math.prod(cfg.levels),) * cfg.depth
        self.stack = LibraryResidualFSQ(
            dim=cfg.dim, levels=list(cfg.levels), num_quantizers=cfg.depth, quantize_dropout=cfg.quantize_dropout
        )

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_q, ids = self.stack(x)
        return z_q, ids, z_q.new_zeros(())
