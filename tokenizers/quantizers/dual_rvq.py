"""DualToken's quantizer: separate indices for the semantic and the pixel half, residual depth on each.

A composition of two registered quantizers over the [semantic | pixel] channels:
ids are (B, L, C_sem + C_pix), e.g. C = 2 with depth 1 on each, and ``lookup``
concatenates the two halves' quantized latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vtok.config import build_component, component
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register


@register("quantizer", "dual_rvq")
class DualQuantizer(Quantizer):
    """[semantic | pixel] latents -> the semantic quantizer's ids followed by the pixel quantizer's ids."""

    @dataclass
    class Config:
        # The quantizer of the first (semantic) channels; its dim is their width
        semantic: dict = component("quantizer", {"name": "rvq", "dim": 32, "depth": 1, "codebook_size": 16384})
        # The quantizer of the remaining (pixel) channels; its dim is their width
        pixel: dict = component("quantizer", {"name": "rvq", "dim": 8, "depth": 1, "codebook_size": 16384})

    def __init__(self, cfg: Config):
        super().__init__()
        self.semantic = build_component("quantizer", cfg.semantic, "model.quantizer.semantic")
        self.pixel = build_component("quantizer", cfg.pixel, "model.quantizer.pixel")
        self.semantic_dim, self.pixel_dim = self.semantic.dim, self.pixel.dim
        self.dim = self.semantic_dim + self.pixel_dim
        self.codebook_sizes = (*self.semantic.codebook_sizes, *self.pixel.codebook_sizes)
        self.split = len(self.semantic.codebook_sizes)

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, L, D_sem + D_pix) -> z_q (B, L, D), ids (B, L, C_sem + C_pix)."""
        s = self.semantic(x[..., : self.semantic_dim])
        p = self.pixel(x[..., self.semantic_dim :])
        losses = {"commit": sum(s.losses.values()) + sum(p.losses.values())}
        stats = {f"semantic_{k}": v for k, v in s.stats.items()} | {f"pixel_{k}": v for k, v in p.stats.items()}
        stats["perplexity"] = p.stats["perplexity"]
        return QuantizerOutput(torch.cat([s.z_q, p.z_q], -1), torch.cat([s.ids, p.ids], -1), losses, stats)

    def _quantize_ids(self, x: torch.Tensor) -> torch.Tensor:
        """Each half's own inference ids, semantic first: (B, L, C_sem + C_pix)."""
        sem = self.semantic.quantize_ids(x[..., : self.semantic_dim])
        return torch.cat([sem, self.pixel.quantize_ids(x[..., self.semantic_dim :])], -1)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, C_sem + C_pix) -> (B, L, D_sem + D_pix)."""
        return torch.cat([self.semantic.lookup(ids[..., : self.split]), self.pixel.lookup(ids[..., self.split :])], -1)
