"""``vq_learned`` with the rotation trick (Fifty et al., "Restructuring Vector Quantization with the Rotation
Trick", 2024) as GigaTok trains its quantizer (``rot: true`` in every released config).

The codes, the search and the losses are ``vq_learned``'s; only the gradient that reaches
the encoder differs. Straight-through copies the gradient at the code onto the latent;
here the latent u (unit length) is carried to its code q by the reflection pair that maps u
onto q, held fixed (no gradient through u, q or the reflection): with w = (u + q) / |u + q|,
``z_q = (e - 2 (e.w) w + 2 (e.u) q) * |q| / |e|`` for e the unit latent, so the gradient
is rotated from q's direction to u's. In value z_q equals q up to rounding; in eval it is
exactly ``lookup(ids)`` (the rotation is a training device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vtok.interfaces import QuantizerOutput
from vtok.registry import register
from vtok.tokenizers.quantizers.vq_learned import LearnedVQ

EPS = 1e-6  # GigaTok's guard on the norms


def rotate_to_codes(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """x, q: (N, D) latents and their codes -> (N, D) equal to q in value, gradient rotated from q onto x."""
    e = x / x.norm(dim=-1, keepdim=True)  # the unit latent; the gradient flows through it
    u = (e / (e.norm(dim=-1, keepdim=True) + EPS)).detach()
    qn = (q / (q.norm(dim=-1, keepdim=True) + EPS)).detach()
    w = F.normalize(u + qn, dim=-1).detach()
    rotated = e - 2 * (e * w).sum(-1, keepdim=True) * w + 2 * (e * u).sum(-1, keepdim=True) * qn
    return rotated * (q.norm(dim=-1, keepdim=True) / (e.norm(dim=-1, keepdim=True) + EPS)).detach()


@register("quantizer", "vq_learned_rotation")
class RotatedLearnedVQ(LearnedVQ):
    """``vq_learned`` whose training ``z_q`` passes the gradient by the rotation trick: ids (B, L, 1)."""

    @dataclass
    class Config(LearnedVQ.Config):
        pass

    def _quantize(self, latents: torch.Tensor) -> QuantizerOutput:
        """latents: (B, L, D) float32 -> z_q (B, L, D) (rotation trick in training), ids (B, L, 1)."""
        out = super()._quantize(latents)
        if not self.training:
            return out
        x = self._prepare(latents)  # (B, L, D)
        q = self._lookup(out.ids)  # (B, L, D)
        z_q = rotate_to_codes(x.flatten(0, 1), q.flatten(0, 1)).view_as(q)
        return QuantizerOutput(z_q=z_q, ids=out.ids, losses=out.losses, stats=out.stats)
