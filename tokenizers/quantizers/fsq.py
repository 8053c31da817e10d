"""Finite scalar quantization (FSQ) through vector-quantize-pytorch's ``FSQ``: no codebook to learn or collapse.

Each of the ``len(levels)`` channels is rounded to one of ``levels[i]`` values; the
id of a position is the mixed-radix number of its rounded channels, so the
implicit codebook has ``prod(levels)`` entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from vector_quantize_pytorch import FSQ as LibraryFSQ

from vtok.config import AT_LEAST_1, UNIT, Range, ranged
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats


@register("quantizer", "fsq")
class FSQ(Quantizer):
    """ids (B, L, 1) in [0, prod(levels)); ``dim`` is the input width (projected to len(levels) inside)."""

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes; when it differs from len(levels), a linear map to them and back
        dim: int = ranged(6, AT_LEAST_1)
        # Values each channel is rounded to; the implicit codebook has their product (FSQ paper: [8, 8, 8, 5, 5, 5])
        levels: list[int] = ranged([8, 8, 8, 5, 5, 5], Range(2))
        # Symmetry-preserving rounding and noise substitution (arXiv 2411.19842, section 3.2): each channel's
        # levels are spread evenly over (-1, 1), and in training a share of the latents pass with uniform noise
        # in place of rounding, which keeps gradients alive where tanh saturates.
        preserve_symmetry: bool = False
        # Share of training latents passed with uniform noise instead of rounding (see above); 0: off
        noise_dropout: float = ranged(0.0, UNIT)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        size = math.prod(cfg.levels)
        self.codebook_sizes = (size,)
        # the library reads its level buffers with .item(): a meta-device build needs them real
        with torch.device("cpu"):
            self.fsq = LibraryFSQ(
                levels=list(cfg.levels),
                dim=cfg.dim,
                preserve_symmetry=cfg.preserve_symmetry,
                noise_dropout=cfg.noise_dropout,
            )

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, L, dim) float32 -> z_q (B, L, dim), ids (B, L, 1)."""
        z_q, ids = self.fsq(x)  # (B, L, dim), (B, L)
        stats = batch_code_stats(ids.long(), self.codebook_sizes[0])
        # FSQ has no codebook or commitment term: its loss is zero.
        return QuantizerOutput(z_q=z_q, ids=ids.long().unsqueeze(-1), losses={"commit": z_q.new_zeros(())}, stats=stats)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, 1) -> (B, L, dim)."""
        return self.fsq.indices_to_codes(ids[..., 0])
