"""SimVQ (arXiv 2411.02038) through vector-quantize-pytorch's ``SimVQ``: a frozen random codebook seen through a
learned linear map.

Every code moves with the one shared map, so a code no input picks still follows
the codes that are picked: the paper's remedy for collapse, near-full usage
without restarts or k-means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vector_quantize_pytorch import SimVQ as LibrarySimVQ

from vtok.config import AT_LEAST_1, NON_NEGATIVE, ranged
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats


@register("quantizer", "simvq")
class SimVQ(Quantizer):
    """ids (B, L, 1): the nearest (Euclidean) row of ``W @ frozen_codebook``.

    Losses as the paper trains it: ``commitment_weight`` x (MSE pulling the codes to
    the inputs + ``input_commitment`` x MSE pulling the inputs to the codes), the
    rotation trick for the encoder's gradient.
    """

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes (the model's quant_conv maps the encoder's output to it)
        dim: int = ranged(8, AT_LEAST_1)
        # Number of codes K (rows of the frozen random codebook): ids lie in [0, K)
        codebook_size: int = ranged(16384, AT_LEAST_1)
        frozen_dim: int | None = ranged(None, AT_LEAST_1)  # the frozen codebook's width (default: dim)
        # The encoder's gradient crosses the quantizer by the rotation trick, not the straight-through copy
        rotation_trick: bool = True
        commitment_weight: float = ranged(1.0, NON_NEGATIVE)
        input_commitment: float = ranged(0.25, NON_NEGATIVE)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        self.codebook_sizes = (cfg.codebook_size,)
        self.simvq = LibrarySimVQ(
            dim=cfg.dim,
            codebook_size=cfg.codebook_size,
            frozen_codebook_dim=cfg.frozen_dim,
            rotation_trick=cfg.rotation_trick,
            commitment_weight=cfg.commitment_weight,
            input_to_quantize_commit_loss_weight=cfg.input_commitment,
        )

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, L, dim) float32 -> z_q (B, L, dim), ids (B, L, 1)."""
        z_q, ids, commit = self.simvq(x)  # (B, L, dim), (B, L)
        if not self.training:  # the rotation is the code only up to rounding; outside training, the code
            z_q = self._lookup(ids[..., None])
        stats = batch_code_stats(ids, self.cfg.codebook_size)
        return QuantizerOutput(
            z_q=z_q, ids=ids.long().unsqueeze(-1), losses={"commit": commit.reshape(())}, stats=stats
        )

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, 1) -> (B, L, dim)."""
        return self.simvq.indices_to_codes(ids[..., 0])
