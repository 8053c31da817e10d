"""Residual quantization through vector-quantize-pytorch's ``ResidualVQ``.

The published RQ-VAE's quantizer (per-level EMA of one shared codebook, its restarts, no
dropout) is the ``rq_shared`` part; this one keeps the library's dynamics (k-means init,
batch-relative restarts, quantize dropout) and offers separate codebooks per level.

Each position gets ``depth`` codes: level 1 quantizes the latent, level k the
residual left by levels 1..k-1, and the quantized latent is the sum of the chosen
codes. With quantize dropout, training sometimes stops after a random number of
levels, so a model trained at depth D decodes from any first d <= D levels:
``lookup`` accepts (B, L, d) ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vector_quantize_pytorch import ResidualVQ

from vtok.config import AT_LEAST_1, DECAY, NON_NEGATIVE, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats

from . import vqlib
from .upkeep import eval_mode_ids, init_only_in_training, scale_dead_code_thresholds


@register("quantizer", "rvq")
class ResidualQuantizer(Quantizer):
    """``depth`` codes per position from one shared or ``depth`` separate codebooks: ids (B, L, depth)."""

    prefix_decodable = True

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes (the model's quant_conv maps the encoder's output to it)
        dim: int = ranged(256, AT_LEAST_1)
        depth: int = ranged(4, AT_LEAST_1)
        # Codes per level K: each of a position's depth ids lies in [0, K)
        codebook_size: int = ranged(16384, AT_LEAST_1)
        # Null: codes live in dim; else a linear map to this width before the search and back after
        codebook_dim: int | None = ranged(None, AT_LEAST_1)
        shared_codebook: bool = True  # every level searches one codebook (RQ-VAE); false: a codebook per level
        # Search by cosine similarity (l2-normalised residuals and codes) instead of Euclidean distance
        cosine: bool = False
        # EMA decay of each codebook's running counts and sums; lower follows the encoder faster
        decay: float = ranged(0.99, DECAY)
        kmeans_init: bool = True  # codes start as k-means centroids of the first batch's residuals, not random
        dead_code_share: float = ranged(
            1.0, NON_NEGATIVE
        )  # restart a code under this share of a code's mean use (upkeep.py)
        dead_code_threshold: float = ranged(
            0.0, NON_NEGATIVE
        )  # > 0: the library's absolute EMA count, in place of the share
        # Training sometimes stops after a random number of levels, so any first d levels decode (depth > 1)
        quantize_dropout: bool = True
        # Weight of each level's commitment loss |r - sg(code)|^2, summed over levels (q_commit)
        commitment_weight: float = ranged(0.25, NON_NEGATIVE)

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.depth < 1:
            raise VtokError("quantizer: rvq depth must be at least 1")
        self.cfg = cfg
        self.dim = cfg.dim
        self.codebook_sizes = (cfg.codebook_size,) * cfg.depth
        self.quantize_dropout = cfg.quantize_dropout and cfg.depth > 1  # one level has nothing to drop
        self.rvq = ResidualVQ(
            dim=cfg.dim,
            num_quantizers=cfg.depth,
            codebook_size=cfg.codebook_size,
            codebook_dim=cfg.codebook_dim,
            shared_codebook=cfg.shared_codebook,
            use_cosine_sim=cfg.cosine,
            decay=cfg.decay,
            kmeans_init=cfg.kmeans_init,
            threshold_ema_dead_code=cfg.dead_code_threshold or cfg.dead_code_share,
            quantize_dropout=self.quantize_dropout,
            commitment_weight=cfg.commitment_weight,
        )

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, L, D) float32 -> z_q (B, L, D), ids (B, L, depth)."""
        books = vqlib.codebooks(self.rvq)
        if self.training and self.cfg.dead_code_threshold <= 0 and self.cfg.dead_code_share > 0:
            scale_dead_code_thresholds(books, x.shape[0] * x.shape[1], self.cfg.codebook_size, self.cfg.dead_code_share)
        with init_only_in_training(books, self.training):
            z_q, ids, commit = self.rvq(x)  # (B, L, D), (B, L, depth), (depth,)
        # Levels skipped by quantize dropout come back as -1; they carry no code.
        stats = batch_code_stats(ids[..., 0].clamp(min=0), self.cfg.codebook_size)
        return QuantizerOutput(z_q=z_q, ids=ids, losses={"commit": commit.sum()}, stats=stats)

    def _quantize_ids(self, x: torch.Tensor) -> torch.Tensor:
        """Inference ids at full depth (no dropout in eval mode)."""
        return eval_mode_ids(self, x)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, d) with 1 <= d <= depth -> z_q: (B, L, D), the sum of the first d levels' codes."""
        d = ids.shape[-1]
        if not 1 <= d <= self.cfg.depth:
            raise VtokError(f"rvq ids carry {d} levels; this quantizer has 1..{self.cfg.depth}")
        if d < self.cfg.depth and not self.quantize_dropout:
            return vqlib.residual_prefix_output(self.rvq, ids)
        return self.rvq.get_output_from_indices(ids)
