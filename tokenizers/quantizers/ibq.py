"""IBQ (Index Backpropagation Quantization): a codebook every code of which is trained at every step.

Shi et al., "Taming Scalable Visual Tokenizer for Autoregressive Image Generation" (SEED-Voken's
IBQ). A position's logits are its dot products with every code, ``z . e_k`` (no
normalisation of either side, no distance); its id is the most probable code of their
softmax in float32 (the largest logit up to the probabilities' resolution, as published). The decoder gets
the chosen code through a straight-through of the one-hot index over the softmax of the
logits, ``(onehot - sg(softmax) + softmax) @ E``: its value is the chosen code, its
gradient reaches every code and the encoder through the softmax, so no code is left
behind (the point of IBQ: codebooks of 2^18 codes in use). Here the value is taken as
the code itself and the straight-through adds ``(softmax - sg(softmax)) @ E`` (zero in
value, the same gradient), so ``lookup(ids)`` equals ``z_q`` exactly.

Losses, as published (already weighted by ``quant_weight``): ``quant`` |z_q - z|^2 (the
index-backpropagated term), ``commit`` |sg(e) - z|^2 and ``codebook`` beta |e - sg(z)|^2 of
the hard code (the "double quantization" terms; note beta weighs the codebook term, not
the commitment term, in the published code), and in training the MAGVIT entropy loss of
the logits over ``entropy_temperature``: per-position entropy (sharp choices) minus the
entropy of the batch's mean distribution (every code in use).
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

LOGITS_PER_CHUNK = 2**25  # the id search holds at most this many logits (and as many probabilities) at once


def ibq_entropy_loss(
    logits: torch.Tensor, temperature: float, sample_weight: float, batch_weight: float
) -> torch.Tensor:
    """MAGVIT's entropy loss of (N, K) logits: weighted mean per-position entropy - entropy of the mean."""
    log_probs = F.log_softmax(logits / temperature, dim=-1)  # (N, K)
    probs = log_probs.exp()
    sample_entropy = -(probs * log_probs).sum(-1).mean()
    avg = probs.mean(0)  # (K,)
    avg_entropy = -(avg * torch.log(avg + 1e-5)).sum()
    return sample_weight * sample_entropy - batch_weight * avg_entropy


@register("quantizer", "ibq")
class IBQ(Quantizer):
    """One codebook, ids (B, L, 1) by the softmax of dot products; gradient to every code through the softmax."""

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes (the model's quant_conv maps the encoder's output to it)
        dim: int = ranged(256, AT_LEAST_1)
        # Number of codes K: ids lie in [0, K) (IBQ trains every code, so large K stay in use)
        codebook_size: int = ranged(16384, AT_LEAST_1)
        beta: float = ranged(0.25, NON_NEGATIVE)  # weighs the codebook term |e - sg(z)|^2, as published
        quant_weight: float = ranged(1.0, NON_NEGATIVE)  # the three quantization terms together
        # Weight of the MAGVIT entropy loss of the logits (training only); 0: off
        entropy_weight: float = ranged(0.05, NON_NEGATIVE)
        # Temperature dividing the logits z . e_k in that entropy loss; lower is sharper
        entropy_temperature: float = ranged(0.01, POSITIVE)
        # Weight of the per-position entropy inside it (pushes each choice to be sharp)
        sample_entropy_weight: float = ranged(1.0, NON_NEGATIVE)
        # Weight of the batch-mean distribution's entropy inside it (pushes every code into use)
        batch_entropy_weight: float = ranged(1.0, NON_NEGATIVE)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        self.codebook_sizes = (cfg.codebook_size,)
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.dim)  # N(0, 1) codes, IBQ's (nn.Embedding's) init

    def _ids(self, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L): the most probable code of softmax(z . e_k), ``chunk`` positions at a time.

        The largest probability in float32, as IBQ picks it, not the largest logit: logits closer than the
        probabilities' resolution (small logits, e.g. a codebook near its init) tie there, the first code winning.
        """
        codes = self.embedding.weight.detach()  # the search needs no graph, also in training
        flat = rearrange(x.detach(), "b l d -> (b l) d")
        chunk = chunk or max(1, LOGITS_PER_CHUNK // codes.shape[0])
        ids = torch.cat([(part @ codes.t()).softmax(-1).argmax(-1) for part in flat.split(chunk)])  # (N,)
        return rearrange(ids, "(b l) -> b l", b=x.shape[0])

    def _quantize(self, latents: torch.Tensor) -> QuantizerOutput:
        """latents: (B, L, D) float32 -> z_q (B, L, D) (value: the chosen codes), ids (B, L, 1)."""
        cfg, codes = self.cfg, self.embedding.weight
        ids = self._ids(latents)  # (B, L)
        q = codes[ids]  # (B, L, D)
        entropy_on = self.training and cfg.entropy_weight > 0
        logits = latents @ codes.t() if torch.is_grad_enabled() or entropy_on else None  # (B, L, K)
        z_q = q
        if torch.is_grad_enabled():  # the index straight-through: zero in value, so skipped without gradients
            soft = logits.softmax(-1)
            z_q = q + (soft - soft.detach()) @ codes  # (B, L, D)
        losses = {
            "quant": cfg.quant_weight * F.mse_loss(z_q, latents),
            "commit": cfg.quant_weight * F.mse_loss(latents, q.detach()),
            "codebook": cfg.quant_weight * cfg.beta * F.mse_loss(q, latents.detach()),
        }
        if entropy_on:
            flat = rearrange(logits, "b l k -> (b l) k")  # (N, K)
            entropy = ibq_entropy_loss(flat, cfg.entropy_temperature, cfg.sample_entropy_weight,
                                       cfg.batch_entropy_weight)  # fmt: skip
            losses["entropy"] = cfg.entropy_weight * entropy
        stats = batch_code_stats(ids, cfg.codebook_size)
        return QuantizerOutput(z_q=z_q, ids=ids.unsqueeze(-1), losses=losses, stats=stats)

    def _quantize_ids(self, latents: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """The ids alone, ``chunk`` positions at a time (default: 2^25 logits): (B, L, 1)."""
        return self._ids(latents, chunk).unsqueeze(-1)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, 1) -> z_q: (B, L, D)."""
        return self.embedding.weight[ids[..., 0]]
